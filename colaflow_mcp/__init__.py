"""colaflow-mcp: agents propose workspace changes, humans decide, agents learn at once."""

__version__ = "0.1.0"

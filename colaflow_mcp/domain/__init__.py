"""The rules: operations (the tool table), the change lifecycle, queries, representation.

Imports the store (and config); never delivery or an edge. Decisions go out through the
:class:`~colaflow_mcp.domain.changes.Announcer` port, which delivery implements.
"""

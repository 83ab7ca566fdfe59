"""The MCP edge: Streamable HTTP at ``/mcp`` (``endpoint``), tools generated from the
domain's operation table (``tools``), resources, subscriptions on both protocol eras, the
per-session event store, and every private coupling to the SDK (``sdk_hooks``).
"""

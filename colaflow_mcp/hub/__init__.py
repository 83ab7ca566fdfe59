"""The SignalR-compatible hub at ``/hubs/mcp``: protocol, connections, transports, server."""

from colaflow_mcp.hub.server import HubServer

__all__ = ["HubServer"]

"""Delivery: decisions go out from here to every subscriber, once each, whatever fails.

Imports the domain and the store; never an edge. Edges register their subscribers with
the :class:`~colaflow_mcp.delivery.notifier.Notifier`.
"""

"""The SignalR-compatible hub at ``/hubs/mcp``.

``protocol`` (pure framing and messages), ``connection`` (state machine), the transports
``websockets``, ``sse`` and ``longpolling``, ``hub`` (the methods), ``server`` (HubServer,
mounted by the app) and ``serving`` (uvicorn glue for a graceful shutdown).
"""

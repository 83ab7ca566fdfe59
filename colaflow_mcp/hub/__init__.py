"""The SignalR-compatible hub at ``/hubs/mcp`` (an edge).

``protocol`` (pure framing and messages), ``connection`` (the state machine, which owns
its transport attachment), ``registry`` (live connections), the transports
``websockets``, ``sse`` and ``longpolling`` (thin adapters: they import the connection and
the registry, never the server), ``methods`` (what clients invoke) and ``server``
(negotiate, admission, timers, revocation, shutdown).
"""

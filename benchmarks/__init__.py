"""Benchmarks: decision-to-event latency, connection scale, push against polling, a peer."""

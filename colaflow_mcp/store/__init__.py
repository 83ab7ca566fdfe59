"""The store: engine and sessions, tables, prebuilt statements, schema.

Imports nothing else of the package except ``config``; everything above reads and writes
through it.
"""

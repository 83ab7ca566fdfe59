"""The store: engine and sessions, tables, prebuilt statements, versioned schema migrations.

Imports nothing else of the package; everything above reads and writes through it.
"""

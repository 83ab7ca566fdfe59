"""The REST edge: JSON, camelCase, tenant-scoped routes for agents and reviewers, and
``/health``."""

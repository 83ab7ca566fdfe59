"""Storage: the database schema, its versioned migrations and (later) engine and tables."""

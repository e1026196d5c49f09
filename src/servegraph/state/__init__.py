"""State: tables (memory, SQLite, Redis, PostgreSQL) and windowed aggregations."""

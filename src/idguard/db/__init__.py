"""Persistence: SQLAlchemy models, engine/session setup, Alembic migrations (the schema)."""

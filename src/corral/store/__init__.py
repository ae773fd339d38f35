"""Durable state: the Store interface and its SQLAlchemy implementation (SQLite or PostgreSQL)."""

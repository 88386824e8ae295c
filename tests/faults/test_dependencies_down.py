"""Fault family: a dependency that no retry can fix, or that is not there at all (issue 14, defects
4 and 7): the error is non-retryable or refuses the process at start, in one line naming the setting."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

from activities.close import CloseActivities
from activities.deps import Deps
from models.failures import Failure
from models.settings import ConfigError, Settings
from workers.worker import preflight

DEAD_DB = "postgresql://postgres@127.0.0.1:1/tally"  # nothing listens on port 1


def test_closing_a_period_before_the_first_catalog_version_fails_without_retrying(settings):
    acts = CloseActivities(Deps(settings))
    with pytest.raises(ApplicationError) as err:
        acts.check_period("2020-01")
    assert err.value.non_retryable and err.value.type == Failure.PERIOD_NOT_CLOSABLE
    assert "no catalog version in force" in err.value.message


def test_a_worker_refuses_to_start_when_postgres_is_unreachable(tmp_path):
    s = Settings(home=tmp_path, database_url=DEAD_DB, stripe_api_base="http://127.0.0.1:1")
    with pytest.raises(ConfigError) as err:
        preflight(s)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("cannot reach the database postgresql+psycopg://postgres@127.0.0.1:1/tally "
                              "(DATABASE_URL):") and message.endswith("refusing to start")


def test_a_worker_on_the_emulator_fallback_refuses_to_start_naming_stripe_api_key(settings, monkeypatch):
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    s = settings.model_copy(update={"stripe_api_key": None, "stripe_api_base": "http://127.0.0.1:1"})
    with pytest.raises(ConfigError) as err:
        preflight(s)
    assert "cannot reach Stripe at http://127.0.0.1:1 (the local Stripe emulator, used because STRIPE_API_KEY " \
           "is not set" in str(err.value)


def test_a_worker_with_its_dependencies_up_passes_the_preflight(settings):
    preflight(settings)  # the test database and the emulator answer


def test_production_without_a_stripe_key_refuses_to_start(tmp_path):
    s = Settings(home=tmp_path, env="production", database_url=DEAD_DB, temporal_address="t:7233", api_secret="x")
    with pytest.raises(ConfigError, match="TALLY_ENV=production but STRIPE_API_KEY is not set"):
        s.check_production()

"""A production deployment never runs on development fallbacks."""

from __future__ import annotations

import pytest

from models.settings import ConfigError, Settings

@pytest.fixture(autouse=True)
def no_connection_settings_in_the_environment(monkeypatch):
    """These tests describe what a deployment gives; the machine's own DATABASE_URL etc. must not leak in."""
    for name in ("STRIPE_API_KEY", "DATABASE_URL", "TEMPORAL_ADDRESS", "TALLY_API_SECRET", "TALLY_ENV",
                 "TALLY_DATABASE_URL", "TALLY_TEMPORAL_ADDRESS", "TALLY_STRIPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


FULL = dict(stripe_api_key="sk_live_x", database_url="postgresql://db/tally", temporal_address="temporal:7233",
            api_secret="s3cret")


def test_production_without_stripe_key_refuses_naming_the_setting(tmp_path):
    s = Settings(env="production", home=tmp_path, **{**FULL, "stripe_api_key": None})
    with pytest.raises(ConfigError, match=r"^TALLY_ENV=production but STRIPE_API_KEY is not set"):
        s.check_production()
    with pytest.raises(ConfigError, match="STRIPE_API_KEY"):
        s.effective_stripe()  # never the emulator's key and a localhost address


def test_production_names_every_missing_setting_in_one_line(tmp_path):
    s = Settings(env="production", home=tmp_path)
    with pytest.raises(ConfigError) as info:
        s.check_production()
    assert str(info.value) == ("TALLY_ENV=production but STRIPE_API_KEY, DATABASE_URL, TEMPORAL_ADDRESS, "
                               "TALLY_API_SECRET are not set; refusing to start")


def test_production_never_reads_the_dev_stack_file_nor_writes_a_secret(tmp_path):
    (tmp_path / "stack.json").write_text('{"database_url": "postgresql://dev/stack"}')
    s = Settings(env="production", home=tmp_path, **{**FULL, "database_url": None, "api_secret": None})
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        s.effective_database_url()
    with pytest.raises(ConfigError, match="TALLY_API_SECRET"):
        s.effective_api_secret()
    assert not (tmp_path / "api-secret").exists()


def test_production_with_everything_given_starts(tmp_path):
    s = Settings(env="production", home=tmp_path, **FULL)
    s.check_production()
    assert s.effective_stripe() == ("sk_live_x", None)


def test_development_keeps_its_local_defaults(tmp_path):
    s = Settings(home=tmp_path)
    s.check_production()
    key, base = s.effective_stripe()
    assert base.startswith("http://127.0.0.1:")

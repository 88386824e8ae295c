"""How many batch recorders `tally api` starts per serving process: the host's cores divided among
its serving processes (at least one each), unless stated."""

from __future__ import annotations

import pytest

from models.settings import Settings


@pytest.fixture(autouse=True)
def six_cores(monkeypatch):
    for name in ("TALLY_API_INGEST_PROCESSES", "TALLY_API_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("models.settings.os.cpu_count", lambda: 6)


@pytest.mark.parametrize(("workers", "each"), [(1, 6), (2, 3), (4, 1), (8, 1)])
def test_unset_ingest_processes_share_the_cores_among_the_serving_processes(tmp_path, workers, each):
    assert Settings(home=tmp_path, api_workers=workers).effective_api_ingest_processes() == each


def test_unknown_cores_give_one_ingest_process(monkeypatch, tmp_path):
    monkeypatch.setattr("models.settings.os.cpu_count", lambda: None)
    assert Settings(home=tmp_path).effective_api_ingest_processes() == 1


@pytest.mark.parametrize("stated", ["0", "3"])
def test_stated_ingest_processes_are_taken_as_they_are(monkeypatch, tmp_path, stated):
    monkeypatch.setenv("TALLY_API_INGEST_PROCESSES", stated)  # 0: batches in the serving process's threads
    assert Settings(home=tmp_path, api_workers=2).effective_api_ingest_processes() == int(stated)


def test_tally_api_tells_its_workers_how_many_they_are(monkeypatch, tmp_path):
    """`tally api --workers 2`: each worker process (spawned by uvicorn, reading the environment) takes
    half of the cores, as if TALLY_API_WORKERS=2 had been set."""
    import uvicorn

    from api import server
    from models.settings import get_settings

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: ran.update(kwargs))
    monkeypatch.setenv("TALLY_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "postgresql://localhost/tally")
    monkeypatch.setenv("TALLY_API_SECRET", "test")
    get_settings.cache_clear()
    try:
        server.serve(workers=2)
        assert ran["workers"] == 2
        assert get_settings().effective_api_ingest_processes() == 3  # what a worker's app_factory reads
        assert Settings().effective_api_ingest_processes() == 3  # and a spawned worker's own settings
    finally:
        get_settings.cache_clear()

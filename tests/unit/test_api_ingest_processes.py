"""How many batch recorders `tally api` starts per serving process: one per core unless stated."""

from __future__ import annotations

import pytest

from models.settings import Settings


def test_unset_ingest_processes_are_one_per_core(monkeypatch, tmp_path):
    monkeypatch.delenv("TALLY_API_INGEST_PROCESSES", raising=False)
    monkeypatch.setattr("models.settings.os.cpu_count", lambda: 6)
    assert Settings(home=tmp_path).effective_api_ingest_processes() == 6
    monkeypatch.setattr("models.settings.os.cpu_count", lambda: None)  # unknown: one
    assert Settings(home=tmp_path).effective_api_ingest_processes() == 1


@pytest.mark.parametrize("stated", ["0", "3"])
def test_stated_ingest_processes_are_taken_as_they_are(monkeypatch, tmp_path, stated):
    monkeypatch.setenv("TALLY_API_INGEST_PROCESSES", stated)  # 0: batches in the serving process's threads
    monkeypatch.setattr("models.settings.os.cpu_count", lambda: 6)
    assert Settings(home=tmp_path).effective_api_ingest_processes() == int(stated)

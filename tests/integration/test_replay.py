"""Determinism guard: every recorded workflow history (histories/*.json, see record_histories.py)
replays through today's workflow code. A change that would break workflows already running in
production (a new activity call before an old one, a renamed child, a different timer) fails here,
before it is deployed."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

import capabilities as registry

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_every_registered_workflow_type_has_a_recorded_history():
    import json

    recorded = set()
    for path in HISTORIES:
        first = json.loads(path.read_text())["events"][0]
        recorded.add(first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"])
    registered = {wf.__temporal_workflow_definition.name for wf in registry.workflows()}
    assert registered <= recorded, f"no recorded history for {sorted(registered - recorded)}"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays_on_todays_code(path: Path):
    replayer = Replayer(workflows=registry.workflows(), data_converter=pydantic_data_converter)
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer.replay_workflow(history)  # raises on any non-determinism

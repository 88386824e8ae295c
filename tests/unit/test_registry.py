"""The capability registry is the one place the worker, the namespace set-up and the fixtures read."""

from __future__ import annotations

import re
from pathlib import Path

import capabilities as registry

ROOT = Path(__file__).resolve().parents[2]


def test_deploy_search_attributes_file_matches_the_registry():
    committed = (ROOT / "deploy/temporal/search-attributes.txt").read_text()
    assert committed == registry.search_attributes_file(), (
        "regenerate: python -m capabilities search-attributes > deploy/temporal/search-attributes.txt")


def test_each_search_attribute_is_named_in_one_python_module_only():
    names = list(registry.search_attributes())
    places: dict[str, list[str]] = {n: [] for n in names}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".venv/", "tests/", "build/")):
            continue
        text = path.read_text()
        for n in names:
            if re.search(rf"[\"']{n}[\"']", text):
                places[n].append(rel)
    assert all(p == ["workflows/search_attributes.py"] for p in places.values()), places


def test_every_activity_a_workflow_calls_is_registered():
    import inspect

    from activities.deps import Deps
    from models.settings import Settings

    registered = {a.__temporal_activity_definition.name for a in registry.activities(Deps(Settings()))}
    called = set()
    for wf in registry.workflows():
        source = inspect.getsource(inspect.getmodule(wf))
        called |= set(re.findall(r"execute_activity_method\(\s*\w+\.(\w+)", source))
    assert called and called <= registered


def test_capabilities_have_unique_names_and_schedules():
    from models.settings import Settings

    assert len({c.name for c in registry.CAPABILITIES}) == len(registry.CAPABILITIES)
    ids = [d.schedule_id for d in registry.schedules(Settings())]
    assert len(ids) == len(set(ids)) and "monthly-close" in ids

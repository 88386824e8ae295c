"""The embedded Postgres' shared_buffers: a quarter of the usable memory, within 128 MB and 1 GiB."""

from __future__ import annotations

import pytest

from workers.devstack import postgres, server_settings

GIB = 1 << 30


@pytest.mark.parametrize(("memory", "buffers"), [
    (256 << 20, "128MB"),      # never below initdb's default
    (2 * GIB, "512MB"),        # a quarter
    (3 * GIB + 100, "768MB"),  # a quarter, in whole MB
    (4 * GIB, "1024MB"),
    (24 * GIB, "1024MB"),      # at most 1 GiB beside Temporal and the workers
])
def test_shared_buffers_is_a_quarter_of_the_memory_within_128mb_and_1gib(memory, buffers):
    assert server_settings(memory) == {"shared_buffers": buffers}


def test_usable_memory_is_the_cgroup_limit_when_lower_than_the_host(monkeypatch, tmp_path):
    limit = tmp_path / "memory.max"
    host = postgres.psutil.virtual_memory().total
    monkeypatch.setattr(postgres, "CGROUP_LIMIT_FILES", (str(limit),))
    limit.write_text(f"{2 * GIB}\n")
    assert postgres.usable_memory() == min(host, 2 * GIB)
    limit.write_text("max\n")  # cgroup v2 without a limit
    assert postgres.usable_memory() == host
    limit.unlink()  # no cgroup file at all
    assert postgres.usable_memory() == host

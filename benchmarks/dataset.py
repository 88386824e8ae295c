"""Synthetic month of executions for the benchmarks: accounts and a JSON Lines file.

Accounts come from ``workers.demo.demo_accounts`` (plan mix free/pro/team/payg, half of pro/team opted
into overage). Volumes follow ``workers.demo._raw_volume`` (free accounts keep their 10-150 range, so
about a quarter hit the 100 cap; the paid plans share the rest of the budget, heavy-tailed). Unlike the
demo, events are written in time order across all accounts, as a platform export would be, and event
ids are random UUIDs by default (``ordered``: time-ordered, UUIDv7-like), the realistic and the
friendly case for the primary key.

The same rows are written a second time in Postgres COPY text format, for the plain-COPY floor.
Deterministic for a given (accounts, executions, seed).
"""

from __future__ import annotations

import bisect
import os
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from billing.periods import Period
from workers.demo import MODEL_MIX, _raw_volume, demo_accounts

COPY_COLUMNS = (
    "event_id", "account_id", "agent_id", "skill_id", "model", "input_tokens", "output_tokens",
    "byok", "sandbox", "cost_usd", "occurred_at",
)


@dataclass
class Dataset:
    accounts: list[dict]
    jsonl: Path
    copy_file: Path | None
    executions: int
    seconds: float


def bench_accounts(n: int, prefix: str = "acct") -> list[dict]:
    """demo_accounts' plans and seats, with ids that sort like the numbers (``acct-000042``)."""
    out = []
    for i, a in enumerate(demo_accounts(n)):
        out.append({**a, "id": f"{prefix}-{i:06d}", "email": f"billing+{i:06d}@example.com"})
    return out


def account_weights(accounts: list[dict], total: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    raw = [_raw_volume(rng, a["plan"], a["seats"]) for a in accounts]
    avg = total / max(len(accounts), 1)
    free = sum(r for a, r in zip(accounts, raw) if a["plan"] == "free")
    paid = sum(r for a, r in zip(accounts, raw) if a["plan"] != "free")
    # Free accounts keep their absolute volume (unless that alone is most of the budget).
    free_scale = min(1.0, 0.5 * total / free) if free else 1.0
    paid_scale = max(total - free * free_scale, 0) / paid if paid else 0.0
    if avg < 50:  # tiny runs: plain proportional scaling
        free_scale = paid_scale = total / sum(raw)
    return [r * (free_scale if a["plan"] == "free" else paid_scale) for a, r in zip(accounts, raw)]


def write_dataset(directory: Path, accounts: list[dict], period: Period, total: int, *,
                  seed: int = 11, event_ids: str = "random", with_copy_file: bool = True,
                  name: str = "executions") -> Dataset:
    """Write ``total`` executions of ``period`` for ``accounts``: JSONL (+ COPY text) files."""
    started = time.perf_counter()
    rng = random.Random(seed)
    weights = account_weights(accounts, total, seed)
    cum = []
    acc = 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    models = list(MODEL_MIX)
    mcum = []
    macc = 0
    for w in MODEL_MIX.values():
        macc += w
        mcum.append(macc)
    byok_share = [0.3 if a["plan"] == "team" else 0.05 for a in accounts]
    ids = [a["id"] for a in accounts]
    span_us = int((period.end - period.start).total_seconds() * 1_000_000)
    start = period.start
    # Time-ordered occurrences: sorted uniform times via cumulative exponential gaps.
    mean_gap = span_us / (total + 1)
    epoch_ms = int(start.timestamp() * 1000)
    jsonl = directory / f"{name}.jsonl"
    copy_path = directory / f"{name}.copy" if with_copy_file else None
    dumps = orjson.dumps
    getrandbits = rng.getrandbits
    rand = rng.random
    expo = rng.expovariate
    # Pools drawn once: per-event draws from them cost a getrandbits instead of a distribution.
    tin_pool = [int(rng.lognormvariate(7.5, 0.6)) for _ in range(4096)]
    tout_pool = [int(rng.lognormvariate(6.0, 0.7)) for _ in range(4096)]
    agents = [f"agent-{1 + i % 6}" for i in range(4096)]
    skills = [f"skill-{1 + i % 20}" for i in range(4096)]
    rng.shuffle(agents)
    rng.shuffle(skills)
    ordered = event_ids == "ordered"
    n_ids = len(ids)
    t_us = 0.0
    with open(jsonl, "wb") as jf, (open(copy_path, "wb") if copy_path else open(os.devnull, "wb")) as cf:
        jbuf: list[bytes] = []
        cbuf: list[bytes] = []
        for k in range(total):
            t_us += expo(1.0) * mean_gap
            if t_us >= span_us:
                t_us = span_us - 1
            at = start + timedelta(microseconds=int(t_us))
            ai = bisect.bisect_right(cum, rand() * acc)
            if ai >= n_ids:
                ai = n_ids - 1
            model = models[bisect.bisect_right(mcum, rand() * macc)]
            if ordered:  # UUIDv7-like: 48-bit milliseconds first
                h = "%012x7%03x%016x" % (int(t_us // 1000) + epoch_ms, k & 0xFFF, getrandbits(64) | (1 << 63))
            else:
                h = "%032x" % getrandbits(128)
                h = h[:12] + "4" + h[13:16] + "89ab"[int(h[16], 16) & 3] + h[17:]
            ev = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
            r = getrandbits(48)
            agent = agents[r & 4095]
            skill = skills[(r >> 12) & 4095]
            tin = tin_pool[(r >> 24) & 4095]
            tout = tout_pool[(r >> 36) & 4095]
            byok = rand() < byok_share[ai]
            sandbox = rand() < 0.02
            ts = at.isoformat()
            acct = ids[ai]
            jbuf.append(dumps({
                "event_id": ev, "account_id": acct, "agent_id": agent, "skill_id": skill,
                "model": model, "input_tokens": tin, "output_tokens": tout, "byok": byok,
                "sandbox": sandbox, "occurred_at": ts,
            }))
            if copy_path:
                cbuf.append(f"{ev}\t{acct}\t{agent}\t{skill}\t{model}\t{tin}\t{tout}\t"
                            f"{'t' if byok else 'f'}\t{'t' if sandbox else 'f'}\t\\N\t{ts}".encode())
            if len(jbuf) >= 50_000:
                jf.write(b"\n".join(jbuf) + b"\n")
                jbuf.clear()
                if cbuf:
                    cf.write(b"\n".join(cbuf) + b"\n")
                    cbuf.clear()
        if jbuf:
            jf.write(b"\n".join(jbuf) + b"\n")
        if cbuf:
            cf.write(b"\n".join(cbuf) + b"\n")
    return Dataset(accounts=accounts, jsonl=jsonl, copy_file=copy_path, executions=total,
                   seconds=time.perf_counter() - started)


def billing_start(period: Period) -> datetime:
    return (period.start - timedelta(days=31)).astimezone(timezone.utc)

"""The state file: the resources' persisted stores, completed idempotency records and the clock offset as
one JSON document (faults and the request log are not kept). Written atomically (temp file + rename)."""

from __future__ import annotations

import json
import os
import tempfile
import time

from .state import EmulatorState

STATE_FILE_VERSION = 1


def to_json(st: EmulatorState) -> str:
    with st.lock:
        data = {"version": STATE_FILE_VERSION, "saved_at": time.time(), "clock_offset": st.clock_offset}
        for store in st.stores:
            if store.derive is None:
                value = getattr(st, store.name)
                data[store.name] = store.dump(value) if store.dump else value
        data["idempotency"] = [[a, k, r] for (a, k), r in st.idempotency.items() if not r["in_flight"]]
        return json.dumps(data, separators=(",", ":"))


def load_json(st: EmulatorState, text: str) -> None:
    """Replace the state's objects, keys and clock with the document's (stores it lacks start empty)."""
    data = json.loads(text)
    if data.get("version") != STATE_FILE_VERSION:
        raise ValueError(f"unsupported state file version {data.get('version')!r}")
    with st.lock:
        st.clear_objects()
        st.clock_offset = float(data.get("clock_offset", 0.0))
        for store in st.stores:
            if store.derive is None and store.name in data:
                value = data[store.name]
                setattr(st, store.name, store.load(value) if store.load else value)
        for store in st.stores:
            if store.derive is not None:
                setattr(st, store.name, store.derive(st))
        st.idempotency = {(a, k): r for a, k, r in data.get("idempotency", [])}
        st.dirty = False


def save(st: EmulatorState, path: str) -> None:
    text = to_json(st)
    with st.lock:
        st.dirty = False
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".stripe-emulator-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with st.lock:
            st.dirty = True
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(st: EmulatorState, path: str) -> bool:
    """Load ``path`` if it exists (False when it does not)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return False
    if text.strip():
        load_json(st, text)
    return True

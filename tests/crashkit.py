"""Really killing processes: run a script in a child, SIGKILL it at a random moment, digest what it left.

Shared by the crash tests (tests/test_crash.py: a few kills each, fast) and benchmarks/robustness.py (many
kills, the figures). Kill moments are drawn from the span of an uninterrupted run measured from the child's
"GO" line (printed once its imports are done), so they land inside the work, not in Python's start-up.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent

INGEST = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    import fake_survey
    from pairspec.ingest import ingest
    adapter = getattr(fake_survey, {adapter!r})()
    adapter.delay = {delay!r}
    print("GO", flush=True)
    r = ingest(adapter, {src!r}, {store!r}, workers={workers}, batch_size={batch}, chunk={chunk}, progress=False)
    print("DONE", r.n_stars, r.n_visits, flush=True)
""")

PREDICT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    import torch
    torch.set_num_threads(1)
    from pairspec.predict import predict
    print("GO", flush=True)
    r = predict({ckpt!r}, {store!r}, {out!r}, batch_size={batch}, progress=False, device="cpu")
    print("DONE", r.n_visits, r.n_stars, flush=True)
""")


def ingest_script(src, store, workers=1, batch=16, chunk=16, delay=0.0, adapter="SlowFakeAdapter") -> str:
    return INGEST.format(here=str(HERE), adapter=adapter, delay=delay, src=str(src), store=str(store),
                         workers=workers, batch=batch, chunk=chunk)


def predict_script(ckpt, store, out, batch=8) -> str:
    return PREDICT.format(here=str(HERE), ckpt=str(ckpt), store=str(store), out=str(out), batch=batch)


def _start(script: str):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    line = proc.stdout.readline()
    if not line.startswith("GO"):
        proc.wait(60)
        raise RuntimeError(f"child did not start: {line}{proc.stderr.read()}")
    return proc


def timed_run(script: str, timeout: float = 300) -> float:
    """Seconds from the child's GO to its exit (it must succeed)."""
    proc = _start(script)
    t0 = time.perf_counter()
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0 or "DONE" not in out:
        raise RuntimeError(f"uninterrupted run failed ({proc.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - t0


def kill_at(script: str, delay: float, timeout: float = 300) -> bool:
    """Start the child, SIGKILL it `delay` seconds after its GO; True if it was killed (False: it had
    finished, successfully, before)."""
    proc = _start(script)
    try:
        proc.wait(delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
        return True
    _out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"child failed on its own ({proc.returncode}):\n{err[-3000:]}")
    return False


def store_digest(path: str) -> dict:
    """sha256 of every array of a store (committed rows: what a reader sees) and of its attributes, less
    the creation time and the last run's own counts (which differ between one run and a resumed one)."""
    import json

    import zarr

    g = zarr.open_group(str(path), mode="r")
    attrs = dict(g.attrs)
    attrs["provenance"] = {k: v for k, v in attrs.get("provenance", {}).items() if k != "created"}
    attrs["last_ingest"] = [dict(s) if isinstance(s, dict) else s for s in attrs.get("last_ingest", {}).get("skipped", [])]
    out = {"attrs": hashlib.sha256(json.dumps(attrs, sort_keys=True, default=str).encode()).hexdigest()}
    n = {"stars": attrs["n_stars"], "visits": attrs["n_visits"]}
    for name, a in g.arrays():
        out[name] = _digest(a[:])
    for sub in ("stars", "visits"):
        for name, a in g[sub].arrays():
            out[f"{sub}/{name}"] = _digest(a[: n[sub]])
    return out


def _digest(values) -> str:
    v = np.asarray(values)
    data = "\x00".join(map(str, v.tolist())).encode() if v.dtype.kind in "OTU" else np.ascontiguousarray(v).tobytes()
    return hashlib.sha256(str(v.shape).encode() + data).hexdigest()

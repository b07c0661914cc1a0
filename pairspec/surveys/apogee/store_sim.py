"""The synthetic APOGEE survey written straight into a pair store, without the FITS round trip.

`simulate_apogee_store` draws the same stars, visits and allStar rows as `simulate_apogee` for the same
seed, renders each apStar file's rows in memory (simulate_apogee_files.render_star) and hands them to
the APOGEE adapter's `record_from_arrays`, the function `read_apstar` applies to the arrays it reads from
a file. Row selection follows the adapter's `discover`: a row with a problem (EXTRATARG duplicate, ...)
is skipped, and of a star's remaining rows the one with the highest SNR is kept. So the store holds the
records `simulate_apogee` + `ingest` would give (tests/test_simulate_store.py compares them array by
array); what differs:

- star order: ingest sorts by the kept file's path; here stars come in the order of their first
  file's path (they differ only for the ~3 % of stars with a second allStar row, when that row wins);
- no allStar file, no apStar tree, no skipped-files report (rows skipped are counted in the summary);
- writing FITS is ~3/4 of the simulator's CPU time, and reading it back is the ingest: 300 stars took
  18 s here against 33 s + 6 s for simulate + ingest (2 processes, 2 cores), and 20k stars 137 s on 12
  processes of a 16-core machine: the way to make surveys of 10^4-10^5 stars (GPU runs) in minutes.

truth.fits is written beside the store (needs astropy); pass truth=None to skip it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from pairspec.surveys.apogee.files import header_values, render_star
from pairspec.surveys.apogee.simulate import allstar_table, plan_survey

_STATE: dict = {}  # per worker process: stars, seed, adapter


@dataclass
class StoreSimulationSummary:
    n_stars: int  # stars written to the store
    n_visits: int
    n_files: int  # apStar files (allStar rows) rendered
    store: str
    truth: str | None
    skipped: list = field(default_factory=list)  # (unit_id, problem)


def _init(stars: dict, files: list[dict], seed: int, adapter_options: dict) -> None:
    from pairspec.surveys.apogee.adapter import ApogeeDR17Adapter

    _STATE.update(stars=stars, files=files, seed=seed, adapter=ApogeeDR17Adapter(**adapter_options))


def render_record(job: tuple[list[int], list[dict]]):
    """One star: render its files, build their allStar rows, keep one row as `discover` would and
    build its StarRecord. Returns (record or None, [(unit_id, problem), ...] of the rows left out)."""
    from pairspec.surveys.base import AdapterError

    file_ids, tasks = job
    stars, files, seed, adapter = _STATE["stars"], _STATE["files"], _STATE["seed"], _STATE["adapter"]
    rendered = [render_star(t) for t in tasks]
    cols = allstar_table(stars, [files[k] for k in file_ids], [r[4] for r in rendered], seed, row_ids=file_ids)
    skipped, candidates = [], []
    present = [i for i, lab in enumerate(adapter.schema.labels) if lab.column.upper() in cols]
    for j, k in enumerate(file_ids):
        row = {name: values[j] for name, values in cols.items()}
        problem = adapter._row_problem(row, present)
        if problem:
            skipped.append((files[k]["path"], problem))
        else:
            snr = float(row["SNR"])
            candidates.append(((snr if math.isfinite(snr) else -math.inf, -j), j, row))
    if not candidates:
        return None, skipped
    _, best, row = max(candidates, key=lambda c: c[0])
    for _, j, _ in candidates:
        if j != best:
            skipped.append((files[file_ids[j]]["path"], f"duplicate: APOGEE_ID {row['APOGEE_ID']} again; kept "
                                                         f"{files[file_ids[best]]['path']}"))
    cards, rows = rendered[best][0], rendered[best][1]
    path = files[file_ids[best]]["path"]
    try:
        record = adapter.record_from_arrays(path, header_values(cards), rows["flux"], rows["err"], rows["mask"],
                                            row, source=path)
    except AdapterError as err:
        return None, skipped + [(path, err.problem)]
    return record, skipped


def _render(jobs, workers: int, initargs):
    """render_record over jobs in order; with workers > 1 a process pool with at most 4 x workers jobs
    in flight (results are big: a bounded window keeps memory flat however many stars)."""
    if workers <= 1:
        yield from map(render_record, jobs)
        return
    from concurrent.futures import ProcessPoolExecutor

    from pairspec.ordered import ordered_map

    with ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=initargs) as pool:
        yield from ordered_map(pool, render_record, jobs, 4 * workers)


def simulate_apogee_store(store_path, n_stars: int = 500, seed: int = 1, workers: int = 1, progress: bool = True,
                          truth: str | None = "auto", chunk: int = 256, batch_size: int = 1024,
                          adapter_options: dict | None = None) -> StoreSimulationSummary:
    """Simulate `n_stars` stars (as simulate_apogee with the same seed) straight into a new pair store.

    truth: path of truth.fits ("auto": beside the store, `<store>.truth.fits`; None: not written).
    adapter_options: ApogeeDR17Adapter options (labels, bad_bits, strict, ...), as for ingest.
    The store must not exist yet (ValueError otherwise, as create_store says)."""
    from pairspec.progress import Progress
    from pairspec.store import create_store
    from pairspec.surveys.apogee.adapter import ApogeeDR17Adapter
    from pairspec.surveys.apogee.simulate import write_truth

    adapter_options = dict(adapter_options or {})
    adapter = ApogeeDR17Adapter(**adapter_options)
    stars, files, tasks = plan_survey(n_stars, seed)
    prov = {"adapter": f"{type(adapter).__module__}.{type(adapter).__qualname__}", "adapter_options": adapter_options,
            "source": f"pairspec.simulate_store seed={seed} n_stars={n_stars}"}
    store = create_store(str(store_path), adapter.name, adapter.release, adapter.grid, adapter.schema, prov, chunk)

    by_star: dict[int, list[int]] = {}
    for k, f in enumerate(files):
        by_star.setdefault(f["star"], []).append(k)
    order = sorted(by_star.values(), key=lambda ks: files[ks[0]]["path"])
    jobs = ([ks, [tasks[k] for k in ks]] for ks in order)
    initargs = (stars, [{k: f[k] for k in ("star", "path", "file", "field", "telescope")} for f in files], seed,
                adapter_options)
    _init(*initargs)
    summary = StoreSimulationSummary(0, 0, len(files), str(store_path), None)
    batch = max(1, math.ceil(batch_size / store.chunk)) * store.chunk
    pending: list = []
    with Progress(enabled=progress) as bar:
        task = bar.add_task("simulating stars into the store", total=len(order))
        for record, skipped in _render(jobs, int(workers), initargs):
            summary.skipped.extend(skipped)
            if record is not None:
                pending.append(record)
                if (store.n_stars + len(pending)) % batch == 0:
                    store.append(pending)
                    pending = []
            bar.advance(task)
        if pending:
            store.append(pending)
    summary.n_stars, summary.n_visits = store.n_stars, store.n_visits
    if truth is not None:
        path = Path(f"{store_path}.truth.fits" if truth == "auto" else truth)
        summary.truth = str(write_truth(path, stars))
    return summary

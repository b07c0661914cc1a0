"""The ingest report (what a run added and skipped), its closing summary, and the progress bar."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field

from pairspec.surveys.base import Skip


@dataclass
class IngestReport:
    store: str
    n_stars: int = 0  # stars added by this run
    n_visits: int = 0  # visits added by this run
    n_pixels: int = 0  # pixels per spectrum (grid.npix)
    masked_fraction: float = float("nan")  # ivar == 0 fraction of the added visits, usable blocks only
    skipped: list[Skip] = field(default_factory=list)
    already_present: int = 0  # units found in the store and not read again
    elapsed_s: float = 0.0
    store_n_stars: int = 0  # totals in the store after this run
    store_n_visits: int = 0
    engine: str = ""  # "one writer", "parallel writers", "dask"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["masked_fraction"] = None if math.isnan(self.masked_fraction) else self.masked_fraction
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def save_report(store, store_path: str, report: IngestReport) -> None:
    """Into the store's `last_ingest` attribute and, for a local store, `<store>.ingest-report.json`
    (written to a temporary file and renamed: a kill leaves the previous report or this one)."""
    d = report.to_dict()
    d.pop("elapsed_s")  # keep the store's attributes identical between equivalent runs
    d.pop("engine")
    store.set_attr("last_ingest", d)
    if "://" not in store_path or store_path.startswith("file://"):
        local = store_path.removeprefix("file://").rstrip("/") + ".ingest-report.json"
        tmp = f"{local}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(report.to_json())
        os.replace(tmp, local)


def reason_of(problem: str) -> str:
    """The reason a skip gives, for grouping: its leading phrase with every word that holds a digit (ids,
    HDU and row numbers, file names) as N, so a thousand "no row for star 123" are one reason."""
    return re.sub(r"[^\s=:,()]*\d[^\s=:,()]*", "N", problem.split(":")[0]).strip()


def format_report(report: IngestReport) -> str:
    """The closing summary the CLI prints."""
    frac = "n/a" if math.isnan(report.masked_fraction) else f"{report.masked_fraction:.1%}"
    stored = report.n_stars > 0 or report.store_n_stars > 0  # an ingest that read nothing leaves no store
    lines = [
        f"ingested {report.n_stars} stars, {report.n_visits} visits ({report.n_pixels} px) in {report.elapsed_s:.1f} s"
        + (f" ({report.engine})" if report.engine else ""),
    ]
    if stored:
        lines += [f"store {report.store}: {report.store_n_stars} stars, {report.store_n_visits} visits; "
                  f"{report.already_present} units were already present",
                  f"masked pixels (ivar = 0, usable blocks) in the new visits: {frac}"]
    lines.append(f"skipped {len(report.skipped)} units" + (", by reason:" if report.skipped else ""))
    more = (f"in {report.store}.ingest-report.json" if stored and "://" not in report.store
            else "in the store's last_ingest attribute" if stored else "not listed (no store was written)")
    # Group by the reason's leading phrase so a thousand expected duplicates don't hide one broken file.
    groups: dict[str, list] = {}
    for s in report.skipped:
        groups.setdefault(reason_of(s.problem), []).append(s)
    for reason, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  {len(items):6d}  {reason}")
        for s in items[:3]:
            lines.append(f"            {s.path}: {s.problem}")
        if len(items) > 3:
            lines.append(f"            ... {len(items) - 3} more, {more}")
    return "\n".join(lines)


class progress_bar:
    """A rich progress bar over units with star/visit counts, or a no-op callable."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda stars, visits, advance=1: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        from pairspec.progress import Progress

        self.bar = Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                            TimeRemainingColumn(), name="ingest")
        self.bar.start()
        task = self.bar.add_task("", total=self.total)

        def update(stars, visits, advance=1):
            self.bar.update(task, advance=advance, description=f"{stars} stars, {visits} visits")

        return update

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False

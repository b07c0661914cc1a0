"""A tiny deterministic survey adapter for store/ingest tests (64 pixels, no files to read).

`source` is a directory holding `units.txt`: one star id per line; a line "BAD <id>" makes
read() raise AdapterError, "BOOM <id>" a RuntimeError, "DUP <id>" a second unit of an existing star,
"EXIT <id>" kill the reading process. WideFakeAdapter: the same on 200 pixels (sharded spectra).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from pairspec.grid import LogLinearGrid
from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA
from pairspec.surveys.base import (
    AdapterError,
    Discovery,
    Skip,
    StarRecord,
    WorkUnit,
    recompute_snr,
)

FAKE_GRID = LogLinearGrid(crval1=4.179, cdelt1=6e-6 * 128, npix=64, blocks=((4, 30), (34, 60)))


def write_units(source: Path, lines: list[str]) -> Path:
    source.mkdir(parents=True, exist_ok=True)
    (source / "units.txt").write_text("\n".join(lines) + "\n")
    return source


def make_record(star_id: str, source: str, npix: int = 64) -> StarRecord:
    """Deterministic record: values depend only on star_id (crc32 seed)."""
    rng = np.random.default_rng(zlib.crc32(star_id.encode()))
    nv = int(rng.integers(1, 5))
    flux = (1.0 + 0.1 * rng.standard_normal((nv, npix))).astype(np.float32)
    ivar = np.full((nv, npix), 400.0, dtype=np.float32)
    mask = np.zeros((nv, npix), dtype=np.int64)
    bad = rng.random((nv, npix)) < 0.05
    ivar[bad], mask[bad] = 0.0, 1 << 12
    labels = np.array([4000 + 1000 * rng.random(), 2 + rng.random(), -0.5 + rng.random(), 0.1], np.float32)
    if rng.random() < 0.2:
        labels[3] = np.nan
    return StarRecord(
        star_id=star_id, source=source, labels=labels, label_err=np.full(4, 0.01, np.float32),
        label_flags=np.zeros(4, np.int64), star_flags=int(rng.integers(0, 8)),
        coadd_flux=flux.mean(0), coadd_ivar=ivar.sum(0), coadd_pixmask=np.bitwise_and.reduce(mask, axis=0),
        visit_flux=flux, visit_ivar=ivar, visit_pixmask=mask, visit_snr=recompute_snr(flux, ivar),
        visit_snr_survey=np.full(nv, np.nan, np.float32), visit_mjd=58000.0 + np.arange(nv),
        visit_id=[f"apVisit-{star_id}-{k}.fits" for k in range(nv)],
        visit_fiber=np.arange(nv, dtype=np.int32), snr=float(rng.uniform(10, 200)),
        meta={"ra": float(rng.uniform(0, 360)), "dec": float(rng.uniform(-90, 90)), "telescope": "apo25m",
              "field": "F1", "member": "", "h": np.float32(11.5)},
    )


class FakeAdapter:
    name = "fake"
    release = "t1"
    schema = APOGEE_CORE_SCHEMA
    grid = FAKE_GRID

    def discover(self, source: str) -> Discovery:
        units, skipped = [], []
        for line in (Path(source) / "units.txt").read_text().splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "SKIPROW":
                skipped.append(Skip(str(source), "row without a file", parts[1]))
                continue
            star_id = parts[-1]
            kind = parts[0] if len(parts) > 1 else "OK"
            units.append(WorkUnit(f"u/{line.replace(' ', '_')}", str(source), star_id, {"kind": kind}))
        # discover order is deliberately not sorted: ingest must sort
        return Discovery(units[::-1], skipped)

    def read(self, unit: WorkUnit) -> StarRecord:
        kind = unit.row["kind"]
        if kind == "BAD":
            raise AdapterError(unit.unit_id, "corrupt file")
        if kind == "BOOM":
            raise RuntimeError("unexpected failure")
        if kind == "EXIT":  # the reading process dies (only ever read in a worker process)
            import os

            os._exit(3)
        return make_record(unit.star_id, unit.unit_id, self.grid.npix)


# wide enough (> 64 px) that store spectra are sharded: exercises the whole-shard encoder
WIDE_GRID = LogLinearGrid(crval1=4.179, cdelt1=6e-6 * 40, npix=200, blocks=((4, 90), (110, 190)))


class WideFakeAdapter(FakeAdapter):
    grid = WIDE_GRID


# the grid of tests/tinymodel.py's checkpoints: a store of this adapter can be predicted by them
MODEL_GRID = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=300, blocks=((10, 140), (160, 290)))


class ModelFakeAdapter(FakeAdapter):
    grid = MODEL_GRID


class SlowFakeAdapter(WideFakeAdapter):
    """Reads take `delay` seconds each, so that two ingests in two processes really overlap and a kill
    lands inside the work (sharded spectra: a kill can cut a shard merge)."""

    delay = 0.05

    def read(self, unit: WorkUnit) -> StarRecord:
        import time

        time.sleep(self.delay)
        return super().read(unit)

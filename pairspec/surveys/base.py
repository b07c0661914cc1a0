"""The survey-adapter contract: files in, StarRecords out. Adapters never touch Zarr or torch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pairspec.grid import LogLinearGrid
from pairspec.schema import LabelSchema


class AdapterError(Exception):
    """A unit of work that cannot be read. `path` names the file, `problem` says what is wrong."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class WorkUnit:
    """One unit of ingest work: usually one file plus the summary-table row that describes it."""

    unit_id: str  # stable, unique per unit (e.g. "apo25m/000+02/apStar-dr17-2M...fits")
    path: str  # the spectrum file
    star_id: str
    row: dict[str, Any] = field(default_factory=dict)  # summary-table values (plain Python / numpy scalars)


@dataclass(frozen=True)
class Skip:
    """A unit (or summary row) left out, and why; written to the ingest's skipped report."""

    path: str
    problem: str
    star_id: str = ""


@dataclass
class Discovery:
    units: list[WorkUnit]
    skipped: list[Skip]


@dataclass
class StarRecord:
    """Everything the pair store keeps about one star. Arrays are on the adapter's grid.

    Bad pixels have ivar == 0 (flux finite, survey bits kept in pixmask). NaN never appears in
    flux or ivar. Missing labels are NaN.
    """

    star_id: str
    source: str  # WorkUnit.unit_id it came from
    labels: np.ndarray  # float32 (n_label,)
    label_err: np.ndarray  # float32 (n_label,)
    label_flags: np.ndarray  # int64 (n_label,)
    star_flags: int  # survey star-level bitmask (APOGEE: ASPCAPFLAG)
    coadd_flux: np.ndarray  # float32 (npix,); zeros + ivar 0 if the survey has none
    coadd_ivar: np.ndarray  # float32 (npix,)
    coadd_pixmask: np.ndarray  # int64 (npix,)
    visit_flux: np.ndarray  # float32 (n_visit, npix)
    visit_ivar: np.ndarray  # float32 (n_visit, npix)
    visit_pixmask: np.ndarray  # int64 (n_visit, npix)
    visit_snr: np.ndarray  # float32 (n_visit,) median(flux*sqrt(ivar)) over good pixels, recomputed
    visit_snr_survey: np.ndarray  # float32 (n_visit,) as published (APOGEE: SNRVISn), NaN if absent
    visit_mjd: np.ndarray  # float64 (n_visit,)
    visit_id: list[str]  # per visit (APOGEE: SFILEn)
    visit_fiber: np.ndarray  # int32 (n_visit,), -1 if unknown
    snr: float  # star-level S/N as published (APOGEE: allStar SNR)
    meta: dict[str, Any] = field(default_factory=dict)  # ra, dec, telescope, field, cluster ...

    @property
    def n_visits(self) -> int:
        return int(self.visit_flux.shape[0])


@runtime_checkable
class SurveyAdapter(Protocol):
    name: str
    release: str
    schema: LabelSchema
    grid: LogLinearGrid

    def discover(self, source: str) -> Discovery: ...

    def read(self, unit: WorkUnit) -> StarRecord: ...


@runtime_checkable
class Simulator(Protocol):
    """A survey's simulator, registered under the entry-point group "pairspec.simulators".

    simulate() writes a synthetic survey under `out` in the survey's REAL published file format (so the
    survey's own adapter reads it, through `pairspec ingest NAME out STORE`), plus `out/truth.fits`: HDU1
    a table with `star_id` (the id the adapter gives the star in the store) and one column per label of
    the adapter's schema (true values; `cluster` optional), HDU "SPECTRA" the noiseless normalised
    spectrum of each star on the adapter's grid in HDU1's row order. With store_only=True it writes the
    pair store `out/<name>.zarr` directly instead of the files (optional: raise ValueError if not
    supported). Returns {"text": a one-line summary, "truth": path, "source": path (or "store": path)}.
    The same seed gives the same survey whatever `workers` is.
    """

    name: str
    description: str

    def simulate(self, out, n_stars: int = 500, seed: int = 1, workers: int = 1, store_only: bool = False,
                 progress: bool = True) -> dict: ...


def median_1d(x: np.ndarray, overwrite: bool = False):
    """``np.median(x)`` of a 1-D array, bit for bit, at a fraction of the cost.

    np.median partitions around the middle element(s) AND the last one (to find NaN), which costs
    ~7x a single-pivot partition on a spectrum row; here one pivot finds the upper middle value,
    the lower one (even sizes) is the maximum of the left part, and the result goes through
    np.mean of those 1 or 2 values in the same order, exactly as np.median does. NaN input and
    non-float arrays are passed to np.median itself. `overwrite`: x may be reordered in place.
    """
    x = np.asarray(x)
    n = x.size
    if x.ndim != 1 or n == 0 or x.dtype.kind != "f" or np.isnan(x).any():
        return np.median(x)
    k = n // 2
    if overwrite:
        x.partition(k)
        part = x
    else:
        part = np.partition(x, k)
    if n % 2:
        return np.mean(part[k:k + 1])
    return np.mean(np.array([part[:k].max(), part[k]], dtype=x.dtype))


def recompute_snr(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Median of flux*sqrt(ivar) over pixels with ivar > 0, per row (NaN for an all-bad row)."""
    flux = np.atleast_2d(flux)
    ivar = np.atleast_2d(ivar)
    out = np.full(flux.shape[0], np.nan, dtype=np.float32)
    for i in range(flux.shape[0]):
        row_flux, row_ivar = flux[i], ivar[i]  # row views: [i, mask] takes numpy's slow fancy path
        good = row_ivar > 0
        if good.any():
            x, w = row_flux[good], row_ivar[good]  # copies, so the products can be made in place
            if x.dtype == np.result_type(x, w) == w.dtype:
                x *= np.sqrt(w, out=w)
            else:
                x = x * np.sqrt(w)
            out[i] = median_1d(x, overwrite=True)
    return out


def iter_records(adapter: SurveyAdapter, units: Iterable[WorkUnit]):
    for u in units:
        yield adapter.read(u)

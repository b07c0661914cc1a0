"""APOGEE DR17 adapter: allStar summary + apStar/asStar files (formats.md sections 1 and 5) -> StarRecords.

Layout on disk (as on the SDSS servers): ``ROOT/allStar-dr17-synspec_rev1.fits`` (or allStarLite-...)
and ``ROOT/{apo25m,apo1m,lco25m}/<FIELD>/{apStar,asStar}-dr17-<APOGEE_ID>.fits``.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from pairspec.grid import LogLinearGrid
from pairspec.surveys.apogee.bits import (
    ASPCAPFLAG_BITS,
    ASPCAPFLAG_STAR_BAD,
    EXTRATARG_DUPLICATE,
    PIXMASK_BAD_BITS,
    PIXMASK_STRICT_BITS,
    bits_value,
    clean_row,
    has_bit,
)
from pairspec.surveys.apogee.layout import (
    APOGEE_CORE_LABELS,
    APOGEE_DR17_SCHEMA,
    APOGEE_GRID,
)
from pairspec.surveys.base import (
    AdapterError,
    Discovery,
    Skip,
    StarRecord,
    WorkUnit,
    recompute_snr,
)
from pairspec.surveys.fitsutil import fits_layout, header_values, read_image

TELESCOPES = ("apo25m", "apo1m", "lco25m")
ALLSTAR_NAMES = ("allStar-dr17-synspec_rev1.fits", "allStarLite-dr17-synspec_rev1.fits")
FLUX_UNIT = "1e-17 erg / (s cm2 Angstrom)"
STAR_BAD_POLICIES = ("nan_labels", "keep", "drop")
_REQUIRED = ("APOGEE_ID", "TELESCOPE", "FIELD", "FILE")
_OPTIONAL = ("EXTRATARG", "ASPCAPFLAG", "SNR", "NVISITS", "RA", "DEC", "MEMBER", "STARFLAG")


def _text(value) -> str:
    """allStar/header strings may be bytes and blank-padded."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value).strip()


def _column_values(column) -> list:
    """A table column as plain Python values (stripped str, int, float), so WorkUnits pickle small."""
    values = np.asarray(column).tolist()  # one C-level conversion; per-row numpy scalars are slow
    if values and isinstance(values[0], (bytes, str)):
        return [_text(v) for v in values]
    return values


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _as_int(value, default: int = 0) -> int:
    if isinstance(value, (int, np.integer)):
        return int(value)
    f = _as_float(value)
    return int(f) if math.isfinite(f) else default


def _find_allstar(source) -> tuple[Path, Path]:
    """(allStar path, directory holding the telescope folders) from a directory or an allStar file."""
    source = Path(source)
    if source.is_file():
        return source, source.parent
    if not source.is_dir():
        raise AdapterError(str(source), "no such directory or allStar file")
    for name in ALLSTAR_NAMES:
        if (source / name).is_file():
            return source / name, source
    raise AdapterError(str(source), f"no allStar file in this directory (looked for {', '.join(ALLSTAR_NAMES)}); "
                                    "`pairspec predict CHECKPOINT apStar-*.fits` reads apStar files without one")


def _read_allstar(path: Path, wanted: list[str]) -> tuple[dict[str, np.ndarray], int]:
    """Columns (upper-case keys) of allStar HDU1; memmap so the 3 GB full file is not read whole."""
    from astropy.io import fits

    from pairspec.surveys.fitsutil import fits_layout

    fits_layout(str(path))  # a file cut short (a download stopped) is said as such, not as a wrong layout
    try:
        with fits.open(path, memmap=True) as hdul:
            if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
                raise AdapterError(str(path), "HDU1 is not a binary table (not an allStar file?)")
            data = hdul[1].data
            names = {n.upper(): n for n in hdul[1].columns.names}
            missing = [c for c in _REQUIRED if c not in names]
            if missing:
                raise AdapterError(str(path), f"allStar lacks column(s) {missing}")
            cols = {c: _column_values(data.field(names[c])) for c in wanted if c in names}
            return cols, len(data)
    except AdapterError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise AdapterError(str(path), f"cannot read FITS: {exc}") from exc


def _scan_tree(root: Path) -> set[str]:
    """Every apStar/asStar file under ROOT/<telescope>/<field>/, as path strings (cheap to hash)."""
    found = set()
    for tel in TELESCOPES:
        for field_dir in (root / tel).glob("*") if (root / tel).is_dir() else ():
            for pattern in ("a[ps]Star-*.fits", "a[ps]Star-*.fits.gz"):  # gzipped copies read too
                found.update(str(p) for p in field_dir.glob(pattern) if p.is_file())
    return found


def _star_id_from_name(path: Path) -> str:
    stem = path.name.removesuffix(".gz").removesuffix(".fits")
    return stem.split("-", 2)[-1] if stem.count("-") >= 2 else stem


def _open_with_astropy(path: str):
    """(primary header, HDU1 header, [flux, err, pixmask]) for files with scaled or odd HDUs."""
    from astropy.io import fits

    with warnings.catch_warnings():
        # astropy only warns about a short file; here that is a corrupt download.
        warnings.filterwarnings("error", message=".*truncated.*")
        with fits.open(path, memmap=False) as hdul:
            arrays = [hdul[k].data for k in (1, 2, 3)]
            for k, arr in zip((1, 2, 3), arrays):
                if arr is None:
                    raise AdapterError(path, f"missing HDU: HDU{k} has no data")
            return dict(hdul[0].header), dict(hdul[1].header), [np.array(a) for a in arrays]


def _open_apstar(path: str, grid: LogLinearGrid):
    """Validated (primary header as a dict, flux, err, pixmask) from HDUs 0-3, all (NROW, npix)."""
    gz = path.endswith(".gz")
    try:
        if gz:  # astropy decompresses it (the raw-block reader below cannot seek in a gzip stream)
            header, h1, arrays = _open_with_astropy(path)
        else:
            hdus = fits_layout(path)  # a cut file shows up here, before anything is parsed
            if len(hdus) < 4:
                raise AdapterError(path, f"missing HDU: file has {len(hdus)} HDU(s), need 0-3 (header, flux, err, pixmask)")
            if all(h.image and h.shape for h in hdus[1:4]):
                # the usual case: plain images, read straight into numpy (astropy would parse more)
                header, h1 = header_values(path, hdus[0]), header_values(path, hdus[1])
                arrays = [read_image(path, hdus[k]) for k in (1, 2, 3)]
            else:
                header, h1, arrays = _open_with_astropy(path)
        flux, err = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in arrays[:2])
        if not np.issubdtype(arrays[2].dtype, np.integer):
            raise AdapterError(path, f"HDU3 pixmask is {arrays[2].dtype}, expected an integer bitmask")
        pixmask = np.atleast_2d(np.asarray(arrays[2], dtype=np.int64))
    except AdapterError:
        raise
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, UserWarning) as exc:
        raise AdapterError(path, f"cannot read {'the gzipped FITS file' if gz else 'FITS'}: {exc}") from exc

    crval1 = h1.get("CRVAL1", header.get("CRVAL1"))
    cdelt1 = h1.get("CDELT1", header.get("CDELT1"))
    npix = flux.shape[-1]
    if crval1 is None or cdelt1 is None or not grid.matches(crval1, cdelt1, npix):
        raise AdapterError(
            path,
            f"wrong wavelength grid: CRVAL1={crval1} CDELT1={cdelt1} NAXIS1={npix}, "
            f"expected CRVAL1={grid.crval1} CDELT1={grid.cdelt1} NAXIS1={grid.npix}",
        )
    if not (flux.ndim == 2 and flux.shape == err.shape == pixmask.shape):
        raise AdapterError(
            path, f"inconsistent shapes: flux {flux.shape}, err {err.shape}, pixmask {pixmask.shape}"
        )
    return header, flux, err, pixmask


def _visit_rows(path: str, nrow: int, nvisits) -> list[int]:
    """apStar rows holding visits: row 0 alone for one visit (or a 1-row file), else rows 2..NVISITS+1."""
    if nvisits is None:
        nvisits = nrow - 2 if nrow > 2 else 1
    nvisits = int(nvisits)
    if nvisits < 1:
        raise AdapterError(path, f"NVISITS={nvisits} in the header: no visits")
    if nrow == 1 or nvisits == 1:
        return [0]
    if nrow < nvisits + 2:
        raise AdapterError(path, f"inconsistent shapes: NVISITS={nvisits} needs {nvisits + 2} rows, HDU1 has {nrow}")
    return list(range(2, nvisits + 2))


def _telescope_from_path(path: Path) -> str:
    if path.parent.parent.name in TELESCOPES:
        return path.parent.parent.name
    return "lco25m" if path.name.startswith("asStar") else ""


class ApogeeDR17Adapter:
    """SurveyAdapter for APOGEE DR17 apStar files described by an allStar table.

    bad_bits: APOGEE_PIXMASK bits that set ivar = 0 (default DRP "bad" bits 0-7, 14);
    strict: also drop persistence and sky-line pixels (bits 9-12).
    drop_duplicates: skip allStar rows with EXTRATARG bit 4 (non-primary duplicates).
    star_bad: ASPCAPFLAG STAR_BAD stars are kept with NaN labels ("nan_labels", default, so their
    visits still make twins), kept with their labels ("keep") or skipped ("drop").
    require_labels: skip allStar rows missing any of `labels` (default: teff, logg, fe_h, mg_fe).
    labels: subset of APOGEE_DR17_SCHEMA names; stars_dir: telescope folders if not beside allStar.
    """

    name = "apogee"
    location_options = ("stars_dir",)  # where inputs are: may differ between ingests into one store
    release = "dr17"
    # the TSN paper's visit-level scatter against ASPCAP at S/N < 60 (Sun, Chiappini & Nepal 2026)
    paper_targets = {"teff": 19.0, "logg": 0.06, "fe_h": 0.03}
    star_flag_bits = ASPCAPFLAG_BITS  # star_flags is allStar's ASPCAPFLAG

    def __init__(self, labels=None, bad_bits=None, strict=False, require_labels=False,
                 drop_duplicates=True, star_bad="nan_labels", stars_dir=None):
        if star_bad not in STAR_BAD_POLICIES:
            raise ValueError(f"star_bad={star_bad!r}; choose one of {STAR_BAD_POLICIES}")
        self.schema = APOGEE_DR17_SCHEMA.subset(list(labels)) if labels else APOGEE_DR17_SCHEMA
        self.labels_asked = bool(labels)  # asked by name: an allStar without one is an error, not NaN
        self.grid = APOGEE_GRID
        bits = set(PIXMASK_BAD_BITS if bad_bits is None else bad_bits)
        if strict:
            bits |= PIXMASK_STRICT_BITS
        self.bad_bits = tuple(sorted(bits))
        self.bad_mask = bits_value(bits)
        self.strict = bool(strict)
        self.require_labels = bool(require_labels)
        self.drop_duplicates = bool(drop_duplicates)
        self.star_bad = star_bad
        self.stars_dir = None if stars_dir is None else str(stars_dir)

    # ---- discovery -------------------------------------------------------------------------
    def discover(self, source) -> Discovery:
        allstar, root = _find_allstar(source)
        root = Path(self.stars_dir) if self.stars_dir else root
        label_cols = [lab.column.upper() for lab in self.schema.labels]
        extra_cols = [c.upper() for lab in self.schema.labels for c in (lab.err_column, lab.flag_column) if c]
        cols, n_rows = _read_allstar(allstar, list(_REQUIRED + _OPTIONAL) + label_cols + extra_cols)
        missing = [c for c in label_cols if c not in cols]
        if missing and self.labels_asked:
            raise AdapterError(str(allstar), f"allStar lacks label column(s) {missing} asked for by labels=")
        present = [i for i, c in enumerate(label_cols) if c in cols]  # require_labels checks these
        if missing and not present:  # a target list without labels: a store to predict, not to train on
            warnings.warn(f"{allstar}: none of the {len(label_cols)} DR17 label columns ({label_cols[0]}, ...): "
                          "every label is NaN in the store (it can be predicted, not trained on)", stacklevel=2)
        elif missing:  # another release or a custom table: ingest what is there
            warnings.warn(f"{allstar}: {len(label_cols) - len(missing)} of the {len(label_cols)} DR17 label columns "
                          f"present; {', '.join(missing)} are NaN in the store", stacklevel=2)

        on_disk = _scan_tree(root)
        referenced: set[str] = set()
        prefix = str(root)
        skipped: list[Skip] = []
        by_star: dict[str, list[tuple[float, int, WorkUnit]]] = {}
        for i in range(n_rows):
            row = {c: v[i] for c, v in cols.items()}
            star, tel, field, fname = (row[c] for c in _REQUIRED)
            path = os.path.join(prefix, tel, field, fname)  # str, not Path: 10x faster over 700k rows
            referenced.add(path)
            problem = self._row_problem(row, present)
            if path not in on_disk and path + ".gz" in on_disk:  # the file gzipped
                path = path + ".gz"
                referenced.add(path)
            if problem is None and path not in on_disk:
                problem = "allStar row has no file on disk"
            if problem:
                skipped.append(Skip(path, problem, star))
                continue
            unit = WorkUnit(f"{tel}/{field}/{fname}", path, star, row)
            by_star.setdefault(star, []).append((_as_float(row.get("SNR")), i, unit))

        chosen = []
        for star, candidates in by_star.items():
            # one row per star: the highest published SNR (NaN last; the earlier row wins ties)
            best = max(candidates, key=lambda c: (c[0] if math.isfinite(c[0]) else -math.inf, -c[1]))
            chosen.append(best[1:])
            for _, _, unit in candidates:
                if unit is not best[2]:
                    skipped.append(Skip(unit.path, f"duplicate: APOGEE_ID {star} again; kept {best[2].unit_id}", star))
        units = [unit for _, unit in sorted(chosen, key=lambda c: c[0])]
        for path in sorted(on_disk - referenced):
            skipped.append(Skip(path, "no allStar row for this apStar file", _star_id_from_name(Path(path))))
        return Discovery(units=units, skipped=skipped)

    def _row_problem(self, row: dict, present: list[int]) -> str | None:
        """Why an allStar row is not ingested (None: it is); `present`: schema indices whose label
        columns this allStar has."""
        if self.drop_duplicates and has_bit(_as_int(row.get("EXTRATARG")), EXTRATARG_DUPLICATE):
            return "EXTRATARG bit 4: non-primary duplicate row of this star"
        if self.star_bad == "drop" and has_bit(_as_int(row.get("ASPCAPFLAG")), ASPCAPFLAG_STAR_BAD):
            return "ASPCAPFLAG STAR_BAD"
        if self.require_labels:
            labels, _, _, _ = self._labels(row)
            # the labels asked for by name, else the four core ones, where this allStar has their columns
            wanted = [i for i in present if self.labels_asked or self.schema.names[i] in APOGEE_CORE_LABELS]
            lost = [self.schema.names[i] for i in wanted if np.isnan(labels[i])]
            if lost:
                return f"missing labels: {', '.join(lost)}"
        return None

    # ---- hooks of the survey registry (pairspec.surveys) -------------------------------------
    @classmethod
    def can_read(cls, path) -> bool:
        """An apStar/asStar file (by name; the reader checks the content)."""
        name = Path(str(path)).name
        return name.startswith(("apStar-", "asStar-")) and name.endswith((".fits", ".fits.gz"))

    @staticmethod
    def file_hint(path) -> str | None:
        """Why predict cannot take a file `can_read` refused, when its name says what it is."""
        name = Path(str(path)).name
        if name.startswith(("apVisit-", "asVisit-", "apCframe-", "ap1D-", "apPlate-")):
            return (f"an APOGEE {name.split('-')[0]} file (one visit or exposure, on the detector's wavelengths); "
                    "predict reads apStar/asStar files, which hold all of a star's visits on the rest-frame grid")
        if name.startswith(("aspcapStar-", "allStar", "allVisit")):
            return (f"an APOGEE {name.split('-')[0]} file, not a star's spectra; predict reads apStar/asStar files "
                    "(ingest reads them beside an allStar)")
        return None

    def read_file(self, path) -> StarRecord:
        """A lone apStar/asStar file (no allStar row: labels NaN)."""
        return self.read_apstar(path)

    @staticmethod
    def visit_fitter():
        """The visit-level baseline: the Kurucz emulator fitted to each visit (surveys/apogee/fit.py)."""
        from pairspec.surveys.apogee.fit import EmulatorFit

        return EmulatorFit()

    # ---- reading ---------------------------------------------------------------------------
    def read(self, unit: WorkUnit) -> StarRecord:
        """The star of an allStar row: its file must hold that star (header OBJID = APOGEE_ID), or a misplaced
        or renamed file would give its spectra the row's labels. (read_apstar with a hand-made row may
        name the star as it likes.)"""
        rec = self.read_apstar(unit.path, unit.row, source=unit.unit_id)
        file_id = _text(rec.meta.get("objid_header", ""))
        if file_id and rec.star_id and file_id != rec.star_id:
            raise AdapterError(unit.path, f"the file holds {file_id} (header OBJID), but its allStar row is "
                                          f"{rec.star_id}: a misplaced or renamed file")
        return rec

    def read_apstar(self, path, row=None, source=None) -> StarRecord:
        """StarRecord of one apStar file; `row` = its allStar values (upper-case keys) or None (labels NaN)."""
        path = str(path)
        header, flux, err, pixmask = _open_apstar(path, self.grid)
        return self.record_from_arrays(path, header, flux, err, pixmask, row, source)

    def record_from_arrays(self, path, header, flux, err, pixmask, row=None, source=None) -> StarRecord:
        """StarRecord from the arrays of an apStar file already in memory: primary-header values (a dict
        or Header), flux and err (NROW, npix) float, pixmask (NROW, npix) int. `path` only names the file
        in messages. read_apstar is _open_apstar + this; the simulator's direct-to-store path calls it on
        the rows it would have written, so both paths share every rule below."""
        path = str(path)
        row = {str(k).upper(): v for k, v in (row or {}).items()}
        rows = _visit_rows(path, flux.shape[0], header.get("NVISITS"))
        single = rows == [0]
        usable = self.grid.usable()

        kept, dropped = [], []
        for k, r in enumerate(rows):
            n = k + 1  # header keys count visits from 1
            visit_id = _text(header.get(f"SFILE{n}", "")) or f"{Path(path).name}[row {r}]"
            vflux, vivar = clean_row(flux[r], err[r], pixmask[r], self.bad_mask, usable)
            if not np.any(vflux):
                dropped.append(f"{visit_id} (row {r}): all-zero row (failed RV)")
            elif not np.any(vivar > 0):
                dropped.append(f"{visit_id} (row {r}): every pixel is bad")
            else:
                kept.append((n, r, visit_id, vflux, vivar))
        if not kept:
            raise AdapterError(path, f"every pixel is bad in all {len(rows)} visit row(s)")

        header_snr = _as_float(header.get("SNR"))
        snr_survey = []
        for n, *_ in kept:
            s = _as_float(header.get(f"SNRVIS{n}"))
            # DR17 writes SNRVIS1 = 0 for single-visit stars; that visit is row 0, whose S/N is SNR.
            snr_survey.append(s if s > 0 else (header_snr if single else math.nan))
        visit_flux = np.stack([v[3] for v in kept])
        visit_ivar = np.stack([v[4] for v in kept])
        if single:
            coadd_flux, coadd_ivar = visit_flux[0].copy(), visit_ivar[0].copy()
        else:
            coadd_flux, coadd_ivar = clean_row(flux[0], err[0], pixmask[0], self.bad_mask, usable)

        labels, label_err, label_flags, star_flags = self._labels(row)
        star_id = _text(row.get("APOGEE_ID", "")) or _text(header.get("OBJID", "")) or _star_id_from_name(Path(path))
        snr = _as_float(row.get("SNR", header_snr))
        meta = {
            "ra": _as_float(row.get("RA", header.get("RA"))),
            "dec": _as_float(row.get("DEC", header.get("DEC"))),
            "telescope": _text(row.get("TELESCOPE", "")) or _telescope_from_path(Path(path)),
            "field": _text(row.get("FIELD", "")) or _text(header.get("FIELD", "")),
            "apogee_id": star_id,
            "objid_header": _text(header.get("OBJID", "")),
            "nvisits_header": _as_int(header.get("NVISITS"), -1),
            "member": _text(row.get("MEMBER", "")),
            "extratarg": _as_int(row.get("EXTRATARG"), 0),
            "starflag": _as_int(header.get("STARFLAG"), 0),
            "dropped_visits": dropped,
        }
        return StarRecord(
            star_id=star_id,
            source=source or path,
            labels=labels,
            label_err=label_err,
            label_flags=label_flags,
            star_flags=star_flags,
            coadd_flux=coadd_flux,
            coadd_ivar=coadd_ivar,
            coadd_pixmask=pixmask[0].copy(),
            visit_flux=visit_flux,
            visit_ivar=visit_ivar,
            visit_pixmask=np.stack([pixmask[v[1]] for v in kept]),
            visit_snr=recompute_snr(visit_flux, visit_ivar),
            visit_snr_survey=np.array(snr_survey, dtype=np.float32),
            visit_mjd=np.array([_as_float(header.get(f"JD{v[0]}")) - 2400000.5 for v in kept]),
            visit_id=[v[2] for v in kept],
            visit_fiber=np.array([_as_int(header.get(f"FIBER{v[0]}"), -1) for v in kept], dtype=np.int32),
            snr=snr,
            meta=meta,
        )

    def _labels(self, row: dict):
        """(labels, label_err, label_flags, star_flags) from allStar values; missing -> NaN / 0."""
        labs = self.schema.labels
        labels = self.schema.clean([_as_float(row.get(lab.column.upper())) for lab in labs])
        err = np.array([_as_float(row.get(lab.err_column.upper())) for lab in labs], dtype=np.float32)
        with np.errstate(invalid="ignore"):
            err[~np.isfinite(err) | (err <= 0) | np.isnan(labels)] = np.nan
        flags = np.array(
            [_as_int(row.get(lab.flag_column.upper()), 0) if lab.flag_column else 0 for lab in labs], dtype=np.int64
        )
        star_flags = _as_int(row.get("ASPCAPFLAG"), 0)
        if self.star_bad == "nan_labels" and has_bit(star_flags, ASPCAPFLAG_STAR_BAD):
            labels[:] = np.nan
            err[:] = np.nan
        return labels, err, flags, star_flags


def read_apstar(path, row=None, **options) -> StarRecord:
    """StarRecord from a lone apStar file (labels NaN unless `row` gives allStar values)."""
    return ApogeeDR17Adapter(**options).read_apstar(path, row)


def apstar_to_spectrum(path, row: int = 0, bad_bits=None, strict: bool = False):
    """specutils Spectrum of one apStar row (0 = coadd, 2.. = visits): flux, InverseVariance, mask = ivar 0."""
    import astropy.units as u
    from astropy.io import fits
    from astropy.nddata import InverseVariance
    from specutils import Spectrum

    adapter = ApogeeDR17Adapter(bad_bits=bad_bits, strict=strict)
    _, flux, err, pixmask = _open_apstar(str(path), adapter.grid)
    header = fits.getheader(str(path), 0)  # users expect an astropy Header in Spectrum.meta
    if not 0 <= row < flux.shape[0]:
        raise AdapterError(str(path), f"row {row} out of range: the file has {flux.shape[0]} rows")
    f, ivar = clean_row(flux[row], err[row], pixmask[row], adapter.bad_mask, adapter.grid.usable())
    unit = u.Unit(FLUX_UNIT)
    return Spectrum(
        flux=f * unit,
        spectral_axis=adapter.grid.wavelength() * u.AA,
        uncertainty=InverseVariance(ivar, unit=unit**-2),
        mask=ivar == 0,
        meta={"header": header, "row": row, "pixmask": pixmask[row].copy()},
    )

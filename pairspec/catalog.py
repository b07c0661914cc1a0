"""Label catalogues: visit flags, inverse-variance star combination, tables with units, atomic writes.

Pure numpy + astropy; knows nothing about models or stores (predict.py feeds it arrays).
The flag bits are documented in docs/catalogue.md; change both together.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FLAG_BITS = {
    "EXTRAPOLATED": 0,  # a predicted label lies outside the training label range
    "LOW_SNR": 1,  # visit S/N below snr_low (or not measurable)
    "MANY_BAD_PIXELS": 2,  # fraction of bad pixels above max_bad_frac
    "NOT_FINITE": 3,  # the network gave a non-finite label or sigma; labels set to NaN
    "LARGE_SIGMA": 4,  # calibrated sigma larger than the training label spread
    "NO_GOOD_VISITS": 5,  # star table only: no visit could enter the combination
    "NO_SIGNAL": 6,  # visit S/N below SNR_NO_SIGNAL: no usable starlight (an exposure of the sky, a dome flat)
}
FLAG_DOC = {
    "EXTRAPOLATED": "a predicted label is outside the training label range",
    "LOW_SNR": "S/N below the low-S/N threshold",
    "MANY_BAD_PIXELS": "too many bad (ivar = 0) pixels",
    "NOT_FINITE": "non-finite prediction; labels set to NaN",
    "LARGE_SIGMA": "calibrated sigma larger than the training label spread",
    "NO_GOOD_VISITS": "no usable visit for the star combination",
    "NO_SIGNAL": "S/N below 2: no usable starlight; left out of the star mean",
}
EXTRAPOLATED, LOW_SNR, MANY_BAD_PIXELS, NOT_FINITE, LARGE_SIGMA, NO_GOOD_VISITS, NO_SIGNAL = (
    1 << FLAG_BITS[k] for k in FLAG_BITS
)
# Below this recomputed S/N a visit holds no usable starlight (real exposures with no star on the fibre, in
# the bundled real files, read S/N -0.2 to 0.7): its label is the network's prior, whatever sigma it claims
SNR_NO_SIGNAL = 2.0
# Visits with these bits do not enter the per-star mean: their labels are NaN or unreliable.
EXCLUDED = NOT_FINITE | MANY_BAD_PIXELS | NO_SIGNAL

FORMATS = {".fits": "fits", ".fit": "fits", ".parquet": "parquet", ".ecsv": "ascii.ecsv"}


def flag_names(flag: int) -> list[str]:
    """Names of the bits set in one flag value, lowest bit first."""
    return [name for name, bit in FLAG_BITS.items() if int(flag) >> bit & 1]


def default_sigma_max(label_lo, label_hi) -> np.ndarray:
    """Std of a uniform distribution over the training range: a sigma above it says less than the prior."""
    return (np.asarray(label_hi, np.float64) - np.asarray(label_lo, np.float64)) / np.sqrt(12.0)


def flag_visits(labels, sigma, snr, frac_bad, label_lo, label_hi, sigma_max, snr_low=10.0, max_bad_frac=0.3):
    """Flag bits per visit. Returns (labels, sigma, flags) with rows of NOT_FINITE visits set to NaN.

    Every threshold is fixed (not batch statistics), so the flags do not depend on how visits are chunked.
    """
    labels = np.array(labels, dtype=np.float64, copy=True)
    sigma = np.array(sigma, dtype=np.float64, copy=True)
    snr = np.asarray(snr, dtype=np.float64)
    frac_bad = np.asarray(frac_bad, dtype=np.float64)
    flags = np.zeros(labels.shape[0], dtype=np.int32)

    # A sigma <= 0 cannot be an inverse-variance weight, so it counts as a broken prediction.
    broken = ~(np.isfinite(labels).all(axis=1) & np.isfinite(sigma).all(axis=1) & (sigma > 0).all(axis=1))
    labels[broken] = np.nan
    sigma[broken] = np.nan
    flags[broken] |= NOT_FINITE
    with np.errstate(invalid="ignore"):
        outside = ((labels < np.asarray(label_lo)) | (labels > np.asarray(label_hi))).any(axis=1)
        flags[outside] |= EXTRAPOLATED
        flags[(sigma > np.asarray(sigma_max)).any(axis=1)] |= LARGE_SIGMA
        flags[~(snr >= snr_low)] |= LOW_SNR  # NaN S/N (all pixels bad) counts as low
        flags[snr < SNR_NO_SIGNAL] |= NO_SIGNAL
        flags[~(frac_bad <= max_bad_frac)] |= MANY_BAD_PIXELS
    return labels, sigma, flags


def combine_visits(star_index, n_stars, labels, sigma, flags, sigma_visit=None, split_known: bool = True) -> dict:
    """Inverse-variance mean of each star's visits.

    Without sigma_visit: weights 1/sigma_i^2, sigma = 1/sqrt(sum 1/sigma_i^2) (every error independent).
    With it (the calibration's split, pairspec.calibration): only the visit part averages down; the star
    part sigma_star_i^2 = sigma_i^2 - sigma_visit_i^2 is common to a star's visits, so weights are
    1/sigma_visit_i^2 and sigma = sqrt(1/sum w_i + sum w_i sigma_star_i^2 / sum w_i).
    split_known=False (a one-part calibration: too few repeat pairs to tell the parts apart): weights
    1/sigma_i^2 and sigma = sum w_i sigma_i / sum w_i, the error of the mean when every visit's error is
    common to the star's visits. An error that could not be shown to average down is not averaged down
    (treating it as independent shrank a common error by sqrt(N): star z-std 1.7 on a synthetic survey).

    Visits with an EXCLUDED bit are left out. The star flag is the OR of the flags of the visits
    used, or of all its visits plus NO_GOOD_VISITS when none could be used (labels NaN then).
    """
    star_index = np.asarray(star_index, dtype=np.int64)
    flags = np.asarray(flags, dtype=np.int32)
    used = (flags & EXCLUDED) == 0
    n_label = np.asarray(labels).shape[1]
    mean = np.full((n_stars, n_label), np.nan)
    err = np.full((n_stars, n_label), np.nan)
    n_used = np.bincount(star_index[used], minlength=n_stars)
    has = n_used > 0
    sigma = np.asarray(sigma, np.float64)
    sv = sigma if sigma_visit is None or not split_known else np.asarray(sigma_visit, np.float64)
    star_var = np.clip(sigma ** 2 - sv ** 2, 0.0, None)
    for k in range(n_label):
        w = 1.0 / sv[used, k] ** 2
        sum_w = np.bincount(star_index[used], weights=w, minlength=n_stars)
        sum_wx = np.bincount(star_index[used], weights=w * np.asarray(labels, np.float64)[used, k], minlength=n_stars)
        sum_ws = np.bincount(star_index[used], weights=w * star_var[used, k], minlength=n_stars)
        mean[has, k] = sum_wx[has] / sum_w[has]
        if split_known:
            err[has, k] = np.sqrt(1.0 / sum_w[has] + sum_ws[has] / sum_w[has])
        else:
            sum_wsig = np.bincount(star_index[used], weights=w * sigma[used, k], minlength=n_stars)
            err[has, k] = sum_wsig[has] / sum_w[has]

    star_flag = np.zeros(n_stars, dtype=np.int32)
    np.bitwise_or.at(star_flag, star_index[used], flags[used])
    none = ~has
    lost = none[star_index]
    np.bitwise_or.at(star_flag, star_index[lost], flags[lost])
    star_flag[none] |= NO_GOOD_VISITS
    return {
        "labels": mean,
        "sigma": err,
        "n_visits": np.bincount(star_index, minlength=n_stars).astype(np.int32),
        "n_used": n_used.astype(np.int32),
        "flag": star_flag,
    }


def _column(table, name, values, dtype, unit=None, description=""):
    from astropy.table import Column

    table[name] = Column(np.asarray(values).astype(dtype), unit=unit, description=description)


def _add_labels(table, names, units, labels, sigma, suffix="", what="predicted"):
    for k, (name, unit) in enumerate(zip(names, units)):
        _column(table, f"{name}{suffix}", labels[:, k], np.float32, unit, f"{what} {name}")
        _column(table, f"e_{name}{suffix}", sigma[:, k], np.float32, unit, f"1-sigma uncertainty of {what} {name}")


def visit_table(star_id, visit_id, mjd, snr, snr_survey, labels, sigma, flag, frac_bad, names, units,
                sigma_visit=None):
    """The per-visit catalogue as an astropy Table (one row per visit); `sigma_visit` (N, K): the visit
    part of each error (e_<label>_visit), so a user can combine any subset of a star's visits as
    combine_visits does."""
    from astropy.table import Table

    t = Table()
    _column(t, "star_id", star_id, str, None, "survey star identifier")
    _column(t, "visit_id", visit_id, str, None, "survey visit identifier")
    _column(t, "mjd", mjd, np.float64, "d", "modified Julian date of the visit")
    _column(t, "snr", snr, np.float32, None, "median flux*sqrt(ivar) over good pixels (recomputed)")
    _column(t, "snr_survey", snr_survey, np.float32, None, "S/N as published by the survey")
    _add_labels(t, names, units, np.asarray(labels), np.asarray(sigma), what="predicted")
    if sigma_visit is not None:
        sv = np.asarray(sigma_visit)
        for k, (name, unit) in enumerate(zip(names, units)):
            _column(t, f"e_{name}_visit", sv[:, k], np.float32, unit,
                    f"visit part of e_{name}: the part that averages down over a star's visits")
    _column(t, "flag", flag, np.int32, None, "bitmask, see FLAGBITn / docs/catalogue.md")
    _column(t, "frac_bad", frac_bad, np.float32, None, "fraction of bad (ivar = 0) usable pixels")
    return t


def star_table(star_id, combined, snr_max, names, units, survey_labels=None, survey_err=None, survey_flags=None):
    """The per-star catalogue: combined labels, the survey's own labels when given (n_star, K) and its
    star bitmask (e.g. that a star's visits are synthetic copies of one spectrum)."""
    from astropy.table import Table

    t = Table()
    _column(t, "star_id", star_id, str, None, "survey star identifier")
    _column(t, "n_visits", combined["n_visits"], np.int32, None, "visits predicted")
    _column(t, "n_used", combined["n_used"], np.int32, None, "visits in the inverse-variance mean")
    _column(t, "snr_max", snr_max, np.float32, None, "highest visit S/N (recomputed)")
    _add_labels(t, names, units, combined["labels"], combined["sigma"], what="visit-combined")
    _column(t, "flag", combined["flag"], np.int32, None, "bitmask, see FLAGBITn / docs/catalogue.md")
    if survey_labels is not None:
        _add_labels(t, names, units, np.asarray(survey_labels), np.asarray(survey_err), "_survey", "survey")
    if survey_flags is not None:
        _column(t, "survey_flags", survey_flags, np.int64, None,
                "the survey adapter's star bitmask, see SFLAGn / docs/catalogue.md")
    return t


def add_survey_flag_names(table, survey: str) -> None:
    """The names of the survey adapter's star bits (its `star_flag_bits`) as SFLAGn meta, and SURVEY."""
    from pairspec.surveys import star_flag_bits

    table.meta["SURVEY"] = str(survey)
    for bit, name in star_flag_bits(survey).items():
        table.meta[f"SFLAG{bit}"] = name


def add_meta(table, meta: dict) -> None:
    """Flag bit names and run settings as table meta (FITS header cards; 8-char keys)."""
    for name, bit in FLAG_BITS.items():
        table.meta[f"FLAGBIT{bit}"] = name
    table.meta.update(meta)


def catalogue_paths(out_path) -> tuple[Path, Path]:
    """(visit_path, star_path): one FITS file with two HDUs, or <stem>.visits/.stars files."""
    out_path = Path(out_path)
    suffix = out_path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{out_path}: unknown catalogue format {suffix!r}; use one of {sorted(FORMATS)}")
    if FORMATS[suffix] == "fits":
        return out_path, out_path
    stem = out_path.with_suffix("")
    return Path(f"{stem}.visits{suffix}"), Path(f"{stem}.stars{suffix}")


def _fits_hdu(table, extname):
    """BinTableHDU with units and descriptions in TUNITn/TCOMMn (astropy drops 'dex' and descriptions)."""
    from astropy.io import fits

    plain = table.copy(copy_data=False)
    for col in plain.itercols():
        col.unit = None
    hdu = fits.table_to_hdu(plain)
    hdu.name = extname
    for i, col in enumerate(table.itercols(), start=1):
        if col.unit is not None:
            hdu.header[f"TUNIT{i}"] = str(col.unit)
        if col.description:
            hdu.header[f"TCOMM{i}"] = col.description
    return hdu


def _journal(out_path) -> Path:
    """The commit record of a two-file catalogue, beside it (hidden)."""
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.with_suffix('').name}.catalogue-commit.json")


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (and directories on some systems) cannot be synced
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(out_path) -> bool:
    """Finish a catalogue commit that a crash cut off between its renames (roll forward: every file of
    that run was whole before its commit record was written), and remove the temporary files of runs
    whose process is gone. True if a commit was finished. Called by write_catalogue and read_catalogue."""
    import json

    journal, finished = _journal(out_path), False
    if journal.exists():
        try:
            record = json.loads(journal.read_text())
            renames = [(Path(a), Path(b)) for a, b in record["renames"]]
        except (ValueError, KeyError, TypeError, OSError) as err:
            raise ValueError(f"{journal}: unreadable catalogue commit record ({err}); remove it and write the "
                             "catalogue again") from err
        for tmp, final in renames:
            if tmp.exists():
                os.replace(tmp, final)
        _fsync(journal.parent)
        journal.unlink(missing_ok=True)
        finished = True
    for path in {p for p in catalogue_paths(out_path)}:
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            pid = tmp.name[:-len(".tmp")].rsplit(".", 1)[-1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)
    return finished


def write_catalogue(visits, stars, out_path) -> tuple[Path, Path]:
    """Write both tables as one unit: each to a temporary file beside its target, synced; then (two
    files) a commit record naming the renames, the renames, and the record's removal. A crash before
    the record leaves the previous catalogue; after it, `recover` (run by the next write or read)
    completes the renames. Both tables carry the same RUNID in their metadata, so a reader can tell a
    matching pair (read_catalogue checks it)."""
    import json
    import uuid

    visit_path, star_path = catalogue_paths(out_path)
    fmt = FORMATS[Path(out_path).suffix.lower()]
    visit_path.parent.mkdir(parents=True, exist_ok=True)
    recover(out_path)
    run = uuid.uuid4().hex[:16]
    for table in (visits, stars):
        table.meta["RUNID"] = run
    jobs = [(visit_path, visits), (star_path, stars)] if visit_path != star_path else [(visit_path, None)]
    tmps = {p: p.with_name(f".{p.name}.{run}.{os.getpid()}.tmp") for p, _ in jobs}
    journal, committed, record = _journal(out_path), False, None
    try:
        for path, table in jobs:
            if table is None:
                from astropy.io import fits

                hdus = fits.HDUList([fits.PrimaryHDU(), _fits_hdu(visits, "VISITS"), _fits_hdu(stars, "STARS")])
                hdus.writeto(tmps[path], overwrite=True)
            else:
                table.write(tmps[path], format=fmt, overwrite=True)
            _fsync(tmps[path])
        if len(tmps) > 1:
            record = journal.with_name(f"{journal.name}.{os.getpid()}.partial")
            record.write_text(json.dumps({"run": run, "renames": [[str(t), str(p)] for p, t in tmps.items()]}))
            _fsync(record)
            os.replace(record, journal)  # the commit point
            committed = True
        for path, tmp in tmps.items():
            os.replace(tmp, path)
        _fsync(visit_path.parent)
        if committed:
            journal.unlink()
    finally:
        if not committed:
            for tmp in tmps.values():
                tmp.unlink(missing_ok=True)
            if record is not None:
                record.unlink(missing_ok=True)
    return visit_path, star_path


def read_catalogue(out_path):
    """(visit table, star table) of a catalogue written by write_catalogue, after finishing an
    interrupted commit; ValueError naming the files if the two halves come from different runs."""
    from astropy.table import Table

    visit_path, star_path = catalogue_paths(out_path)
    recover(out_path)
    if visit_path == star_path:
        kw = dict(unit_parse_strict="silent", mask_invalid=False)
        visits, stars = Table.read(visit_path, hdu="VISITS", **kw), Table.read(star_path, hdu="STARS", **kw)
    else:
        kw = dict(unit_parse_strict="silent") if visit_path.suffix.lower() == ".ecsv" else {}
        visits, stars = Table.read(visit_path, **kw), Table.read(star_path, **kw)
    if visits.meta.get("RUNID") != stars.meta.get("RUNID"):
        raise ValueError(f"{visit_path} and {star_path} come from different runs (RUNID {visits.meta.get('RUNID')} "
                         f"and {stars.meta.get('RUNID')}); write the catalogue again")
    return visits, stars

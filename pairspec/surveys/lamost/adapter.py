"""LAMOST MRS / LRS adapter: a folder of LAMOST spectrum files (+ an optional label catalogue) -> StarRecords.

discover() reads only the primary header of every `med-*` (MRS) or `spec-*` (LRS) file under SOURCE
(any depth, .fits or .fits.gz), drops duplicate spectra (same OBSID), groups the files of one star
(group.py: Gaia id from the catalogue, else position), attaches each file's radial velocity (LRS: header
Z; MRS: the catalogue's rv) and the star's labels, and makes one WorkUnit per star. read() reads the
star's files (files.py), resamples every exposure (MRS) or file (LRS) onto the fixed grid in the star's
rest frame (resample.py), and builds the star-level coadd. See README.md beside this file.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np

from pairspec.surveys.base import AdapterError, Discovery, Skip, StarRecord, WorkUnit
from pairspec.surveys.lamost.catalogue import LabelTable, normalise_designation
from pairspec.surveys.lamost.files import as_float, read_primary, text
from pairspec.surveys.lamost.group import group_files
from pairspec.surveys.lamost.layout import (
    C_KMS,
    FRAMES,
    LAMOST_SCHEMA,
    RESOLUTIONS,
    lamost_grid,
)
from pairspec.surveys.lamost.records import build_record

PATTERNS = {"mrs": ("med-*.fits", "med-*.fits.gz"), "lrs": ("spec-*.fits", "spec-*.fits.gz")}
CATALOGUE_SUFFIXES = (".fits", ".fits.gz", ".fit", ".csv", ".csv.gz", ".ecsv")
BAD_FILE_POLICIES = ("skip_star", "drop")
MAX_ROW_SKIPS = 100  # catalogue rows without a file reported one by one; the rest in one line


def file_key(h: dict, path: str) -> str:
    """A spectrum's identity: OBSID; DR1 LRS files have none, so LMJD-PLANID-SPID-FIBERID there."""
    obsid = h.get("OBSID")
    if obsid not in (None, "", 0):
        return str(int(obsid)) if isinstance(obsid, (int, float)) else text(obsid)
    parts = [text(h.get(k)) for k in ("LMJD", "PLANID", "SPID", "FIBERID")]
    return "-".join(parts) if all(parts) else Path(path).name.split(".fits")[0]


def _problem(h: dict, resolution: str) -> str | None:
    if h.get("HELIO") is False:
        return "HELIO = F: wavelengths not heliocentric-corrected (not handled)"
    if h.get("VACUUM") is False:
        return "VACUUM = F: air wavelengths (not handled)"
    cls = text(h.get("CLASS")).upper()
    if resolution == "lrs" and cls and not cls.startswith("STAR"):
        return f"CLASS = {cls}: not a star"
    return None


class LamostAdapter:
    """SurveyAdapter for LAMOST spectra (README.md in this folder documents every option).

    resolution: "mrs" (med-*, B+R arms, R~7500) or "lrs" (spec-*, R~1800): one store each.
    frame: "rest" (shift every file by its RV; files without one are skipped) or "heliocentric".
    catalog: label catalogue (FITS/CSV); "auto" = the one file in SOURCE named like *MRS*/*LRS* with a
    table suffix (not med-*, spec-*, truth*); None = no labels. columns: {label: column} overrides the
    catalogue's column names.
    labels: subset of the schema (teff, logg, fe_h, alpha_fe); a requested label the catalogue lacks is
    an error. labels_from: another survey's catalogue (e.g. APOGEE allStar) whose labels replace
    LAMOST's, matched by Gaia id or within match_radius arcsec. group_radius: arcsec within which files
    are one star. strict: nonzero ORMASK (not only ANDMASK) is bad. bad_files: "skip_star" (a broken
    file skips its star, named in the report) or "drop" (the star is kept without it). min_snr: drop
    visits below this recomputed S/N. require_labels: skip stars missing any label.
    """

    name = "lamost"
    location_options = ("catalog", "labels_from")  # where inputs are: may differ between ingests

    def __init__(self, resolution="mrs", frame="rest", catalog="auto", columns=None, labels=None,
                 labels_from=None, match_radius=2.0, group_radius=3.0, strict=False, bad_files="skip_star",
                 min_snr=None, require_labels=False):
        resolution, frame = str(resolution).lower(), str(frame).lower()
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution={resolution!r}; choose one of {RESOLUTIONS}")
        if frame not in FRAMES:
            raise ValueError(f"frame={frame!r}; choose one of {FRAMES}")
        if bad_files not in BAD_FILE_POLICIES:
            raise ValueError(f"bad_files={bad_files!r}; choose one of {BAD_FILE_POLICIES}")
        self.resolution, self.frame, self.release = resolution, frame, resolution
        self.grid = lamost_grid(resolution, frame)
        self.usable = self.grid.usable()
        self.requested = list(labels) if labels else []
        self.schema = LAMOST_SCHEMA.subset(self.requested) if labels else LAMOST_SCHEMA
        self.catalog, self.columns = catalog, dict(columns or {})
        self.labels_from = None if labels_from in (None, "") else str(labels_from)
        self.match_radius, self.group_radius = float(match_radius), float(group_radius)
        self.strict, self.bad_files = bool(strict), bad_files
        self.min_snr = None if min_snr is None else float(min_snr)
        self.require_labels = bool(require_labels)

    # ---- discovery -------------------------------------------------------------------------
    def _catalogue_path(self, root: Path) -> str | None:
        if self.catalog in (None, "", "none", False):
            return None
        if self.catalog != "auto":
            return str(self.catalog)
        if not root.is_dir():
            return None
        token = re.compile(rf"(^|[^a-z]){self.resolution}([^a-z]|$)")
        found = sorted(str(p) for p in root.iterdir() if p.is_file() and p.name.lower().endswith(CATALOGUE_SUFFIXES)
                       and not p.name.startswith(("med-", "spec-", "truth")) and token.search(p.name.lower()))
        if len(found) > 1:
            raise AdapterError(str(root), f"several {self.resolution.upper()} catalogues here ({', '.join(found)}): "
                                          f"choose one with --option catalog=PATH")
        return found[0] if found else None

    def _table(self, path: str | None, what: str):
        if path is None:
            return None
        table = LabelTable(path, self.schema, self.columns if what == "catalogue" else None)
        asked = [m for m in table.missing if m in self.requested]
        if asked:
            raise AdapterError(path, f"{what} has no column for the requested label(s) {asked}; "
                                     + table.missing_message())
        if table.missing:
            warnings.warn(table.missing_message(), stacklevel=3)
        return table

    def discover(self, source) -> Discovery:
        root = Path(source)
        if not root.exists():
            raise AdapterError(str(root), "no such directory or file")
        paths = [root] if root.is_file() else sorted({p for pat in PATTERNS[self.resolution] for p in root.rglob(pat)})
        if not paths:
            other = "lrs" if self.resolution == "mrs" else "mrs"
            hint = ""
            if root.is_dir() and any(p for pat in PATTERNS[other] for p in root.rglob(pat)):
                hint = (f"; it holds LAMOST {other.upper()} files: --option resolution={other}"
                        + (" (MRS is the default)" if other == "mrs" else ""))
            raise AdapterError(str(root), f"no LAMOST {self.resolution.upper()} files "
                                          f"({' or '.join(PATTERNS[self.resolution])}) under this folder{hint}")
        catalogue = self._table(self._catalogue_path(root if root.is_dir() else root.parent), "catalogue")
        external = self._table(self.labels_from, "labels_from catalogue")
        skipped: list[Skip] = []
        infos, seen = [], {}
        for p in paths:
            path = str(p)
            try:
                h = read_primary(path)
            except AdapterError as err:
                skipped.append(Skip(err.path, err.problem))
                continue
            info = self._file_info(path, h, catalogue)
            problem = _problem(h, self.resolution) or info.pop("problem", None)
            if problem:
                skipped.append(Skip(path, problem, info["desig"]))
            elif info["key"] in seen:
                skipped.append(Skip(path, f"duplicate: OBSID {info['key']} also in {seen[info['key']]}; kept that one",
                                    info["desig"]))
            else:
                seen[info["key"]] = path
                infos.append(info)
        units = self._units(infos, catalogue, external, skipped)
        if catalogue is not None:
            skipped.extend(self._orphan_rows(catalogue, infos))
        return Discovery(units=units, skipped=skipped)

    def _file_info(self, path: str, h: dict, catalogue) -> dict:
        ra = as_float(h.get("RA", h.get("RA_OBS")))
        dec = as_float(h.get("DEC", h.get("DEC_OBS")))
        desig = normalise_designation(text(h.get("DESIG")))
        key = file_key(h, path)
        info = {"path": path, "key": key, "desig": desig, "ra": ra, "dec": dec, "lmjd": as_float(h.get("LMJD")),
                "planid": text(h.get("PLANID")), "gaia": 0, "rv": math.nan, "row": -1}
        if not (math.isfinite(ra) and math.isfinite(dec)):
            info["problem"] = "no RA/DEC in the primary header"
        if catalogue is not None:
            own = catalogue.rows_for([int(key)], []) if key.isdigit() else []
            row = catalogue.best(own or catalogue.rows_for([], [desig]))
            info["row"] = row
            if row >= 0 and catalogue.gaia is not None:
                info["gaia"] = int(catalogue.gaia[row])
            # an RV belongs to one spectrum: another night's row (same designation) is no RV for this one
            exact = bool(own) or not (key.isdigit() and catalogue.obsid is not None)
            if row >= 0 and catalogue.rv is not None and exact:
                info["rv"] = float(catalogue.rv[row])
        z = as_float(h.get("Z"))
        if self.resolution == "lrs" and math.isfinite(z):
            info["rv"] = z * C_KMS  # the file's own LASP redshift first
        return info

    def _units(self, infos: list[dict], catalogue, external, skipped: list[Skip]) -> list[WorkUnit]:
        groups = group_files(np.array([i["ra"] for i in infos]), np.array([i["dec"] for i in infos]),
                             np.array([i["gaia"] for i in infos], dtype=np.int64), self.group_radius)
        units, ids = [], set()
        for g in groups:
            files = sorted((infos[i] for i in g),
                           key=lambda i: (i["lmjd"] if math.isfinite(i["lmjd"]) else 1e9, i["key"]))
            if self.frame == "rest":
                files = self._with_rv(files, skipped)
                if not files:
                    continue
            first = files[0]
            star = first["desig"] or f"J{first['ra']:09.5f}{first['dec']:+09.5f}"
            gaia = next((f["gaia"] for f in files if f["gaia"] > 0), 0)
            if star in ids:  # two stars closer than a designation's precision: told apart by id
                star = f"{star}_{gaia or first['key']}"
            ids.add(star)
            ra = float(np.mean([f["ra"] for f in files]))
            dec = float(np.mean([f["dec"] for f in files]))
            labels, errors, source = self._labels(files, catalogue, external, gaia, ra, dec)
            if self.require_labels and not np.isfinite(labels).all():
                lost = [n for n, v in zip(self.schema.names, labels) if not np.isfinite(v)]
                skipped.append(Skip(first["path"], f"missing labels: {', '.join(lost)} (require_labels)", star))
                continue
            row = {"files": [f["path"] for f in files], "keys": [f["key"] for f in files],
                   "rv": [f["rv"] for f in files], "designations": sorted({f["desig"] for f in files}),
                   "gaia": int(gaia), "ra": ra, "dec": dec, "planid": first["planid"],
                   "labels": labels.tolist(), "label_err": errors.tolist(), "label_source": source}
            units.append(WorkUnit(f"{self.resolution}/{star}", first["path"], star, row))
        return units

    def _with_rv(self, files: list[dict], skipped: list[Skip]) -> list[dict]:
        """Files with an RV; one without gets the median of its star's others (a single star's RV does not
        change between nights, binaries aside); with none at all the files are skipped."""
        known = [f["rv"] for f in files if math.isfinite(f["rv"])]
        if not known:
            where = "header Z or the catalogue's rv" if self.resolution == "lrs" else "the catalogue's rv column"
            for f in files:
                skipped.append(Skip(f["path"], f"no radial velocity for OBSID {f['key']} ({where}): cannot shift to "
                                               f"the rest frame; give --option catalog=PATH or use frame=heliocentric",
                                    f["desig"]))
            return []
        fill = float(np.median(known))
        return [dict(f, rv=f["rv"] if math.isfinite(f["rv"]) else fill) for f in files]

    def _labels(self, files, catalogue, external, gaia: int, ra: float, dec: float):
        k = len(self.schema)
        nan = np.full(k, np.nan)
        if external is not None:
            row = external.match(gaia, ra, dec, self.match_radius)
            if row < 0:
                return nan, nan.copy(), "labels_from: no match"
            return external.labels[row].copy(), external.errors[row].copy(), f"{external.path} row {row}"
        if catalogue is None:
            return nan, nan.copy(), ""
        rows = [f["row"] for f in files if f["row"] >= 0]
        row = catalogue.best(rows) if rows else catalogue.best(
            catalogue.rows_for([], [f["desig"] for f in files]))
        if row < 0:
            return nan, nan.copy(), "catalogue: no row"
        return catalogue.labels[row].copy(), catalogue.errors[row].copy(), f"{catalogue.path} row {row}"

    def _orphan_rows(self, catalogue, infos) -> list[Skip]:
        """Catalogue rows that no discovered file matches by obsid or designation: spectra with no file."""
        if catalogue.obsid is None and catalogue.designation is None:
            return []
        have_obsid = {int(i["key"]) for i in infos if i["key"].isdigit()}
        have_desig = {i["desig"] for i in infos}
        lost = []
        for r in range(catalogue.n_rows):
            by_obsid = catalogue.obsid is not None and int(catalogue.obsid[r]) in have_obsid
            by_desig = catalogue.designation is not None and catalogue.designation[r] in have_desig
            if not (by_obsid or by_desig):
                lost.append(r)

        def what(r):
            ids = [f"OBSID {catalogue.obsid[r]}"] if catalogue.obsid is not None else []
            return ", ".join(ids + ([catalogue.designation[r]] if catalogue.designation is not None else []))

        out = [Skip(catalogue.path, f"catalogue row {r} ({what(r)}): no spectrum file for it under the source")
               for r in lost[:MAX_ROW_SKIPS]]
        if len(lost) > MAX_ROW_SKIPS:
            out.append(Skip(catalogue.path, f"... and {len(lost) - MAX_ROW_SKIPS} more catalogue rows with no file"))
        return out

    # ---- hooks of the survey registry -------------------------------------------------------
    def can_read(self, path) -> bool:
        name = Path(str(path)).name
        prefix = "med-" if self.resolution == "mrs" else "spec-"
        return name.startswith(prefix) and name.endswith((".fits", ".fits.gz"))

    def file_hint(self, path) -> str | None:
        """Why predict cannot take a file `can_read` refused, when its name says what it is."""
        name = Path(str(path)).name
        other, prefix = ("LRS", "spec-") if self.resolution == "mrs" else ("MRS", "med-")
        if name.startswith(prefix):
            return (f"a LAMOST {other} file ({prefix}*); this model reads {self.resolution.upper()} files: a model "
                    f"trained on {other} spectra reads it (ingest with --option resolution={other.lower()})")
        return None

    def read_file(self, path, rv_kms: float = math.nan) -> StarRecord:
        """A lone file (no catalogue: labels NaN). Rest frame needs an RV: LRS header Z, or `rv_kms`."""
        path = str(path)
        h = read_primary(path)
        info = self._file_info(path, h, None)
        rv = rv_kms if math.isfinite(rv_kms) else info["rv"]
        if self.frame == "rest" and not math.isfinite(rv):
            raise AdapterError(path, "no radial velocity for this file: cannot shift it to the rest frame for a "
                                     "rest-frame model (read_file's rv_kms gives one; or ingest the files with "
                                     "--option catalog=PATH, a catalogue with their RVs, and predict the store; or "
                                     "use a model trained in the heliocentric frame, --option frame=heliocentric)")
        nan = [math.nan] * len(self.schema)
        row = {"files": [path], "keys": [info["key"]], "rv": [rv], "designations": [info["desig"]], "gaia": 0,
               "ra": info["ra"], "dec": info["dec"], "planid": info["planid"], "labels": nan, "label_err": nan,
               "label_source": ""}
        return self.read(WorkUnit(path, path, info["desig"] or Path(path).name, row))

    # ---- reading ---------------------------------------------------------------------------
    def read(self, unit: WorkUnit) -> StarRecord:
        return build_record(self, unit)

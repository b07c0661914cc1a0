"""SDSS-V Milky Way Mapper adapter: astra mwmVisit (visits) + mwmStar (coadd) files and an astraAllStar
summary (labels) -> StarRecords of one instrument (formats.md section 2; README.md beside this file).

Layout read (as astra writes it under $MWM_ASTRA/{v_astra}/): ``spectra/visit/{g1}/{g2}/mwmVisit-{v}-{sdss_id}.fits``,
``spectra/star/{g1}/{g2}/mwmStar-{v}-{sdss_id}.fits``, ``summary/astraAllStar{Pipeline}-{v}.fits[.gz]``; the
files are found anywhere below SOURCE, the summary in SOURCE or SOURCE/summary.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pairspec.surveys.apogee.bits import bits_value
from pairspec.surveys.base import (
    AdapterError,
    Discovery,
    Skip,
    StarRecord,
    WorkUnit,
    recompute_snr,
)
from pairspec.surveys.sdssv import layout as L
from pairspec.surveys.sdssv.mwmfile import primary_counts, read_mwm
from pairspec.surveys.sdssv.visits import (
    clean_spectrum,
    duplicate_visits,
    to_rest_frame,
)

_COMMON = ("flux", "ivar", "pixel_flags", "snr", "telescope", "release", "mjd")
VISIT_COLUMNS = {"apogee": _COMMON + ("in_stack", "fiber", "plate", "field", "apred", "spectrum_flags", "v_rel",
                                      "v_rad", "bc"),
                 "boss": _COMMON + ("in_stack", "fieldid", "catalogid", "run2d", "xcsao_v_rad", "zwarning_flags")}
STAR_COLUMNS = ("flux", "ivar", "pixel_flags", "snr", "telescope", "release", "n_visits")
SITE_CHOICES = ("best", "apo", "lco")
NOT_IN_STACK = ("drop", "shift")


def _f(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _i(value, default: int = -1) -> int:
    v = _f(value)
    return int(v) if math.isfinite(v) else default


class SdssvAdapter:
    """SurveyAdapter for SDSS-V MWM (astra) files; one store holds one instrument's grid.

    instrument: "apogee" (8575-px apStar grid, DR17 labels; default) or "boss" (4648 px).
    labels: names from layout.FULL_SCHEMAS (default teff, logg, fe_h, mg_fe | BOSS: teff, logg, fe_h).
    pipeline: which astraAllStar{pipeline} file gives labels (default ASPCAP | BossNet); summary: its path.
    site: "best" (the observatory with more usable visits), "apo" or "lco": visits of two observatories are
    never mixed (different LSFs). not_in_stack: "drop" visits astra did not rest-frame (default) or "shift"
    them by their own RV. bad_bits / strict: pixel bits that set ivar = 0 (DR17 policy | SPPIXMASK 18, 22, 24).
    drop_bad_rv: drop APOGEE visits flagged RV_FAIL / BAD_RV_COMBINATION. require_labels: skip stars without a
    summary row.
    """

    name = "sdssv"
    location_options = ("summary",)  # where inputs are: may differ between ingests into one store
    star_flag_bits = L.STAR_FLAG_NAMES

    @staticmethod
    def visit_fitter(instrument="apogee"):
        """The visit-level baseline: for APOGEE spectra (DR17's grid, pixel bits and emulator) the APOGEE
        emulator fit; BOSS spectra have no emulator here (None)."""
        if str(instrument).lower() != "apogee":
            return None
        from pairspec.surveys.apogee.fit import EmulatorFit

        return EmulatorFit()

    def __init__(self, instrument="apogee", labels=None, pipeline=None, summary=None, site="best",
                 not_in_stack="drop", bad_bits=None, strict=False, drop_bad_rv=True, require_labels=False):
        instrument = str(instrument).lower()
        if instrument not in L.INSTRUMENTS:
            raise ValueError(f"instrument={instrument!r}; choose one of {L.INSTRUMENTS}")
        if site not in SITE_CHOICES:
            raise ValueError(f"site={site!r}; choose one of {SITE_CHOICES}")
        if not_in_stack not in NOT_IN_STACK:
            raise ValueError(f"not_in_stack={not_in_stack!r}; choose one of {NOT_IN_STACK}")
        names = list(labels) if labels else list(L.DEFAULT_LABELS[instrument])
        try:
            self.schema = L.FULL_SCHEMAS[instrument].subset(names)
        except KeyError as err:
            raise ValueError(str(err.args[0])) from err
        self.instrument, self.release = instrument, f"mwm-{instrument}"
        self.grid = L.GRIDS[instrument]
        self.sources = {n: L.SOURCES[instrument][n] for n in names}
        self.summary = None if summary is None else str(summary)
        named = _pipeline_of(self.summary)  # a summary file says whose labels it holds: astraAllStar<pipeline>-...
        if pipeline and named and str(pipeline).lower() != named.lower():
            raise ValueError(f"summary={self.summary} is an astraAllStar{named} file, but pipeline={pipeline}")
        self.pipeline = str(pipeline or named or L.DEFAULT_PIPELINES[instrument])
        self.site, self.not_in_stack = site, not_in_stack
        bits = set(L.BAD_BITS[instrument] if bad_bits is None else bad_bits)
        if strict:
            bits |= L.STRICT_BITS[instrument]
        self.bad_bits, self.bad_mask = tuple(sorted(bits)), bits_value(bits)
        self.strict, self.drop_bad_rv, self.require_labels = bool(strict), bool(drop_bad_rv), bool(require_labels)

    def resolved_options(self) -> dict:
        """The reading options as this adapter resolved them (ingest compares these between ingests into one
        store: a summary of another pipeline, or instrument=BOSS against boss, are what they resolve to)."""
        return {"instrument": self.instrument, "pipeline": self.pipeline}

    # ---- discovery ---------------------------------------------------------------------------
    def discover(self, source) -> Discovery:
        from pairspec.surveys.sdssv.summary import find_summary, read_summary

        root = Path(source)
        if not root.is_dir():
            raise AdapterError(str(root), "no such directory (give the astra root holding spectra/ and summary/)")
        table = read_summary(find_summary(root, self.pipeline, self.summary), self.instrument, self.sources,
                             self.pipeline)
        skipped: list[Skip] = []
        visits = self._index(root, "mwmVisit", skipped)
        if not visits:  # said once, not as one "summary row but no mwmVisit file" per row
            raise AdapterError(str(root), "no mwmVisit-*.fits[.gz] files under this folder (astra's layout: "
                                          "spectra/visit/...; give the astra root)")
        stars = self._index(root, "mwmStar", [])
        count_key = f"N_{self.instrument.upper()}"
        units = []
        for sdss_id, files in sorted(visits.items()):
            (v_astra, path), *others = files
            sid = str(sdss_id)
            for _, other in others:
                skipped.append(Skip(str(other), f"duplicate: sdss_id {sid} again; kept {path} (newest v_astra)", sid))
            try:
                counts = primary_counts(str(path))
            except AdapterError as err:
                skipped.append(Skip(err.path, err.problem, sid))
                continue
            if count_key in counts and not counts[count_key]:
                skipped.append(Skip(str(path), f"no {self.instrument.upper()} spectra ({count_key} = "
                                               f"{counts[count_key]} in the primary header)", sid))
                continue
            rows = table.rows_for(sdss_id)
            if not rows and self.require_labels:
                skipped.append(Skip(str(path), f"no row for sdss_id {sid} in {table.path}", sid))
                continue
            star = dict(stars.get(sdss_id, ()))
            star_path = star.get(v_astra) or (stars[sdss_id][0][1] if sdss_id in stars else "")
            row = {"mwmstar": str(star_path), "summary": rows, "summary_path": table.path,
                   "missing_labels": list(table.missing)}
            units.append(WorkUnit(path.relative_to(root).as_posix(), str(path), sid, row))
        for sdss_id in sorted(set(table.index) - set(visits)):
            skipped.append(Skip(table.path, f"summary row(s) of sdss_id {sdss_id} but no mwmVisit file under "
                                            f"{root}", str(sdss_id)))
        return Discovery(units=sorted(units, key=lambda u: u.unit_id), skipped=skipped)

    @staticmethod
    def _index(root: Path, kind: str, skipped: list) -> dict[int, list]:
        """sdss_id -> [(v_astra, path)] of every `kind` file below root, newest v_astra first."""
        found: dict[int, list] = {}
        for pattern in (f"{kind}-*.fits", f"{kind}-*.fits.gz"):
            for p in root.rglob(pattern):
                parsed = L.parse_mwm_name(p.name)
                if parsed is None:
                    skipped.append(Skip(str(p), f"not an astra file name ({kind}-<v_astra>-<sdss_id>.fits)"))
                    continue
                found.setdefault(parsed[2], []).append((parsed[1], p))
        for files in found.values():
            files.sort(key=lambda f: (L.version_key(f[0]), str(f[1])), reverse=True)
        return found

    # ---- hooks of the survey registry ----------------------------------------------------------
    @classmethod
    def can_read(cls, path) -> bool:
        """An mwmVisit file (by name; the reader checks the content)."""
        parsed = L.parse_mwm_name(Path(str(path)).name)
        return parsed is not None and parsed[0] == "mwmVisit"

    @staticmethod
    def file_hint(path) -> str | None:
        """Why predict cannot take a file `can_read` refused, when its name says what it is."""
        parsed = L.parse_mwm_name(Path(str(path)).name)
        if parsed is not None and parsed[0] == "mwmStar":
            return ("an SDSS-V mwmStar file (a star's coadd); predict reads mwmVisit files, which hold the visits "
                    "(the mwmStar beside one in astra's layout is read with it)")
        if Path(str(path)).name.lower().startswith("astraallstar"):
            return "an astra summary file, not spectra; predict reads mwmVisit files (ingest reads the summary)"
        return None

    def read_file(self, path) -> StarRecord:
        """A lone mwmVisit file (its mwmStar beside it in astra's layout if there; no summary: labels NaN).
        No summary was read, so NO_SUMMARY_ROW (a star the summary lacks) is not set: it would say that of
        every star given to predict."""
        rec = self._read(str(path), None, str(path))
        rec.star_flags = int(rec.star_flags) & ~L.STAR_NO_SUMMARY_ROW
        return rec

    # ---- reading -------------------------------------------------------------------------------
    def read(self, unit: WorkUnit) -> StarRecord:
        return self._read(unit.path, unit.row, unit.unit_id)

    def _read(self, path: str, row, source: str) -> StarRecord:
        primary, hdus = read_mwm(path, self.instrument, self.grid, VISIT_COLUMNS[self.instrument])
        parsed = L.parse_mwm_name(Path(path).name)
        sdss_id = parsed[2] if parsed else _i(primary.get("SDSS_ID"))
        if parsed and primary.get("SDSS_ID") is not None and _i(primary["SDSS_ID"]) != sdss_id:
            raise AdapterError(path, f"header SDSS_ID = {primary['SDSS_ID']} but the file name says {sdss_id}")
        names = " and ".join(h.name for h in hdus.values())
        filled = [s for s, h in hdus.items() if h.n_rows]
        if not filled:
            raise AdapterError(path, f"no {self.instrument.upper()} spectra: HDUs {names} have 0 rows")
        if self.site != "best" and self.site not in filled:
            raise AdapterError(path, f"HDU {hdus[self.site].name} has 0 rows (option site={self.site})")
        results = {s: self._visits(path, hdus[s]) for s in ([self.site] if self.site != "best" else filled)}
        usable = {s: r for s, r in results.items() if r[0]}
        if not usable:
            reasons = [d for r in results.values() for d in r[1]]
            raise AdapterError(path, f"no usable visit in {names}: " + "; ".join(reasons[:4])
                               + ("; ..." if len(reasons) > 4 else ""))
        site = max(usable, key=lambda s: (len(usable[s][0]), float(np.nansum([v["snr_survey"] for v in usable[s][0]]))))
        kept, dropped, shifted = results[site]
        row = row or {}
        coadd_flux, coadd_ivar, coadd_mask, coadd_snr, coadd_note = self._coadd(path, row, site, sdss_id)
        labels, label_err, label_flags, star_flags, label_meta = self._labels(row, site)
        visit_flux = np.stack([v["flux"] for v in kept])
        visit_ivar = np.stack([v["ivar"] for v in kept])
        telescopes = sorted({v["telescope"] for v in kept if v["telescope"]})
        snr = coadd_snr if math.isfinite(coadd_snr) else _f(label_meta.get("summary_snr"))
        meta = {
            "ra": _f(primary.get("RA")), "dec": _f(primary.get("DEC")), "telescope": "+".join(telescopes) or site,
            "field": next((v["field"] for v in kept if v["field"]), ""), "sdss_id": int(sdss_id), "site": site,
            "apogee_id": str(primary.get("APOGEEID") or "").strip(), "gaia_dr3_source_id": _i(primary.get("GAIA3_ID")),
            "v_astra": str(primary.get("V_ASTRA") or "").strip(), "instrument": self.instrument,
            "in_stack_column": "in_stack" in hdus[site].columns, "dropped_visits": dropped,
            "shifted_visits": shifted, "coadd": coadd_note,
            "other_site_visits": {s: len(r[0]) for s, r in results.items() if s != site}, **label_meta,
        }
        return StarRecord(
            star_id=str(sdss_id), source=source, labels=labels, label_err=label_err, label_flags=label_flags,
            star_flags=star_flags, coadd_flux=coadd_flux, coadd_ivar=coadd_ivar, coadd_pixmask=coadd_mask,
            visit_flux=visit_flux, visit_ivar=visit_ivar, visit_pixmask=np.stack([v["pixmask"] for v in kept]),
            visit_snr=recompute_snr(visit_flux, visit_ivar),
            visit_snr_survey=np.array([v["snr_survey"] for v in kept], dtype=np.float32),
            visit_mjd=np.array([v["mjd"] for v in kept], dtype=np.float64), visit_id=[v["visit_id"] for v in kept],
            visit_fiber=np.array([v["fiber"] for v in kept], dtype=np.int32), snr=snr, meta=meta,
        )

    def _visit_ids(self, hdu) -> tuple[list[str], list[tuple]]:
        """Per row: a visit id in the survey's words and the key of its exposure (duplicates share it)."""
        n, ids, keys = hdu.n_rows, [], []
        tel, mjd = hdu.get("telescope", ""), hdu.get("mjd", -1)
        for i in range(n):
            t, m = str(tel[i] or "").strip(), _i(mjd[i])
            if self.instrument == "apogee":
                apred, plate, fiber = (str(hdu.get(c, "")[i] or "").strip() for c in ("apred", "plate", "fiber"))
                fib = _i(fiber)
                ids.append(f"apVisit-{apred or '?'}-{t or '?'}-{plate or '?'}-{m}-{fib:03d}"
                           if fib >= 0 else f"{hdu.name}[row {i}]")
                keys.append((t or None, m if m >= 0 else None, fib if fib >= 0 else None))
            else:
                field, cat = _i(hdu.get("fieldid", -1)[i]), _i(hdu.get("catalogid", -1)[i])
                ids.append(f"spec-{field:06d}-{m}-{cat}" if field >= 0 and cat >= 0 else f"{hdu.name}[row {i}]")
                keys.append((t or None, m if m >= 0 else None, field if field >= 0 else None))
        return ids, keys

    def _visits(self, path: str, hdu):
        """(kept visits as dicts, dropped 'id: why' strings, ids of visits shifted to the rest frame)."""
        ids, keys = self._visit_ids(hdu)
        snr = np.array([_f(s) for s in hdu.get("snr", np.nan)])
        dups = duplicate_visits(keys, list(hdu.get("release", "")), snr)
        in_stack = hdu.columns.get("in_stack")
        rv_mask = bits_value(L.VISIT_BAD_RV_BITS) if self.instrument == "apogee" and self.drop_bad_rv else 0
        flags = hdu.get("spectrum_flags", 0)
        pixmask = hdu.columns.get("pixel_flags")
        usable = self.grid.usable()
        kept, dropped, shifted = [], [], []
        for i in range(hdu.n_rows):
            why = None
            if i in dups:
                why = f"duplicate of {ids[dups[i]]} (the same exposure, another reduction)"
            elif rv_mask and _i(flags[i], 0) & rv_mask:
                why = f"RV failed (spectrum_flags {_i(flags[i], 0)})"
            mask = pixmask[i] if pixmask is not None else np.zeros(self.grid.npix, dtype=np.int64)
            flux, ivar = hdu.columns["flux"][i], hdu.columns["ivar"][i]
            if why is None and in_stack is not None and not bool(in_stack[i]):
                if self.not_in_stack == "drop":
                    why = "in_stack = False: not in the rest frame"
                else:
                    v = self._observed_velocity(hdu, i)
                    if not math.isfinite(v):
                        why = "in_stack = False and no finite velocity to shift it by"
                    else:
                        f0, v0 = clean_spectrum(flux, ivar, mask, self.bad_mask, np.ones(self.grid.npix, bool))
                        flux, ivar, mask = to_rest_frame(f0, v0, mask, v, self.grid.cdelt1)
                        shifted.append(ids[i])
            if why is None:
                vflux, vivar = clean_spectrum(flux, ivar, mask, self.bad_mask, usable)
                if not np.any(vflux):
                    why = "all-zero row"
                elif not np.any(vivar > 0):
                    why = "every pixel is bad (ivar 0, NaN or flagged)"
            if why is not None:
                dropped.append(f"{hdu.name} {ids[i]}: {why}")
                continue
            kept.append({"flux": vflux, "ivar": vivar, "pixmask": np.asarray(mask, dtype=np.int64),
                         "snr_survey": snr[i], "mjd": float(_i(hdu.get("mjd", -1)[i])), "visit_id": ids[i],
                         "fiber": _i(hdu.get("fiber", -1)[i]), "telescope": str(hdu.get("telescope", "")[i] or ""),
                         "field": str(hdu.get("field", "")[i] or "") if self.instrument == "apogee" else
                         str(_i(hdu.get("fieldid", -1)[i]))})
        return kept, dropped, shifted

    def _observed_velocity(self, hdu, i: int) -> float:
        """The Doppler shift a zero-velocity resampling left in the spectrum (km/s): APOGEE apVisit wavelengths
        are topocentric, so v_rel (= v_rad - bc); BOSS spec wavelengths are barycentric, so xcsao_v_rad."""
        if self.instrument == "boss":
            return _f(hdu.get("xcsao_v_rad", np.nan)[i])
        v = _f(hdu.get("v_rel", np.nan)[i])
        return v if math.isfinite(v) else _f(hdu.get("v_rad", np.nan)[i]) - _f(hdu.get("bc", np.nan)[i])

    def _coadd(self, path: str, row: dict, site: str, sdss_id: int):
        """(flux, ivar, pixmask, snr, note) of the site's coadd in the mwmStar file; zeros + ivar 0 without one."""
        npix = self.grid.npix
        star_path = row.get("mwmstar") if row else None
        if star_path is None:  # a lone file: astra's layout puts the mwmStar at spectra/star/{g1}/{g2}/
            p = Path(path)
            star_path = str(p.parents[3] / "star" / p.parent.parent.name / p.parent.name
                            / p.name.replace("mwmVisit", "mwmStar")) if len(p.parents) > 3 else ""
        none = (np.zeros(npix, np.float32), np.zeros(npix, np.float32), np.zeros(npix, np.int64), math.nan)
        if not star_path or not Path(star_path).is_file():
            return (*none, "none: no mwmStar file")
        _, hdus = read_mwm(star_path, self.instrument, self.grid, STAR_COLUMNS)
        hdu = hdus[site]
        if hdu.n_rows == 0:
            return (*none, f"none: HDU {hdu.name} of {Path(star_path).name} has 0 rows")
        snr = np.array([_f(s) for s in hdu.get("snr", np.nan)])
        rel = [str(r).strip().lower() for r in hdu.get("release", "")]
        k = min(range(hdu.n_rows), key=lambda j: (rel[j] != "sdss5", -(snr[j] if np.isfinite(snr[j]) else -1e9), j))
        mask = hdu.columns["pixel_flags"][k] if "pixel_flags" in hdu.columns else np.zeros(npix, np.int64)
        flux, ivar = clean_spectrum(hdu.columns["flux"][k], hdu.columns["ivar"][k], mask, self.bad_mask,
                                    self.grid.usable())
        return flux, ivar, np.asarray(mask, dtype=np.int64), float(snr[k]), f"{Path(star_path).name} {hdu.name} row {k}"

    def _labels(self, row: dict, site: str):
        """(labels, label_err, label_flags, star_flags, meta) from the star's summary rows: the row of the chosen
        observatory (SDSS-V reduction over DR17, then higher S/N), else another observatory's (said in meta)."""
        k = len(self.schema)
        labels = np.full(k, np.nan, dtype=np.float32)
        err = np.full(k, np.nan, dtype=np.float32)
        flags = np.zeros(k, dtype=np.int64)
        rows = list(row.get("summary") or ())
        meta = {"label_source": "", "label_note": ""}
        if row.get("missing_labels"):
            meta["label_note"] = f"{row.get('summary_path')} lacks the column(s) of {row['missing_labels']}: NaN"
        if not rows:
            meta["label_note"] = (meta["label_note"] + "; " if meta["label_note"] else "") + "no summary row"
            return labels, err, flags, L.STAR_NO_SUMMARY_ROW, meta

        def rank(r):
            s = _f(r.get("snr"))
            return (L.site_of_telescope(r.get("telescope", "")) not in (site, ""),
                    str(r.get("release", "")).lower() != "sdss5", -(s if math.isfinite(s) else -1e9), r["row"])

        best = min(rows, key=rank)
        if L.site_of_telescope(best.get("telescope", "")) not in (site, ""):
            meta["label_note"] = (meta["label_note"] + "; " if meta["label_note"] else "") + \
                f"labels from the {best.get('telescope')} row: no {site} row"
        labels = self.schema.clean(best["labels"])
        err = np.array([_f(e) for e in best["err"]], dtype=np.float32)
        with np.errstate(invalid="ignore"):
            err[~np.isfinite(err) | (err <= 0) | np.isnan(labels)] = np.nan
        flags = np.array(best["flags"], dtype=np.int64)
        warn, bad = bool(best.get("flag_warn")), bool(best.get("flag_bad"))
        if warn:
            flags |= L.LABEL_FLAG_WARN
        if bad:
            labels[:], err[:] = np.nan, np.nan
        meta.update(label_source=f"{Path(str(row.get('summary_path'))).name} row {best['row']}",
                    summary_snr=_f(best.get("snr")), result_flags=_i(best.get("result_flags"), 0),
                    n_summary_rows=len(rows))
        return labels, err, flags, (L.STAR_FLAG_WARN if warn else 0) | (L.STAR_FLAG_BAD if bad else 0), meta


def _pipeline_of(summary) -> str | None:
    """The pipeline an astra summary's file name gives (astraAllStarAstroNN-0.8.1.fits -> AstroNN), or None."""
    import re

    if not summary:
        return None
    match = re.match(r"astraallstar([a-z0-9]+)-", Path(str(summary)).name, re.IGNORECASE)
    return match.group(1) if match else None  # as the name spells it


"""The denoised-spectra store `pairspec predict --denoised` writes (docs/data-model.md)."""

from __future__ import annotations

import numpy as np

from pairspec.grid import LogLinearGrid, grid_from_dict
from pairspec.store.layout import _create, _is_file, _occupied, _zarr


def create_spectra_store(path: str, grid: LogLinearGrid, n_pix: int, attrs: dict | None = None,
                         chunk: int = 256) -> SpectraWriter:
    """A Zarr store of (denoised) spectra: id (spectrum), flux (spectrum, pixel), optionally sigma
    (spectrum, pixel: each pixel's 1-sigma uncertainty, given with the first rows), extra columns."""
    if n_pix != grid.npix:
        raise ValueError(f"{path}: n_pix {n_pix} does not match the grid's {grid.npix} pixels")
    refuse_to_replace(path)
    g = _zarr().open_group(path, mode="w")
    wave = g.create_array("wavelength", shape=(n_pix,), dtype="f8", chunks=(n_pix,), dimension_names=("pixel",))
    wave[:] = grid.wavelength()
    _create(g, "id", str, (0,), chunk, ("spectrum",))
    _create(g, "flux", "f4", (0, n_pix), chunk, ("spectrum", "pixel"))
    # one write of the root metadata (zarr's attrs.update writes once per key), the version marker with it
    g.update_attributes({"grid": grid.to_dict(), "n": 0, "chunk": chunk, **(attrs or {}), "pairspec_spectra_version": 1})
    return SpectraWriter(path, g)


def refuse_to_replace(path: str) -> None:
    """Raise ValueError unless `path` is free or holds an earlier spectra store (which is then replaced):
    a pair store, another Zarr group, a file or a folder with anything in it is never overwritten."""
    if not _occupied(path):
        return
    try:
        existing = _zarr().open_group(path, mode="r")
    except Exception:  # noqa: BLE001 - not a Zarr group at all (a file, a folder of other things)
        existing = None
    if existing is not None and "pairspec_spectra_version" in existing.attrs:
        return
    what = ("a pair store" if existing is not None and "pairspec_store_version" in existing.attrs
            else "a Zarr group that is not a spectra store" if existing is not None
            else "a file" if _is_file(path) else "a folder that is not empty")
    raise ValueError(f"{path}: {what} is already here; refusing to overwrite it with denoised spectra "
                     "(give a new path, or remove it first)")


class SpectraWriter:
    def __init__(self, path: str, group):
        self.path, self._g, self.n = path, group, int(group.attrs["n"])

    def append(self, ids: list[str], flux: np.ndarray, extra: dict[str, np.ndarray] | None = None,
               sigma: np.ndarray | None = None) -> None:
        """Add rows; `sigma` (same shape as flux) is every pixel's uncertainty: give it with every append
        or with none (a store whose rows have it in part would be read wrongly)."""
        flux = np.asarray(flux, dtype=np.float32)
        if flux.shape != (len(ids), self._g["flux"].shape[1]):
            raise ValueError(f"{self.path}: flux shape {flux.shape} for {len(ids)} ids")
        columns = {"id": np.array([str(i) for i in ids], dtype=object), "flux": flux}
        has_sigma = "sigma" in self._g
        if (sigma is None and has_sigma) or (sigma is not None and not has_sigma and self.n):
            raise ValueError(f"{self.path}: sigma given for some rows and not others (after {self.n} rows)")
        if sigma is not None:
            sigma = np.asarray(sigma, dtype=np.float32)
            if sigma.shape != flux.shape:
                raise ValueError(f"{self.path}: sigma shape {sigma.shape} differs from flux {flux.shape}")
            if "sigma" not in self._g:
                _create(self._g, "sigma", "f4", (0, flux.shape[1]), int(self._g.attrs["chunk"]), ("spectrum", "pixel"))
            columns["sigma"] = sigma
        for name, v in (extra or {}).items():
            v = np.asarray(v)
            if v.shape != (len(ids),):
                raise ValueError(f"{self.path}: extra column {name} has shape {v.shape}, expected ({len(ids)},)")
            if name not in self._g:
                if self.n:
                    raise ValueError(f"{self.path}: extra column {name} appeared after {self.n} rows")
                dtype = str if v.dtype.kind in "OUS" else v.dtype
                _create(self._g, name, dtype, (0,), int(self._g.attrs["chunk"]), ("spectrum",))
            columns[name] = np.array(v, dtype=object) if v.dtype.kind in "OUS" else v
        end = self.n + len(ids)
        for name, v in columns.items():
            arr = self._g[name]
            arr.resize((end,) + arr.shape[1:])
            arr[self.n:end] = v
        self._g.attrs["n"] = end  # commit after the data, as in the pair store
        self.n = end

    def close(self) -> None:
        """Nothing is buffered (every append commits); kept so callers can use it like a file."""


def open_spectra(path: str):
    """The Zarr group of a spectra store at `path`, or None when `path` holds no spectra store."""
    if not _occupied(path) or _is_file(path):
        return None
    try:
        group = _zarr().open_group(path, mode="r")
    except Exception:  # noqa: BLE001 - not a Zarr group
        return None
    return group if "pairspec_spectra_version" in group.attrs else None


def spectra_problems(group) -> list[str]:
    """What is wrong with a spectra store: arrays shorter than its committed rows, a pixel axis other than
    its grid's, a sigma that is negative. (A row of NaN is a visit without a usable pixel: allowed.)"""
    n, problems = int(group.attrs.get("n", 0)), []
    try:
        npix = int(grid_from_dict(group.attrs["grid"]).npix)
    except (KeyError, TypeError, ValueError) as err:
        return [f"no readable grid in the attributes ({type(err).__name__}: {err})"]
    names = [name for name, _ in group.arrays()]
    for name in ("id", "flux", "wavelength"):
        if name not in names:
            problems.append(f"{name} is missing")
    for name, arr in group.arrays():
        if name == "wavelength":
            if arr.shape != (npix,):
                problems.append(f"wavelength has shape {arr.shape}, the grid has {npix} pixels")
            continue
        if arr.shape[0] < n:
            problems.append(f"{name} has {arr.shape[0]} rows, {n} committed")
        if name in ("flux", "sigma") and arr.shape[1:] != (npix,):
            problems.append(f"{name} has row shape {arr.shape[1:]}, the grid has {npix} pixels")
    if "sigma" in names and n and not problems:
        sigma = np.asarray(group["sigma"][:n])
        if (sigma < 0).any():
            problems.append(f"sigma < 0 in rows {np.flatnonzero((sigma < 0).any(axis=1))[:5].tolist()}")
    return problems


def describe_spectra(path: str, group) -> dict:
    """`pairspec info` of a spectra store: what it holds and where it came from."""
    attrs = dict(group.attrs)
    grid = grid_from_dict(attrs["grid"])
    names = sorted(name for name, _ in group.arrays())
    extra = [k for k in names if k not in ("id", "flux", "sigma", "wavelength")]
    problems = spectra_problems(group)
    lines = [f"spectra store {path} ({attrs.get('kind', 'spectra')}; pairspec predict --denoised)",
             f"  {int(attrs.get('n', 0))} spectra; grid {grid.describe()}",
             "  per-pixel uncertainty (sigma): " + ("yes" if "sigma" in names else "no"),
             "  columns beside id and flux: " + (", ".join(extra) if extra else "none")]
    if attrs.get("checkpoint"):
        lines.append(f"  from checkpoint {attrs['checkpoint']}")
    lines.append("  valid: yes" if not problems else "  PROBLEMS:\n    " + "\n    ".join(problems))
    return {"kind": "spectra store", "path": str(path), "n_spectra": int(attrs.get("n", 0)), "n_pix": grid.npix,
            "sigma": "sigma" in names, "columns": names, "attrs": {k: v for k, v in attrs.items() if k != "grid"},
            "problems": problems, "text": "\n".join(lines)}

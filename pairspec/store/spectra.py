"""The denoised-spectra store `pairspec predict --denoised` writes (docs/data-model.md)."""

from __future__ import annotations

import numpy as np

from pairspec.grid import LogLinearGrid
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

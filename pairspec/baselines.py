"""Baselines TSN is compared against.

- `EmulatorFit`: the "visit-level pipeline" (ASPCAP run on a single visit): a chi-square fit of the
  Kurucz emulator to each continuum-normalised visit, batched Levenberg-Marquardt in torch.
- `crlb`: the Cramer-Rao bound of a visit, from the emulator's Jacobian and the visit's ivar.
- `baseline_recipes`: the direct-regression network and the TSN ablations, as recipe variants that
  train.train runs like any other recipe.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pairspec.emulator import CHEB_DEGREE, CHIPS_7214, load_npz, chip_x

# Starting points (teff, logg, fe_h, alpha_fe): a red-clump giant, a solar-type dwarf, a metal-poor giant.
DEFAULT_STARTS = ((4750.0, 2.5, -0.2, 0.05), (5700.0, 4.3, -0.1, 0.0), (4400.0, 1.6, -0.8, 0.25))


def _load_bool(name: str, key: str) -> np.ndarray:
    return load_npz(name)[key].astype(bool)


def _chebyshev_design(n: int) -> np.ndarray:
    return np.polynomial.chebyshev.chebvander(chip_x(n), CHEB_DEGREE)  # (n, degree + 1), as the emulator


def normalize_like_emulator(flux, ivar, cont_pixels=None):
    """Continuum-normalise spectra on the 7214 grid exactly as the emulator normalises its flux.

    Per chip, a degree-4 Chebyshev in pixel index fitted to the Cannon continuum pixels with
    weights 1/sigma; returns (norm_flux, norm_ivar), float64 (N, 7214). A chip with fewer than 10
    good continuum pixels gets ivar 0 (its continuum is unknown).
    """
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
    if cont_pixels is None:
        cont_pixels = _load_bool("cannon_cont_pixels_apogee.npz", "pixels_cannon")
    norm_flux = np.ones_like(flux)
    norm_ivar = np.zeros_like(ivar)
    for a, b in CHIPS_7214:
        V = _chebyshev_design(b - a)
        cp = cont_pixels[a:b]
        Vc = V[cp]
        w = np.sqrt(np.clip(ivar[:, a:b][:, cp], 0.0, None))  # 1/sigma weights, as the payne recipe
        A = np.einsum("pi,np,pj->nij", Vc, w, Vc) + 1e-10 * np.eye(Vc.shape[1])
        rhs = np.einsum("pi,np->ni", Vc, w * flux[:, a:b][:, cp])
        coef = np.linalg.solve(A, rhs[..., None])[..., 0]
        cont = coef @ V.T
        ok = ((w > 0).sum(axis=1) >= 10)[:, None] & (cont > 0)
        safe = np.where(ok, cont, 1.0)
        norm_flux[:, a:b] = np.where(ok, flux[:, a:b] / safe, 1.0)
        norm_ivar[:, a:b] = np.where(ok, ivar[:, a:b] * safe**2, 0.0)
    return norm_flux, norm_ivar


def _to_emulator_grid(emulator, arr: np.ndarray) -> np.ndarray:
    arr = np.atleast_2d(arr)
    n_emu = len(emulator.apstar_index)
    if arr.shape[1] == n_emu:
        return arr
    if arr.shape[1] > int(np.max(emulator.apstar_index)):
        return arr[:, emulator.apstar_index]
    raise ValueError(f"spectra have {arr.shape[1]} pixels; expected {n_emu} (emulator grid) or the apStar grid")


def _model_mask(emulator) -> np.ndarray:
    """True = pixel the Kurucz models get wrong by > 2 % (excluded from fits)."""
    mask = getattr(emulator, "model_mask", None)
    if mask is None:
        mask = _load_bool("apogee_mask.npz", "apogee_mask")
    return np.asarray(mask, dtype=bool)


class _Scaled:
    """Labels <-> scaled s = (x - x_min)/(x_max - x_min) - 0.5, the network's own input space."""

    def __init__(self, emulator):
        self.lo = np.asarray(emulator.x_min, dtype=np.float64)
        self.span = np.asarray(emulator.x_max, dtype=np.float64) - self.lo

    def to_s(self, x):
        return (np.asarray(x, dtype=np.float64) - self.lo) / self.span - 0.5

    def to_x(self, s):
        return (np.asarray(s) + 0.5) * self.span + self.lo


def _model_and_jacobian(emulator, scaler: _Scaled, s, step: float = 1e-4):
    """Model flux (N, P) and Jacobian wrt scaled labels (N, P, 4) by forward differences.

    Differences, not autograd, so any torch_normalized works (no graph or jvp support needed);
    one-sided in float64 costs 5 network passes instead of 9, and a 1e-4 step (~0.35 K in Teff)
    keeps the truncation error far below the noise.
    """
    import torch

    lo, span = torch.tensor(scaler.lo), torch.tensor(scaler.span)
    s = torch.as_tensor(s, dtype=torch.float64)
    n, k = s.shape
    shifts = torch.eye(k, dtype=torch.float64) * step
    batch = torch.cat([s, (s[:, None, :] + shifts).reshape(-1, k)])
    with torch.no_grad():
        out = emulator.torch_normalized((batch + 0.5) * span + lo).to(torch.float64)
    model = out[:n]
    jac = ((out[n:].reshape(n, k, -1) - model[:, None, :]) / step).transpose(1, 2)
    return model, jac


def crlb(emulator, labels, ivar_norm, exclude_model_mask: bool = True) -> np.ndarray:
    """Cramer-Rao bound (N, 4) in label units: sqrt(diag((J^T diag(ivar) J)^-1)).

    `labels` (N, 4) teff, logg, fe_h, alpha_fe; `ivar_norm` the ivar of the continuum-normalised
    flux on the emulator grid (7214) or the apStar grid. Known continuum, no prior: the floor an
    unbiased estimator can reach.
    """
    labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    w = _to_emulator_grid(emulator, np.asarray(ivar_norm, dtype=np.float64))
    if exclude_model_mask:
        w = np.where(_model_mask(emulator)[None, :], 0.0, w)
    sc = _Scaled(emulator)
    _, jac = _model_and_jacobian(emulator, sc, sc.to_s(labels))
    jac = jac.numpy() / sc.span  # d flux / d label (physical units)
    fisher = np.einsum("npi,np,npj->nij", jac, np.broadcast_to(w, jac.shape[:2]), jac)
    return np.sqrt(np.diagonal(np.linalg.inv(fisher), axis1=1, axis2=2))


class EmulatorFit:
    """Chi-square fit of the Kurucz emulator to single visits (the visit-level pipeline baseline).

    Each visit is normalised like the emulator, fitted from every start in `starts` by batched
    Levenberg-Marquardt on scaled labels kept inside the network's training box, and the lowest
    chi^2 wins. Errors come from (J^T W J)^-1 at the optimum.
    """

    label_names = ("teff", "logg", "fe_h", "alpha_fe")

    def __init__(self, emulator=None, starts=DEFAULT_STARTS, n_iter: int = 30, chunk: int = 128):
        if emulator is None:
            from pairspec.emulator import KuruczEmulator

            emulator = KuruczEmulator.load()
        self.emulator = emulator
        self.starts = np.asarray(starts, dtype=np.float64)
        self.n_iter = n_iter
        self.chunk = chunk
        self.scaler = _Scaled(emulator)
        self.model_mask = _model_mask(emulator)

    def fit(self, flux, ivar, normalized: bool = False) -> dict:
        """Fit (N, npix) visits on the apStar (8575) or emulator (7214) grid.

        `normalized=True` skips the continuum step (spectra already divided by the emulator-style
        continuum). Returns dict(labels (N,4), sigma (N,4), chi2 (N,) per good pixel, n_pix (N,)).
        """
        flux = _to_emulator_grid(self.emulator, np.asarray(flux, dtype=np.float64))
        ivar = _to_emulator_grid(self.emulator, np.asarray(ivar, dtype=np.float64))
        if not normalized:
            flux, ivar = normalize_like_emulator(flux, ivar)
        ivar = np.where(self.model_mask[None, :] | ~np.isfinite(flux), 0.0, ivar)
        flux = np.where(np.isfinite(flux), flux, 1.0)
        out = {k: [] for k in ("labels", "sigma", "chi2", "n_pix")}
        for a in range(0, flux.shape[0], self.chunk):
            part = self._fit_chunk(flux[a : a + self.chunk], ivar[a : a + self.chunk])
            for k in out:
                out[k].append(part[k])
        return {k: np.concatenate(v) for k, v in out.items()}

    def _fit_chunk(self, flux: np.ndarray, ivar: np.ndarray) -> dict:
        import torch

        n, n_start = flux.shape[0], len(self.starts)
        d = torch.as_tensor(np.repeat(flux, n_start, axis=0))
        w = torch.as_tensor(np.repeat(ivar, n_start, axis=0))
        s = torch.as_tensor(np.tile(self.scaler.to_s(self.starts), (n, 1)))
        lam = torch.full((s.shape[0],), 1e-2, dtype=torch.float64)
        model, jac = _model_and_jacobian(self.emulator, self.scaler, s)
        chi2 = ((d - model) ** 2 * w).sum(1)
        for it in range(self.n_iter):
            chi2_before = chi2
            jw = jac * w[..., None]
            A = jac.transpose(1, 2) @ jw
            g = (jw * (d - model)[..., None]).sum(1)
            damp = lam[:, None, None] * torch.diag_embed(torch.diagonal(A, dim1=1, dim2=2) + 1e-9)
            step = torch.linalg.solve(A + damp, g)
            s_new = (s + step).clamp(-0.5, 0.5)
            model_new, jac_new = _model_and_jacobian(self.emulator, self.scaler, s_new)
            chi2_new = ((d - model_new) ** 2 * w).sum(1)
            better = chi2_new < chi2
            b1, b2 = better[:, None], better[:, None, None]
            s = torch.where(b1, s_new, s)
            model = torch.where(b1, model_new, model)
            jac = torch.where(b2, jac_new, jac)
            chi2 = torch.where(better, chi2_new, chi2)
            lam = torch.where(better, lam * 0.3, lam * 10.0).clamp(1e-6, 1e6)
            # converged everywhere: no start moved chi^2 by more than 1e-3 this step
            if it >= 3 and float((chi2_before - chi2).max()) < 1e-3:
                break
        best = chi2.reshape(n, n_start).argmin(1)
        rows = torch.arange(n) * n_start + best
        jac_x = jac[rows] / torch.tensor(self.scaler.span)
        A = jac_x.transpose(1, 2) @ (jac_x * w[rows][..., None])
        cov = torch.linalg.pinv(A)
        n_pix = (w[rows] > 0).sum(1)
        return {
            "labels": self.scaler.to_x(s[rows].numpy()),
            "sigma": np.sqrt(np.clip(torch.diagonal(cov, dim1=1, dim2=2).numpy(), 0.0, None)),
            "chi2": (chi2[rows] / n_pix.clamp(min=1)).numpy(),
            "n_pix": n_pix.numpy(),
        }


# --- recipe variants trained through train.train ---------------------------------------------


def _replace_path(obj, path: str, value):
    """dataclasses.replace along a dotted path ("train.recon_weight") of frozen dataclasses."""
    head, _, rest = path.partition(".")
    if not hasattr(obj, head):
        raise AttributeError(f"config has no field {path!r} ({type(obj).__name__})")
    new = _replace_path(getattr(obj, head), rest, value) if rest else value
    return dataclasses.replace(obj, **{head: new})


def _rename(cfg, suffix: str):
    """Give a variant its own run name and output folder, derived from the base's."""
    from pathlib import Path

    for name_field in ("name", "run.name"):
        try:
            base = _get_path(cfg, name_field)
        except AttributeError:
            continue
        cfg = _replace_path(cfg, name_field, f"{base}-{suffix}")
        break
    for dir_field in ("out_dir", "run.out_dir", "train.out_dir"):
        try:
            base = _get_path(cfg, dir_field)
        except AttributeError:
            continue
        if base:  # "" means "derived from the run name", which was renamed above
            path = Path(base)
            cfg = _replace_path(cfg, dir_field, str(path.parent / f"{path.name}-{suffix}"))
        break
    return cfg


def _get_path(obj, path: str):
    for part in path.split("."):
        if not hasattr(obj, part):
            raise AttributeError(path)
        obj = getattr(obj, part)
    return obj


def baseline_recipes(base_config) -> dict:
    """Recipe variants of a TSN RunConfig: {"direct", "tsn_no_recon", "tsn_coadd_target"}.

    direct: regression from the visit with no twin target and no reconstruction (astroNN-style);
    tsn_no_recon: TSN without the reconstruction loss; tsn_coadd_target: TSN whose target is the
    survey's combined spectrum (contains the input visit, so its noise is correlated).
    """
    variants = {
        "direct": {"data.mode": "direct", "train.recon_weight": 0.0},
        "tsn_no_recon": {"train.recon_weight": 0.0},
        "tsn_coadd_target": {"data.mode": "coadd"},
    }
    out = {}
    for name, changes in variants.items():
        cfg = base_config
        for path, value in changes.items():
            cfg = _replace_path(cfg, path, value)
        out[name] = _rename(cfg, name.replace("_", "-"))
    return out

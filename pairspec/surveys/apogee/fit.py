"""APOGEE's visit-level baseline: the Kurucz emulator fitted to single visits, and the Cramer-Rao bound.

- `EmulatorFit`: the "visit-level pipeline" (ASPCAP run on a single visit): a chi-square fit of the
  Kurucz emulator to each continuum-normalised visit, batched Levenberg-Marquardt in torch.
- `crlb`: the Cramer-Rao bound of a visit, from the emulator's Jacobian and the visit's ivar.
"""

from __future__ import annotations

import numpy as np

from pairspec.surveys.apogee.emulator import CHEB_DEGREE, CHIPS_7214, chip_x, load_npz

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


# APOGEE_PIXMASK bits a careful visit-level fit drops even where the training mask keeps the pixel:
# the DRP's bad bits (0-7, 14), persistence (9-11) and significant sky lines (12), as ASPCAP's strict mask.
FIT_MASK_BITS = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14)


class EmulatorFit:
    """Chi-square fit of the Kurucz emulator to single visits (the visit-level pipeline baseline).

    As careful as a pipeline: pixels with any of `mask_bits` set (when the survey's pixel mask is given)
    and the emulator's model mask are left out; each visit is normalised like the emulator, fitted from
    every start in `starts` by batched Levenberg-Marquardt on scaled labels kept inside the network's
    training box (the lowest chi^2 wins); then, `passes` times, pixels more than `clip` sigma from the
    model (unflagged cosmic rays, sky residuals) are dropped, the continuum is refitted as a per-chip
    Chebyshev polynomial of flux / model over every good pixel (not only the Cannon continuum pixels,
    so the absorption lines no longer bias it), and the labels are refitted from where they were.
    Errors come from (J^T W J)^-1 at the optimum, times sqrt(reduced chi^2) where that exceeds 1.
    """

    label_names = ("teff", "logg", "fe_h", "alpha_fe")
    # what each fitted label is compared with in a catalogue: the emulator's [alpha/Fe] stands for [Mg/Fe]
    # (Mg is an alpha element; the paper's comparison, and the simulator's truth has mg_fe = alpha_fe)
    catalogue_names = ("teff", "logg", "fe_h", "mg_fe")

    def __init__(self, emulator=None, starts=DEFAULT_STARTS, n_iter: int = 30, chunk: int = 128,
                 mask_bits=FIT_MASK_BITS, clip: float = 4.0, passes: int = 2):
        if emulator is None:
            from pairspec.surveys.apogee.emulator import KuruczEmulator

            emulator = KuruczEmulator.load()
        self.emulator = emulator
        self.starts = np.asarray(starts, dtype=np.float64)
        self.n_iter = n_iter
        self.chunk = chunk
        self.scaler = _Scaled(emulator)
        self.model_mask = _model_mask(emulator)
        self.mask_value = sum(1 << int(b) for b in mask_bits)
        self.clip, self.passes = float(clip), int(passes)

    def fit(self, flux, ivar, normalized: bool = False, pixmask=None) -> dict:
        """Fit (N, npix) visits on the apStar (8575) or emulator (7214) grid.

        `pixmask` (N, npix) the survey's pixel bits on the same grid (None: ivar alone says what is bad);
        `normalized=True` skips the continuum steps (spectra already divided by the emulator-style
        continuum). Returns dict(labels (N,4), sigma (N,4), chi2 (N,) per good pixel, n_pix (N,),
        n_clipped (N,) pixels dropped as outliers).
        """
        flux = _to_emulator_grid(self.emulator, np.asarray(flux, dtype=np.float64))
        ivar = _to_emulator_grid(self.emulator, np.asarray(ivar, dtype=np.float64))
        if pixmask is not None:
            pixmask = _to_emulator_grid(self.emulator, np.asarray(pixmask, dtype=np.int64))
            ivar = np.where((pixmask & self.mask_value) != 0, 0.0, ivar)
        raw_flux, raw_ivar = flux, ivar
        if not normalized:
            flux, ivar = normalize_like_emulator(flux, ivar)
        ivar = np.where(self.model_mask[None, :] | ~np.isfinite(flux), 0.0, ivar)
        flux = np.where(np.isfinite(flux), flux, 1.0)
        out = {k: [] for k in ("labels", "sigma", "chi2", "n_pix", "n_clipped")}
        for a in range(0, flux.shape[0], self.chunk):
            rows = slice(a, a + self.chunk)
            raw = None if normalized else (raw_flux[rows], raw_ivar[rows])
            part = self._fit_chunk(flux[rows], ivar[rows], raw)
            for k in out:
                out[k].append(part[k])
        return {k: np.concatenate(v) for k, v in out.items()}

    def _lm(self, d, w, s, n_iter):
        """Batched Levenberg-Marquardt from scaled labels s (rows of d): (s, model, jac, chi2) at the end."""
        import torch

        lam = torch.full((s.shape[0],), 1e-2, dtype=torch.float64)
        model, jac = _model_and_jacobian(self.emulator, self.scaler, s)
        chi2 = ((d - model) ** 2 * w).sum(1)
        for it in range(n_iter):
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
            # converged everywhere: no row moved chi^2 by more than 1e-3 this step
            if it >= 3 and float((chi2_before - chi2).max()) < 1e-3:
                break
        return s, model, jac, chi2

    def _fit_chunk(self, flux: np.ndarray, ivar: np.ndarray, raw=None) -> dict:
        import torch

        n, n_start = flux.shape[0], len(self.starts)
        d = torch.as_tensor(np.repeat(flux, n_start, axis=0))
        w = torch.as_tensor(np.repeat(ivar, n_start, axis=0))
        s0 = torch.as_tensor(np.tile(self.scaler.to_s(self.starts), (n, 1)))
        s, model, jac, chi2 = self._lm(d, w, s0, self.n_iter)
        best = chi2.reshape(n, n_start).argmin(1)
        rows = torch.arange(n) * n_start + best
        s, model, jac, chi2 = s[rows], model[rows], jac[rows], chi2[rows]
        d, w = torch.as_tensor(flux), torch.as_tensor(ivar)
        base_w = w.clone()
        for _ in range(self.passes):
            # outliers: beyond `clip` sigma of the current model (the model's own pixels never come back)
            z = (d - model) * torch.sqrt(base_w)
            w = torch.where(z.abs() > self.clip, 0.0, base_w)
            if raw is not None:
                d, base_w = self._refit_continuum(raw[0], raw[1], model.numpy(), w.numpy() > 0)
                w = torch.where(w > 0, base_w, 0.0)
            s, model, jac, chi2 = self._lm(d, w, s, max(10, self.n_iter // 2))
        jac_x = jac / torch.tensor(self.scaler.span)
        A = jac_x.transpose(1, 2) @ (jac_x * w[..., None])
        cov = torch.linalg.pinv(A)
        n_pix = (w > 0).sum(1)
        chi2_red = (chi2 / (n_pix - 4).clamp(min=1)).numpy()
        sigma = np.sqrt(np.clip(torch.diagonal(cov, dim1=1, dim2=2).numpy(), 0.0, None))
        return {
            "labels": self.scaler.to_x(s.numpy()),
            "sigma": sigma * np.sqrt(np.maximum(chi2_red, 1.0))[:, None],
            "chi2": (chi2 / n_pix.clamp(min=1)).numpy(),
            "n_pix": n_pix.numpy(),
            "n_clipped": ((base_w > 0) & (w == 0)).sum(1).numpy(),
        }

    def _refit_continuum(self, flux, ivar, model, good):
        """(norm flux, norm ivar) as torch tensors: flux / C, C per chip a degree-4 Chebyshev fitted to
        flux / model over the good pixels with weights ivar * model^2 (the model's own lines divided out)."""
        import torch

        flux, ivar = np.asarray(flux, np.float64), np.asarray(ivar, np.float64)
        norm_flux, norm_ivar = np.ones_like(flux), np.zeros_like(ivar)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(good & (model > 0.05), flux / model, 0.0)
        wt = np.where(good & (model > 0.05), ivar * model**2, 0.0)
        for a, b in CHIPS_7214:
            V = _chebyshev_design(b - a)
            wk = wt[:, a:b]
            A = np.einsum("pi,np,pj->nij", V, wk, V) + 1e-10 * np.eye(V.shape[1])
            rhs = np.einsum("pi,np->ni", V, wk * ratio[:, a:b])
            coef = np.linalg.solve(A, rhs[..., None])[..., 0]
            cont = coef @ V.T
            ok = ((wk > 0).sum(1) >= 10)[:, None] & (cont > 0)
            safe = np.where(ok, cont, 1.0)
            norm_flux[:, a:b] = np.where(ok, flux[:, a:b] / safe, 1.0)
            norm_ivar[:, a:b] = np.where(ok, ivar[:, a:b] * safe**2, 0.0)
        norm_ivar = np.where(self.model_mask[None, :] | ~np.isfinite(norm_flux), 0.0, norm_ivar)
        return torch.as_tensor(np.nan_to_num(norm_flux, nan=1.0)), torch.as_tensor(norm_ivar)



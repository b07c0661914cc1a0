"""The shipped 4-label Kurucz flux emulator (BinSpec era of The Payne) and its continuum normalisation.

Maths (shared/data/payne/README.md): s = (l - x_min)/(x_max - x_min) - 0.5; per pixel p a hidden layer
h_pj = sigmoid(sum_k W0[p,j,k] s_k + b0[p,j]) of 5 units; F_p = (sum_j W1[p,j] h_pj + b1[p]) / 1e6, the
surface flux f_nu on the 7214-pixel ASPCAP grid (vacuum, rest frame). The normalised spectrum divides F
by a per-chip degree-4 Chebyshev continuum fitted (unweighted least squares) to the Cannon continuum
pixels. That fit is linear in F, so it is precomputed once as two small fixed matrices:
coefficients = F[:, cont] @ A (per chip), continuum = coefficients @ V.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from pairspec.surveys.apogee.layout import aspcap7214_index

# Chip blocks of the 7214-pixel array (payne README), half-open.
CHIPS_7214 = ((0, 2920), (2920, 5320), (5320, 7214))
CHEB_DEGREE = 4


def load_npz(name: str) -> dict[str, np.ndarray]:
    path = resources.files("pairspec.surveys.apogee") / "data" / name
    try:
        with resources.as_file(path) as p, np.load(p) as d:
            return {k: np.array(d[k]) for k in d.files}
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: emulator data file missing from the pairspec package") from exc


def chip_x(n: int) -> np.ndarray:
    """Pixel index of one chip mapped linearly onto [-1, 1] (Chebyshev domain)."""
    return np.linspace(-1.0, 1.0, n)


def continuum_operator(cont_pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A (7214, 15), V (15, 7214)) with continuum = F @ A @ V: per-chip Chebyshev LSQ on cont_pixels.

    A maps the flux to the 5 Chebyshev coefficients of each chip (zero rows off the continuum pixels,
    so only those pixels enter), V evaluates the polynomials back on the chip's pixels.
    """
    npix = cont_pixels.size
    ncoef = CHEB_DEGREE + 1
    A = np.zeros((npix, ncoef * len(CHIPS_7214)))
    V = np.zeros((ncoef * len(CHIPS_7214), npix))
    for c, (a, b) in enumerate(CHIPS_7214):
        vander = np.polynomial.chebyshev.chebvander(chip_x(b - a), CHEB_DEGREE)  # (n, 5)
        use = np.flatnonzero(cont_pixels[a:b])
        if use.size <= ncoef:
            raise ValueError(f"chip [{a},{b}) has only {use.size} continuum pixels; need > {ncoef}")
        # pinv of the design matrix restricted to the continuum pixels: coefficients = pinv @ F[use]
        pinv = np.linalg.pinv(vander[use])  # (5, n_use)
        A[a + use, c * ncoef:(c + 1) * ncoef] = pinv.T
        V[c * ncoef:(c + 1) * ncoef, a:b] = vander.T
    return A, V


@lru_cache(maxsize=1)
def _cached_arrays() -> dict[str, np.ndarray]:
    nn = load_npz("NN_binspec_kurucz_flux_4label.npz")
    out = {k: nn[k].astype(np.float64) for k in ("w_array_0", "b_array_0", "w_array_1", "b_array_1", "x_min", "x_max")}
    out["wavelength"] = load_npz("apogee_wavelength.npz")["wavelength"]
    out["cont_pixels"] = load_npz("cannon_cont_pixels_apogee.npz")["pixels_cannon"].astype(bool)
    out["model_mask"] = load_npz("apogee_mask.npz")["apogee_mask"].astype(bool)
    out["A"], out["V"] = continuum_operator(out["cont_pixels"])
    for v in out.values():
        v.setflags(write=False)  # shared cache: nobody may modify it in place
    return out


@dataclass(frozen=True, eq=False)
class KuruczEmulator:
    """Kurucz ATLAS/SYNTHE (R~22500) flux emulator on the 7214-px ASPCAP grid; use `KuruczEmulator.load()`."""

    w0: np.ndarray  # (7214, 5, 4)
    b0: np.ndarray  # (7214, 5)
    w1: np.ndarray  # (7214, 5)
    b1: np.ndarray  # (7214,)
    x_min: np.ndarray  # (4,)
    x_max: np.ndarray  # (4,)
    wavelength: np.ndarray  # (7214,) vacuum Angstrom
    cont_pixels: np.ndarray  # (7214,) bool, Cannon continuum pixels
    model_mask: np.ndarray  # (7214,) bool, True = Kurucz deviates > 2 % from Sun/Arcturus: exclude in fits
    cont_A: np.ndarray  # (7214, 15) flux -> per-chip Chebyshev coefficients
    cont_V: np.ndarray  # (15, 7214) coefficients -> continuum
    label_names: tuple[str, ...] = ("teff", "logg", "fe_h", "alpha_fe")

    @classmethod
    def load(cls) -> KuruczEmulator:
        a = _cached_arrays()
        return cls(a["w_array_0"], a["b_array_0"], a["w_array_1"], a["b_array_1"], a["x_min"], a["x_max"],
                   a["wavelength"], a["cont_pixels"], a["model_mask"], a["A"], a["V"])

    @property
    def apstar_index(self) -> np.ndarray:
        """apStar (8575-grid) pixel index of each of the 7214 emulator pixels."""
        return aspcap7214_index()

    @property
    def npix(self) -> int:
        return int(self.b1.size)

    def scaled(self, labels) -> np.ndarray:
        labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
        if labels.shape[1] != len(self.label_names):
            raise ValueError(f"labels must have {len(self.label_names)} columns {self.label_names}, got {labels.shape}")
        return (labels - self.x_min) / (self.x_max - self.x_min) - 0.5

    def in_range(self, labels) -> np.ndarray:
        """Bool (N,): every label inside the training range [x_min, x_max]."""
        s = self.scaled(labels)
        return np.all((s >= -0.5) & (s <= 0.5), axis=1)

    def flux(self, labels, chunk: int = 128) -> np.ndarray:
        """Raw surface flux f_nu (erg/s/cm2/Hz/sr), (N, 7214) float64. Chunked to bound memory."""
        s = self.scaled(labels)
        out = np.empty((s.shape[0], self.npix))
        for i in range(0, s.shape[0], chunk):
            z = np.einsum("pjk,nk->npj", self.w0, s[i:i + chunk]) + self.b0
            h = 0.5 * (1.0 + np.tanh(0.5 * z))  # logistic sigmoid, overflow-free
            out[i:i + chunk] = (np.einsum("npj,pj->np", h, self.w1) + self.b1) / 1e6
        return out

    def continuum(self, flux: np.ndarray) -> np.ndarray:
        """Per-chip Chebyshev continuum of (N, 7214) flux fitted on the Cannon pixels."""
        return (np.atleast_2d(flux) @ self.cont_A) @ self.cont_V

    def normalized(self, labels) -> np.ndarray:
        """Continuum-normalised rest-frame spectrum (N, 7214)."""
        f = self.flux(labels)
        return f / self.continuum(f)

    def torch_normalized(self, labels):
        """Differentiable torch version of `normalized` for (N, 4) tensors (dtype/device of `labels`)."""
        import torch

        p = self._torch_params(labels.dtype, labels.device)
        s = (labels - p["x_min"]) / (p["x_max"] - p["x_min"]) - 0.5
        h = torch.sigmoid(torch.einsum("pjk,nk->npj", p["w0"], s) + p["b0"])
        f = torch.einsum("npj,pj->np", h, p["w1"]) + p["b1"]  # the 1e6 scale cancels in f / continuum
        return f / ((f @ p["A"]) @ p["V"])

    def _torch_params(self, dtype, device) -> dict:
        import torch

        cache = self.__dict__.setdefault("_torch_cache", {})  # frozen dataclass: store beside the fields
        key = (dtype, str(device))
        if key not in cache:
            arrays = {"w0": self.w0, "b0": self.b0, "w1": self.w1, "b1": self.b1, "x_min": self.x_min,
                      "x_max": self.x_max, "A": self.cont_A, "V": self.cont_V}
            cache[key] = {k: torch.as_tensor(np.array(v), dtype=dtype, device=device) for k, v in arrays.items()}
        return cache[key]

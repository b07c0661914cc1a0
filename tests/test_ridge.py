"""The closed-form ridge of the linear baseline: primal and dual forms give the textbook solution."""

import numpy as np
import pytest

from pairspec.models.ridge import fit_ridge


@pytest.mark.parametrize("n,block", [(50, 2048), (400, 2048), (400, 64)],
                         ids=["dual (fewer twins than pixels)", "primal", "primal summed over blocks"])
def test_ridge_matches_the_normal_equations(n, block, monkeypatch):
    import pairspec.models.ridge as R

    monkeypatch.setattr(R, "RIDGE_BLOCK", block)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 120))
    y = x @ rng.normal(size=(120, 2)) + rng.normal(size=(n, 2))
    W, b, alphas = fit_ridge(x, y, x[:20], y[:20], alphas=(0.1,))
    xc = x - x.mean(0)
    lam = 0.1 * np.trace(xc.T @ xc) / 120
    ref = np.linalg.solve(xc.T @ xc + lam * np.eye(120), xc.T @ (y - y.mean(0))).T
    np.testing.assert_allclose(W, ref, atol=1e-5)  # float32 output
    np.testing.assert_allclose(b, y.mean(0) - ref @ x.mean(0), atol=1e-4)
    assert alphas == [0.1, 0.1]


def test_ridge_picks_the_strength_on_validation_and_skips_missing_labels():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 40))
    y = np.column_stack([x[:, 0], rng.normal(size=300)])  # label 1 is pure noise: strong ridge wins
    y[::10, 0] = np.nan
    xv = rng.normal(size=(200, 40))
    yv = np.column_stack([xv[:, 0], rng.normal(size=200)])
    W, _, alphas = fit_ridge(x, y, xv, yv)
    assert alphas[1] > alphas[0] and abs(W[0, 0] - 1) < 0.1

"""Twins: leave-one-out coadds, exact on a hand example, never using the visit itself."""

import numpy as np
import pytest

from pairspec.pairs import coadd, leave_one_out, select_twins, visit_groups


def test_leave_one_out_hand_example():
    flux = np.array([[1.0, 2.0, 3.0, 4.0],
                     [3.0, 4.0, 5.0, 6.0],
                     [5.0, 9.0, 7.0, 8.0]], dtype=np.float32)
    ivar = np.array([[1.0, 1.0, 0.0, 2.0],
                     [1.0, 0.0, 0.0, 2.0],
                     [2.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    loo_f, loo_i = leave_one_out(flux, ivar)
    # pixel 0: visit 0 <- (3*1 + 5*2)/3; visit 1 <- (1*1 + 5*2)/3; visit 2 <- (1 + 3)/2
    np.testing.assert_allclose(loo_f[:, 0], [13 / 3, 11 / 3, 2.0], rtol=1e-6)
    np.testing.assert_allclose(loo_i[:, 0], [3.0, 3.0, 2.0])
    # pixel 1: only visit 0 is good -> visit 0 has no other good visit (flux 0, ivar 0)
    np.testing.assert_allclose(loo_f[:, 1], [0.0, 2.0, 2.0])
    np.testing.assert_allclose(loo_i[:, 1], [0.0, 1.0, 1.0])
    # pixel 2: no visit is good anywhere
    assert (loo_f[:, 2] == 0).all() and (loo_i[:, 2] == 0).all()
    # pixel 3: visit 2 bad (its own flux 8 must never appear); visits 0, 1 see each other
    np.testing.assert_allclose(loo_f[:, 3], [6.0, 4.0, 5.0])
    np.testing.assert_allclose(loo_i[:, 3], [2.0, 2.0, 4.0])
    assert loo_f.dtype == np.float32 and np.isfinite(loo_f).all()


def test_twin_never_uses_its_own_visit():
    rng = np.random.default_rng(0)
    flux = rng.normal(1.0, 0.1, (5, 200))
    ivar = rng.uniform(0.0, 100.0, (5, 200))
    ivar[rng.random((5, 200)) < 0.2] = 0.0
    before_f, before_i = leave_one_out(flux, ivar)
    for v in range(5):
        changed_f, changed_i = flux.copy(), ivar.copy()
        changed_f[v] += rng.normal(0, 5.0, 200)
        changed_i[v] = rng.uniform(0, 1e4, 200)
        after_f, after_i = leave_one_out(changed_f, changed_i)
        np.testing.assert_array_equal(after_f[v], before_f[v])
        np.testing.assert_array_equal(after_i[v], before_i[v])
        others = [u for u in range(5) if u != v]
        assert not np.allclose(after_f[others], before_f[others])


def test_no_cancellation_next_to_a_huge_ivar():
    # total - own (even in float64) would lose the weak visits entirely next to ivar 1e17
    flux = np.array([[0.5] * 3, [1.25] * 3, [0.75] * 3])
    ivar = np.array([[1e17] * 3, [1.0] * 3, [3.0] * 3])
    loo_f, loo_i = leave_one_out(flux, ivar)
    np.testing.assert_allclose(loo_f[0], (1.25 + 3 * 0.75) / 4, rtol=1e-6)
    np.testing.assert_allclose(loo_i[0], 4.0, rtol=1e-6)


def test_leave_one_out_matches_brute_force_and_coadd():
    rng = np.random.default_rng(1)
    flux = rng.normal(1.0, 0.2, (4, 50))
    ivar = np.where(rng.random((4, 50)) < 0.3, 0.0, rng.uniform(1, 50, (4, 50)))
    loo_f, loo_i = leave_one_out(flux, ivar)
    for v in range(4):
        o = [u for u in range(4) if u != v]
        w = ivar[o].sum(0)
        ref = np.where(w > 0, (ivar[o] * flux[o]).sum(0) / np.where(w > 0, w, 1), 0.0)
        np.testing.assert_allclose(loo_f[v], ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(loo_i[v], w, rtol=1e-5)
    _cf, ci = coadd(flux, ivar)
    np.testing.assert_allclose(ci, ivar.sum(0), rtol=1e-5)
    # one visit: leave-one-out has nothing left
    f1, i1 = leave_one_out(flux[:1], ivar[:1])
    assert (f1 == 0).all() and (i1 == 0).all()


def test_shape_error_and_selection():
    with pytest.raises(ValueError, match="n_visit, npix"):
        leave_one_out(np.ones((2, 3)), np.ones((2, 4)))
    keep = select_twins(np.array([1, 2, 5, 3]), snr=np.array([50.0, np.nan, 80.0, 20.0]), min_snr=30)
    assert keep.tolist() == [False, False, True, False]
    assert select_twins(np.array([1, 2, 3]), min_visits=3).tolist() == [False, False, True]
    with pytest.raises(ValueError, match="min_snr"):
        select_twins(np.array([2]), min_snr=3)
    groups = visit_groups(np.array([0, 0, 1, 2, 2, 2]))
    assert [g.tolist() for g in groups] == [[0, 1], [2], [3, 4, 5]]

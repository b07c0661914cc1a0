"""A label decoder trained after the fact beside a checkpoint that has none, and the emulator fitted to its
spectrum: is a spectrum made from TSN's labels worth fitting at a size where TSN's labels beat the fit?

    python benchmarks/posthoc_label_decoder.py CHECKPOINT STORE TRUTH [--stars 10400] [--epochs 30]
        [--visits 80] [--width 256] [--train-labels survey|truth|network|blend] [--save-decoder DEC.pt]
        [--out result.json]

An MLP K -> 256 -> 256 -> L, as `model.label_decoder: 256` (--width sets the 256), trained as in TSN (the survey's standardised
labels in, the leave-one-out coadd of each twin out, chi^2 per pixel against the coadd's noise) on the
twins of --stars random train-split stars; its per-pixel error profile per visit-S/N bin from 1500
validation stars' visits fed the checkpoint's predicted labels (as prediction feeds it); then on --visits
random test visits at S/N < 60 the survey's emulator fit to the noisy visit, to the decoder's spectrum of
TSN's labels (ivar from the profile) and of the true labels (the decoder's accuracy as an emulator),
beside TSN's labels, as robust sigma against the truth. Used for docs/recipes.md ("A spectrum made from
the labels") on the 10400-star checkpoint, which was trained without a label decoder. In training a label
decoder sees only the survey's labels (the network's detached means only where a label is missing), so
one trained afterwards learns the same map, with its own optimiser schedule. ~3 GB of memory per 10k stars.
--train-labels changes what it learns from (the checkpoint's own star-level labels, for one: see
docs/recipes.md, "the decoder's training labels"); the JSON records how far those labels are from the truth
on the training stars, beside the survey's. --save-decoder keeps it for `decoder_response.py --decoder`.
"""
import argparse
import json
import time

import numpy as np
import torch


def loo_block(store, stars, sel):
    from pairspec.evaluate import _loo_targets
    first, nvis = np.asarray(stars["first_visit"]), np.asarray(stars["n_visits"])
    rows = np.concatenate([np.arange(first[s], first[s] + nvis[s]) for s in sel])
    f, iv, _ = store.visit_spectra(rows, pixmask=False)
    star = np.repeat(np.asarray(sel), nvis[sel])
    tf, ti, _, _ = _loo_targets(f, iv, star, store.grid)
    return rows, star, tf.astype(np.float32), ti.astype(np.float32), f, iv


def star_training_labels(kind: str, out: dict, star: np.ndarray, survey_lab: np.ndarray, survey_err: np.ndarray):
    """(stars (S,), labels (S, K)) a decoder learns from, for the stars of these visits. `out`: the checkpoint's
    prediction of the visits (labels, sigma, sigma_visit); `star` (N,) the visits' star rows; `survey_lab`,
    `survey_err` indexed by star row. 'network': each star's inverse-variance mean of its visits
    (catalog.combine_visits, with the calibration's visit/star split); 'blend': that mean and the survey's
    label combined by their inverse variances (the star-level sigma, which keeps the star part, and label_err)."""
    from pairspec.catalog import combine_visits

    uniq, inv = np.unique(star, return_inverse=True)
    comb = combine_visits(inv, uniq.size, out["labels"], out["sigma"], np.zeros(len(star), np.int32),
                          sigma_visit=out.get("sigma_visit"))
    labels = comb["labels"]
    if kind == "blend":
        w_net, w_sur = 1 / comb["sigma"] ** 2, 1 / np.asarray(survey_err, np.float64)[uniq] ** 2
        labels = (w_net * labels + w_sur * survey_lab[uniq]) / (w_net + w_sur)
    elif kind != "network":
        raise ValueError(f"star_training_labels: kind {kind!r} is not 'network' or 'blend'")
    return uniq, labels


def main():
    from pairspec import metrics as M
    from pairspec.evaluate import SPLIT_CODES, read_truth
    from pairspec.inference import LabelPredictor
    from pairspec.models.tsn import label_decoder_mlp
    from pairspec.store import open_store
    from pairspec.surveys import store_visit_fitter
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("truth")
    ap.add_argument("--stars", type=int, default=10400)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--visits", type=int, default=80)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--save-decoder", default=None, metavar="PATH",
                    help="save the trained decoder (for decoder_response.py --decoder)")
    ap.add_argument("--seed", type=int, default=0,
                    help="torch seed of the decoder's initialisation and batch order (the stars and visits stay)")
    ap.add_argument("--width", type=int, default=256,
                    help="hidden width of the decoder's two layers (model.label_decoder's value; 256 as trained)")
    ap.add_argument("--train-labels", choices=("survey", "truth", "network", "blend"), default="survey",
                    help="labels the decoder learns from: the survey's (as in TSN); on synthetic data the truth "
                         "(an oracle: how much the survey labels' own errors cost); 'network': the checkpoint's "
                         "own star-level labels of each training star (inverse-variance mean of its visits, "
                         "catalog.combine_visits; in-sample, as a user would have them); 'blend': the "
                         "inverse-variance mean of those and the survey's labels (its label_err)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    n_stars, epochs = args.stars, args.epochs
    t0 = time.time()
    store = open_store(args.store)
    pred = LabelPredictor.from_checkpoint(args.checkpoint)
    names = list(pred.label_names)
    stars, visits = store.star_table(), store.visit_table()
    split = np.asarray(stars["split"])
    nvis = np.asarray(stars["n_visits"])
    col = [list(store.schema.names).index(n) for n in names]
    lab = store.labels()[:, col]
    survey_lab = lab.copy()
    if args.train_labels == "truth":
        lab, _ = read_truth(args.truth, [str(s) for s in np.asarray(stars["id"])], names)
    mu, sd = pred.label_mean, pred.label_std
    rng = np.random.default_rng(0)
    train = np.flatnonzero((split == SPLIT_CODES["train"]) & (nvis >= 2) & np.isfinite(lab).all(1))
    train = np.sort(rng.choice(train, size=min(n_stars, train.size), replace=False))
    if args.train_labels in ("network", "blend"):
        err = store.label_err()[:, col]
    X, T, W = [], [], []
    for b in np.array_split(train, max(1, train.size // 1000)):
        rows, star, tf, ti, f, iv = loo_block(store, stars, b)
        if args.train_labels in ("network", "blend"):
            out = pred.predict(f, iv)
            uniq, star_lab = star_training_labels(args.train_labels, out, star, survey_lab, err)
            lab[uniq] = star_lab
            print("network labels of", uniq.size, "stars", round(time.time() - t0), "s", flush=True)
        X.append(((lab[star] - mu) / sd).astype(np.float32))
        T.append(tf - 1)
        W.append(ti)
    X, T, W = (torch.from_numpy(np.concatenate(a)) for a in (X, T, W))
    print("twins", len(X), "read", round(time.time() - t0), "s", flush=True)
    # how close the decoder's training labels are to the truth, beside the survey's (robust sigma per label)
    true_lab, _ = read_truth(args.truth, [str(s) for s in np.asarray(stars["id"])], names)
    train_label_sigma = {kind: {n: round(float(M.robust_sigma(v[train, i] - true_lab[train, i])), 4)
                                for i, n in enumerate(names)}
                         for kind, v in (("survey", survey_lab), (args.train_labels, lab))}
    print("training labels against the truth", train_label_sigma, flush=True)
    L = T.shape[1]
    h = args.width
    dec = label_decoder_mlp(len(names), h, L)
    opt = torch.optim.AdamW(dec.parameters(), lr=2e-3, weight_decay=0.0)
    steps = epochs * (len(X) // 256)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    for ep in range(epochs):
        perm = torch.randperm(len(X))
        tot = 0
        for i in range(len(X) // 256):
            j = perm[i * 256:(i + 1) * 256]
            w = W[j]
            r = dec(X[j]) - T[j]
            loss = ((w * r * r).sum(1) / (w > 0).sum(1).clamp_min(1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item()
        print("epoch", ep, tot / (len(X) // 256), round(time.time() - t0), flush=True)
    dec.eval()
    if args.save_decoder:
        torch.save({"state_dict": dec.state_dict(), "width": h, "n_out": L, "label_names": names,
                    "label_mean": np.asarray(mu), "label_std": np.asarray(sd), "epochs": epochs,
                    "checkpoint": args.checkpoint}, args.save_decoder)

    def spectrum(labels_phys):
        with torch.no_grad():
            return dec(torch.from_numpy(((labels_phys - mu) / sd).astype(np.float32))).numpy() + 1

    # error profile from val visits, TSN's labels in (as prediction feeds it)
    val = np.flatnonzero((split == SPLIT_CODES["val"]) & (nvis >= 2))[:1500]
    rows, star, tf, ti, f, iv = loo_block(store, stars, val)
    out = pred.predict(f, iv)
    den = spectrum(out["labels"])
    edges = np.array([0, 20, 40, 60, np.inf])
    snr = np.asarray(visits["snr"])[rows]
    b = np.clip(np.searchsorted(edges, snr, side="right") - 1, 0, 3)
    from pairspec.train_steps import (
        profile_sigma,  # the profile prediction uses, computed the same way
    )
    good = ti > 0
    excess = np.where(good, (den - tf) ** 2 - 1 / np.maximum(ti, 1e-30), 0)
    sums = np.stack([excess[b == k].sum(0) for k in range(4)])
    sig = np.maximum(profile_sigma(sums, np.stack([good[b == k].sum(0) for k in range(4)]),
                                   np.bincount(b, minlength=4)), 1e-4)
    # the dfit.py test visits
    fitter = store_visit_fitter(store)
    in_split = split == SPLIT_CODES["test"]
    rows = np.flatnonzero(in_split[np.asarray(visits["star"])] & (np.asarray(visits["snr"]) < 60))
    rows = np.sort(np.random.default_rng(0).choice(rows, size=args.visits, replace=False))
    flux, ivar, pixmask = store.visit_spectra(rows)
    star = np.asarray(visits["star"])[rows]
    out = pred.predict(flux, ivar)
    cat = list(getattr(fitter, "catalogue_names", fitter.label_names))
    truth, _ = read_truth(args.truth, [str(s) for s in np.asarray(stars["id"])], cat)
    ref = truth[star]
    bt = np.clip(np.searchsorted(edges, np.asarray(visits["snr"])[rows], side="right") - 1, 0, 3)
    den = spectrum(out["labels"]).astype(np.float32)
    den_true = spectrum(ref[:, [cat.index(n) for n in names]]).astype(np.float32)
    res = {}
    fits = {"noisy": fitter.fit(flux, ivar, pixmask=pixmask)["labels"],
            "decoder_of_tsn_labels": fitter.fit(den, (1 / sig[bt] ** 2).astype(np.float32))["labels"],
            "decoder_of_true_labels": fitter.fit(den_true, np.full_like(den_true, 1e4))["labels"],
            "tsn": out["labels"][:, [names.index(c) for c in cat]]}
    for k, v in fits.items():
        res[k] = {c: round(float(M.robust_sigma(v[:, i] - ref[:, i])), 4) for i, c in enumerate(cat)}
        print(k, res[k], flush=True)
    res.update(checkpoint=args.checkpoint, store=args.store, train_labels=args.train_labels,
               train_label_sigma=train_label_sigma, width=h, seed=args.seed,
               n_stars=int(train.size), twins=len(X),
               epochs=epochs, n_visits=len(rows), wall_s=round(time.time() - t0))
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == '__main__':
    main()

"""Run training's product-decoder stage (train.decoder_labels: network) on a checkpoint trained without it.

    python benchmarks/product_decoder_stage.py CHECKPOINT OUT.pt [--epochs 30] [--width W] [--threads 1]
        [--store PATH] [--labels-cache LABELS.npy]

The stage `pairspec.train_loop.finish` runs after the epochs, here on a finished best.pt: the train and val
twins of the checkpoint's own recipe (its data section; --store if the store moved), the second decoder
trained on the network's star-level labels (pairspec.product_decoder), then the denoised spectra's
per-pixel uncertainty profile measured again through it. The labels, calibration and refit mix are those
of CHECKPOINT, untouched, so a measurement of OUT.pt (decoder_response.py, denoised_fit.py) shows what the
stage changes. --width trains a decoder of another width (train.decoder_width). --labels-cache keeps the
twins' star labels (most of the stage's time) in a .npy file and reads them from there when it exists, so
that decoders of several widths or seeds share them. Prints the stage's record (meta["product_decoder"]) and
its time as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=30, help="the decoder's epochs (train.decoder_epochs)")
    ap.add_argument("--width", type=int, default=None, help="the decoder's width (train.decoder_width; "
                    "default: the label decoder's)")
    ap.add_argument("--labels-cache", default=None, metavar="NPY",
                    help="read the train twins' star labels from this file if it exists, else write them there")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--store", default=None, help="the store, if it moved since training")
    args = ap.parse_args(argv)

    import torch

    from pairspec.checkpoint import load_checkpoint, save_checkpoint
    from pairspec.config import apply_overrides, from_dict
    from pairspec.train import load_twins, setup_run
    from pairspec.train_loop import (
        _product_decoder_stage,
        _val_loader,
        denoise_sigma_stage,
    )

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, meta = load_checkpoint(args.checkpoint)
    sets = ["train.decoder_labels=network", f"train.decoder_epochs={args.epochs}", "train.device=cpu"]
    if args.width:
        sets.append(f"train.decoder_width={args.width}")
    if args.store:
        sets.append(f"data.store={args.store}")
    config = apply_overrides(from_dict(meta["config"], args.checkpoint), sets)
    run = setup_run(config, forced=False)
    twins = load_twins(config, run)
    t_data = time.perf_counter() - t0
    labels = None
    if args.labels_cache and Path(args.labels_cache).exists():
        labels = np.load(args.labels_cache)
    elif args.labels_cache:
        from pairspec.product_decoder import star_labels_of_twins

        labels = star_labels_of_twins(model, meta, twins.train.x, np.asarray(twins.train.snr),
                                      np.asarray(twins.train.star_index), run.device)
        np.save(args.labels_cache, labels)
    _product_decoder_stage(model, meta, twins, run, config.train, progress=False, labels=labels)
    denoise_sigma_stage(model, meta, _val_loader(twins, config.train.batch_size, 0), twins, run, config.train)
    save_checkpoint(args.out, model.state_dict(), meta)
    rec = {"checkpoint": args.checkpoint, "out": args.out, "data_s": round(t_data, 1),
           "total_s": round(time.perf_counter() - t0, 1), "threads": args.threads, **meta["product_decoder"]}
    print(json.dumps(rec, indent=1))
    return rec


if __name__ == "__main__":
    main()

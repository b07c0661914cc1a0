"""The baseline recipe variants (direct regression, ridge, ablations) of a TSN recipe."""

import dataclasses

from pairspec import baselines as B


@dataclasses.dataclass(frozen=True)
class _Data:
    mode: str = "loo"


@dataclasses.dataclass(frozen=True)
class _Train:
    recon_weight: float = 1.0
    ema: float = 0.99


@dataclasses.dataclass(frozen=True)
class _Model:
    preset: str = "tsn_mini"
    decoder_depth: int = 2
    label_decoder: int = 64


@dataclasses.dataclass(frozen=True)
class _Run:
    name: str = "demo"
    out_dir: str = "runs/demo"
    data: _Data = _Data()
    train: _Train = _Train()
    model: _Model = _Model()


def test_baseline_recipes_change_only_what_they_say():
    base = _Run()
    rec = B.baseline_recipes(base)
    assert set(rec) == {"direct", "ridge", "tsn_no_recon", "tsn_coadd_target"}
    assert rec["direct"].data.mode == "direct" and rec["direct"].train.recon_weight == 0.0
    assert rec["tsn_no_recon"].data.mode == "loo" and rec["tsn_no_recon"].train.recon_weight == 0.0
    assert rec["tsn_coadd_target"].data.mode == "coadd" and rec["tsn_coadd_target"].train.recon_weight == 1.0
    dirs = {r.out_dir for r in rec.values()} | {base.out_dir}
    assert len(dirs) == 5 and rec["direct"].name == "demo-direct"
    assert rec["ridge"].model.preset == "ridge" and rec["ridge"].data.mode == "loo"
    # no reconstruction loss, no decoder (it would be trained by nothing); TSN's own variants keep it
    assert rec["direct"].model.decoder_depth == 0 == rec["tsn_no_recon"].model.decoder_depth
    assert rec["tsn_coadd_target"].model.decoder_depth == 2
    assert rec["direct"].model.label_decoder == 0 == rec["tsn_no_recon"].model.label_decoder
    assert rec["tsn_coadd_target"].model.label_decoder == 64
    # the direct network trains without the weight average (measured worse with it); TSN's variants keep it
    assert rec["direct"].train.ema == 0.0
    assert rec["tsn_no_recon"].train.ema == 0.99 == rec["tsn_coadd_target"].train.ema
    assert base.data.mode == "loo"  # the base is untouched


def test_baseline_recipes_on_the_real_run_config():
    from pairspec.config import RunConfig

    base = RunConfig()
    rec = B.baseline_recipes(base)
    assert rec["direct"].data.mode == "direct" and rec["direct"].train.recon_weight == 0.0
    assert rec["tsn_coadd_target"].data.mode == "coadd"
    assert rec["tsn_no_recon"].run.name == f"{base.run.name}-tsn-no-recon"
    named = dataclasses.replace(base, run=dataclasses.replace(base.run, out_dir="/tmp/runs/x"))
    assert B.baseline_recipes(named)["direct"].run.out_dir == "/tmp/runs/x-direct"

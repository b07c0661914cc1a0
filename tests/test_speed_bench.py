"""benchmarks/speed.py --amp-compare: the recipe's own optimizer step, timed in float32 and under bf16
autocast from the same weights on the same batch."""

import json
import math

import benchscript


def test_amp_compare_times_both_precisions_of_the_recipes_step_and_their_losses_agree(tmp_path, capsys):
    speed = benchscript.load("speed")
    out = tmp_path / "amp.json"
    result = speed.main(["--recipe", "recipes/demo.yaml", "--amp-compare", "--steps", "1", "--rounds", "2",
                         "--batch-size", "4", "--out", str(out)])  # no --threads: it would stay set for later tests
    amp = result["amp_compare"]
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out) == result
    assert amp["threads"] >= 1 and amp["rounds"] == 2 and amp["batch_size"] == 4
    for name in ("float32", "bf16"):
        assert amp[name]["s_per_step"] > 0 and math.isfinite(amp[name]["loss_after"])
    assert math.isclose(amp["bf16_speedup"], amp["float32"]["s_per_step"] / amp["bf16"]["s_per_step"])
    # same start and data: after 4 steps the two losses differ by bf16's rounding, not by a different model
    assert abs(amp["bf16"]["loss_after"] - amp["float32"]["loss_after"]) < 0.05 * abs(amp["float32"]["loss_after"]) + 0.05
    assert amp["cpu_native_bf16"] in (True, False, None)
    assert amp["gflop_per_step"] > 0  # the achieved rate is the step's arithmetic over its time
    for name in ("float32", "bf16"):
        assert math.isclose(amp[name]["gflop_per_s"], amp["gflop_per_step"] / amp[name]["s_per_step"], rel_tol=1e-9)

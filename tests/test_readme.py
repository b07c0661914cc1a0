"""The README's "Use" block runs as written, top to bottom, in a fresh folder (only --stars is made
smaller), through a shell, as a user would type it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def use_commands() -> list[str]:
    """The `pairspec ...` lines of the first code block under "## Use", comments stripped."""
    text = README.read_text()
    section = text[text.index("## Use"):]
    block = re.search(r"```\n(.*?)```", section, re.DOTALL).group(1)
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith("pairspec ")]


def test_the_use_block_names_the_commands_it_should():
    cmds = use_commands()
    assert [c.split()[1] for c in cmds] == ["simulate", "simulate", "ingest", "info", "train", "predict", "predict",
                                           "evaluate"]


@pytest.mark.slow
def test_readme_use_block_runs_as_written(tmp_path):
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    exe = f"{shlex.quote(sys.executable)} -m pairspec.cli"
    for cmd in use_commands():
        # 40 stars: a few in every split (evaluate needs test stars), seconds per command
        small = re.sub(r"--stars \d+", "--stars 40", cmd)
        res = subprocess.run(exe + small[len("pairspec"):], shell=True, cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"README command failed: {small}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert (tmp_path / "runs" / "demo-tsn" / "best.pt").exists()
    assert (tmp_path / "labels.fits").exists() and (tmp_path / "files.fits").exists()
    assert (tmp_path / "report" / "metrics.json").exists() and (tmp_path / "big" / "apogee.zarr").exists()

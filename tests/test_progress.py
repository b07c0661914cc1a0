"""pairspec.progress: a live bar on a terminal, plain lines (every tenth, and the end) in a job's log."""

from __future__ import annotations

import pytest

from pairspec.progress import Progress, _clock
from pairspec.train_loop import epoch_line


def test_plain_lines_at_every_tenth_and_the_end(capsys):
    with Progress(plain=True) as bar:
        task = bar.add_task("work", total=20)
        for _ in range(20):
            bar.advance(task)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("work: 2/20 (10 %), ") and lines[-1].startswith("work: 20/20 (100 %), ")


def test_plain_lines_follow_the_description_and_name(capsys):
    with Progress(plain=True, name="ingest", steps=2) as bar:
        task = bar.add_task("", total=4)
        for k in range(4):
            bar.update(task, advance=1, description=f"{k + 1} stars")
    out = capsys.readouterr().out.splitlines()
    assert [line.rsplit(",", 1)[0] for line in out] == ["ingest: 2 stars: 2/4 (50 %)", "ingest: 4 stars: 4/4 (100 %)"]


def test_big_steps_print_once_and_a_resumed_task_starts_at_its_count(capsys):
    with Progress(plain=True) as bar:
        task = bar.add_task("a", total=100, completed=55)
        bar.update(task, advance=2)  # 57: below the next tenth (60)
        assert capsys.readouterr().out == ""
        bar.update(task, completed=95)  # past three tenths at once: one line
        bar.update(task, completed=100)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in out] == ["a: 95/100 (95 %)", "a: 100/100 (100 %)"]


def test_disabled_prints_nothing(capsys):
    with Progress(enabled=False, plain=True) as bar:
        task = bar.add_task("quiet", total=3)
        for _ in range(3):
            bar.advance(task)
        bar.print("an epoch line")
    assert capsys.readouterr().out == ""


def test_print_writes_a_plain_line(capsys):
    with Progress(plain=True) as bar:
        bar.print("run epoch 1/2, step 10")
    assert capsys.readouterr().out == "run epoch 1/2, step 10\n"


def test_no_total_prints_no_tenths(capsys):
    with Progress(plain=True) as bar:
        task = bar.add_task("open-ended", total=None)
        bar.advance(task, 5)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0:00"), (61, "1:01"), (3725, "1:02:05")])
def test_clock(seconds, text):
    assert _clock(seconds) == text


def test_epoch_line_names_what_the_epoch_measured():
    record = {"epoch": 3, "step": 300, "train_loss": 1.23456, "val_loss": 0.5, "time_s": 41.6,
              "val_sigma": {"teff": 52.345, "logg": 0.0812}}
    line = epoch_line("demo-tsn", 10, record, best=True)
    assert line == ("demo-tsn epoch 3/10, step 300, train loss 1.2346, val loss 0.5000 (best), "
                    "val sigma teff 52.3 logg 0.0812, 42 s")
    # an epoch without validation (eval_every) says only what it has
    assert epoch_line("r", 2, {"epoch": 1, "step": 5, "train_loss": 2.0, "time_s": 1.0}) == (
        "r epoch 1/2, step 5, train loss 2.0000, 1 s")


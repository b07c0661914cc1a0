"""Progress on long work: a rich bar on a terminal, plain lines in a log.

A training or an ingest run as a batch job writes its stdout to a file. There rich's live bar draws nothing
until the work ends, so the log of a job that has run for hours says nothing of how far it got. `Progress`
is a rich bar when stdout is a terminal (or a notebook) and, otherwise, prints one plain line per task at
every tenth of its total and at its end, with the elapsed time. `Progress.print` writes a line above the bar
(or a plain line): the training's per-epoch summary goes through it.

    with Progress(enabled=progress) as bar:
        task = bar.add_task("ingest", total=n)
        for ...:
            bar.update(task, advance=1, description="12 stars, 40 visits")
"""

from __future__ import annotations

import sys
import time


def _interactive() -> bool:
    """Is stdout a place where a live bar redraws (a terminal or a notebook)? Rich's own test, so
    FORCE_COLOR / TTY_COMPATIBLE and the like mean the same here as for the rest of rich's output."""
    from rich.console import Console

    console = Console()
    return bool(console.is_terminal or console.is_jupyter)


class Progress:
    """A progress display with rich's task interface (add_task, update, advance), in one of three modes:
    a rich bar (stdout is a terminal), plain lines at every tenth (stdout is a file or a pipe), nothing
    (enabled=False). `columns` and `transient` are passed to rich's bar; `plain` forces the line mode
    (None: decide by stdout); `name` starts each plain line (for a bar whose columns name it)."""

    def __init__(self, *columns, enabled: bool = True, transient: bool = False, plain: bool | None = None,
                 steps: int = 10, name: str = ""):
        self.enabled, self.name = bool(enabled), name
        # a disabled bar draws nothing: no need to ask rich what stdout is
        self.plain = bool(plain) if plain is not None else (self.enabled and not _interactive())
        self.steps = max(1, int(steps))
        self._rich = None
        self._tasks: dict[int, dict] = {}
        if self.enabled and not self.plain:
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(*columns, transient=transient)

    # ------------------------------------------------------------------ context
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    def start(self) -> None:
        if self._rich is not None:
            self._rich.start()

    def stop(self) -> None:
        if self._rich is not None:
            self._rich.stop()

    # ------------------------------------------------------------------ tasks
    def add_task(self, description: str, total: float | None = None, completed: float = 0) -> int:
        if self._rich is not None:
            return self._rich.add_task(description, total=total, completed=completed)
        task = len(self._tasks)
        self._tasks[task] = {"description": description, "total": total, "completed": completed,
                             "t0": time.perf_counter(), "mark": self._next_mark(total, completed)}
        return task

    def update(self, task: int, advance: float | None = None, completed: float | None = None,
               description: str | None = None) -> None:
        if self._rich is not None:
            self._rich.update(task, advance=advance, completed=completed, description=description)
            return
        t = self._tasks.get(task)
        if t is None:
            return
        if description is not None:
            t["description"] = description
        if completed is not None:
            t["completed"] = completed
        if advance is not None:
            t["completed"] += advance
        if self.enabled and t["mark"] is not None and t["completed"] >= t["mark"]:
            self._line(t)
            t["mark"] = self._next_mark(t["total"], t["completed"])

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def print(self, message: str) -> None:
        """A line of its own: above a rich bar, or plain in a log (nothing when disabled)."""
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            print(message, flush=True)

    # ------------------------------------------------------------------ plain lines
    def _next_mark(self, total, completed):
        """The next count at which a plain line is due: the next tenth of the total, or None (no total, or
        its end passed)."""
        if not total or total <= 0 or completed >= total:
            return None
        step = total / self.steps
        k = int(completed // step) + 1
        return min(total, k * step)

    def _line(self, t: dict) -> None:
        done, total = t["completed"], t["total"]
        elapsed = time.perf_counter() - t["t0"]
        count = f"{done:g}/{total:g}" if total else f"{done:g}"
        pct = f" ({100 * done / total:.0f} %)" if total else ""
        what = ": ".join(x for x in (self.name, t["description"]) if x)
        sys.stdout.write(f"{what}: {count}{pct}, {_clock(elapsed)}\n")
        sys.stdout.flush()


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"

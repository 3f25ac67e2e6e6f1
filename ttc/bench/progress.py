"""Progress of a bench on stderr: a live Rich display on a terminal, a line every ~10 s otherwise, or nothing.

Each (strategy, budget) pair is one task: problems done of total, accuracy so far, the engine's tokens/s
and the time left. Reporters are told about every record as it is written (`record`) and are used as
context managers, so a live display is always taken down before an error message is printed.
"""

from __future__ import annotations

import time
from collections import defaultdict

LINE_INTERVAL_S = 10.0


class Tally:
    """Counts per (strategy, budget): done, correct, tokens and engine seconds (new records only for rates)."""

    def __init__(self, pairs: list[tuple[str, int]], total: int, done: dict[tuple[str, int], list[bool]]):
        self.pairs = pairs
        self.total = total  # problems per pair
        self.done = {p: len(done.get(p, [])) for p in pairs}
        self.correct = {p: sum(done.get(p, [])) for p in pairs}
        self.start_done = dict(self.done)
        self.tokens: dict[tuple[str, int], int] = defaultdict(int)
        self.wall: dict[tuple[str, int], float] = defaultdict(float)
        self.t0 = time.monotonic()

    def add(self, pair: tuple[str, int], correct: bool, tokens: int, wall_s: float) -> None:
        self.done[pair] = self.done.get(pair, 0) + 1
        self.correct[pair] = self.correct.get(pair, 0) + bool(correct)
        self.tokens[pair] += tokens
        self.wall[pair] += wall_s

    def accuracy(self, pair) -> str:
        d = self.done.get(pair, 0)
        return f"{100 * self.correct.get(pair, 0) / d:5.1f}%" if d else "    -"

    def tok_s(self, pair) -> str:
        w = self.wall.get(pair, 0.0)
        return f"{self.tokens[pair] / w:7.0f}" if w > 0 else "      -"

    def eta_s(self) -> float | None:
        new = sum(self.done[p] - self.start_done[p] for p in self.pairs)
        left = sum(self.total - self.done[p] for p in self.pairs)
        if new <= 0:
            return None
        return (time.monotonic() - self.t0) / new * left


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Reporter:
    """Says nothing (--quiet)."""

    def __init__(self, tally: Tally):
        self.tally = tally

    def record(self, pair: tuple[str, int], correct: bool, tokens: int, wall_s: float) -> None:
        self.tally.add(pair, correct, tokens, wall_s)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


class LineReporter(Reporter):
    """One line at most every LINE_INTERVAL_S seconds, for logs and pipes."""

    def __init__(self, tally: Tally, console):
        super().__init__(tally)
        self.console = console
        self.last = time.monotonic()

    def record(self, pair, correct, tokens, wall_s) -> None:
        super().record(pair, correct, tokens, wall_s)
        now = time.monotonic()
        if now - self.last >= LINE_INTERVAL_S:
            self.last = now
            t = self.tally
            done = sum(t.done.values())
            total = t.total * len(t.pairs)
            accs = ", ".join(f"{s}@{b} {t.accuracy((s, b)).strip()}" for s, b in t.pairs[:6])
            self.console.print(
                f"bench: {done}/{total} records; accuracy {accs}; ETA {_clock(t.eta_s())}",
                markup=False, highlight=False, soft_wrap=True,
            )  # fmt: skip


class RichReporter(Reporter):
    """A live table of bars on a terminal."""

    def __init__(self, tally: Tally, console):
        super().__init__(tally)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("acc {task.fields[acc]}"),
            TextColumn("{task.fields[tok_s]} tok/s"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        width = max(len(f"{s}@{b}") for s, b in tally.pairs)
        self.tasks = {
            p: self.progress.add_task(
                f"{p[0]}@{p[1]}".ljust(width),
                total=tally.total,
                completed=tally.done[p],
                acc=tally.accuracy(p),
                tok_s=tally.tok_s(p),
            )  # fmt: skip
            for p in tally.pairs
        }

    def record(self, pair, correct, tokens, wall_s) -> None:
        super().record(pair, correct, tokens, wall_s)
        if pair in self.tasks:
            self.progress.update(
                self.tasks[pair], completed=self.tally.done[pair], acc=self.tally.accuracy(pair),
                tok_s=self.tally.tok_s(pair),
            )  # fmt: skip

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()


def make_reporter(tally: Tally, console, quiet: bool) -> Reporter:
    if quiet or console is None:
        return Reporter(tally)
    if console.is_terminal:
        return RichReporter(tally, console)
    return LineReporter(tally, console)

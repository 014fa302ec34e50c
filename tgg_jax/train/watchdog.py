"""A progress watchdog: a run that makes no step for `factor` x its median step time (and at
least `min_seconds`) is stuck (a hung collective, a dead peer, a deadlocked data worker). It
prints every thread's stack and exits the process with EXIT_CODE, so a scheduler restarts it
instead of it holding the job's accelerators forever."""

from __future__ import annotations

import faulthandler
import os
import statistics
import sys
import threading
import time

from absl import logging

EXIT_CODE = 3


def _stalled(message: str) -> None:
    """Default action: stacks of every thread to stderr, one line, exit without cleanup (the
    stuck thread would never let a normal exit finish)."""
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    print(f"tgg-train: {message}", file=sys.stderr, flush=True)
    os._exit(EXIT_CODE)


class Watchdog:
    """beat() after each step; paused() around phases with their own length (evaluation, saves).
    Armed once `warmup_steps` step times are known (the first step compiles)."""

    def __init__(self, factor: float, min_seconds: float, *, warmup_steps: int = 3,
                 on_stall=_stalled, poll_seconds: float = 1.0):
        self.factor, self.min_seconds, self.warmup_steps = factor, min_seconds, warmup_steps
        self.on_stall, self.poll_seconds = on_stall, poll_seconds
        self._times: list[float] = []
        self._last = time.monotonic()
        self._paused = 0
        self._step = None
        self._stop = threading.Event()
        self._thread = None
        if factor > 0:
            self._thread = threading.Thread(target=self._watch, name="tgg-watchdog", daemon=True)
            self._thread.start()

    def beat(self, step: int) -> None:
        now = time.monotonic()
        if self._step is not None:
            self._times = (self._times + [now - self._last])[-100:]
        self._last, self._step = now, step

    def limit(self) -> float | None:
        """Seconds without a step that count as stuck; None while not armed."""
        if len(self._times) < self.warmup_steps:
            return None
        return max(self.factor * statistics.median(self._times), self.min_seconds)

    def pause(self) -> None:
        self._paused += 1

    def resume(self) -> None:
        self._paused -= 1
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            limit = self.limit()
            waited = time.monotonic() - self._last
            if self._paused or limit is None or waited < limit:
                continue
            median = statistics.median(self._times)
            message = (f"no training step for {waited:.0f} s after step {self._step} ({self.factor:g} x "
                       f"the median step time {median:.3g} s, at least {self.min_seconds:g} s); "
                       f"the stacks of every thread are above; exiting with code {EXIT_CODE}")
            logging.error(message)
            self.on_stall(message)
            return

    def close(self) -> None:
        self._stop.set()

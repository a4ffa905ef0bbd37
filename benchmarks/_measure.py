"""Measurement helpers shared by the benchmark scripts: peak resident memory and timed repeats."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any


class PeakMemory:
    """Sample this process's resident set size in a thread; ``peak_mb`` is the peak above the start (MiB)."""

    def __init__(self, interval: float = 0.002) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.start_rss = self._process.memory_info().rss
        self.peak_rss = self.start_rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return (self.peak_rss - self.start_rss) / 2**20


def time_repeats(run: Callable[[], Any], repeats: int, *, warm_up: bool = True) -> dict:
    """Call ``run`` once untimed (when ``warm_up``), then ``repeats`` times.

    Returns ``median_s`` and ``times_s`` (wall seconds), ``peak_mb`` (resident memory above the
    warmed-up process, MiB) and ``result`` (the last return value).
    """
    if warm_up:
        del_result = run()
        del del_result
    times, result = [], None
    with PeakMemory() as memory:
        for _ in range(repeats):
            result = None
            start = time.perf_counter()
            result = run()
            times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "times_s": times, "peak_mb": memory.peak_mb, "result": result}

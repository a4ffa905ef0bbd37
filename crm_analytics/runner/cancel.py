"""Cancelling runs: SIGINT and SIGTERM while runs are under way end them instead of the runner.

While runs are under way SIGINT and SIGTERM only set a flag (:func:`cancel_on_signals`); the
runner's loop then kills each run's process tree (:func:`cancel_runs`), records it ``cancelled``
(with ``"signal"``, its partial notebook and report; ``latest`` stays) and the command exits 128
plus the signal number. Further signals while stopping change nothing. ``run.json`` names the
runner (``pid``, ``pid_started_at``), so a ``.tmp`` folder whose runner is gone is recorded
``abandoned`` by the next run of the analysis or the next index build (:mod:`crm_analytics.stale_runs`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from crm_analytics.runner.processes import kill_process_tree

if TYPE_CHECKING:
    from crm_analytics.runner.execution import Run

log = logging.getLogger(__name__)

CANCEL_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Cancellation:
    """The first SIGINT or SIGTERM received while runs are under way.

    The handlers only record the signal; the runner's loop then kills the process trees of its
    runs and records them ``cancelled``. Later signals change nothing, so a second Ctrl-C while
    the runs are being stopped cannot interrupt the stopping and orphan a kernel.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def request(self, signum: int, frame: Any = None) -> None:
        if self.signum is None:
            self.signum = signum


@contextlib.contextmanager
def cancel_on_signals():
    """Within the block SIGINT and SIGTERM set the yielded :class:`Cancellation` instead of raising.

    Only the main thread can handle signals; elsewhere (a scheduler's worker) nothing is installed
    and the yielded object never fires. The previous handlers are restored on exit.
    """
    cancellation = Cancellation()
    if threading.current_thread() is not threading.main_thread():
        yield cancellation
        return
    previous = {signum: signal.getsignal(signum) for signum in CANCEL_SIGNALS}
    for signum in CANCEL_SIGNALS:
        signal.signal(signum, cancellation.request)
    try:
        yield cancellation
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def cancel_runs(runs: Iterable[Run], signum: int) -> None:
    """Kill the process tree of every run still under way and mark it cancelled by ``signum``."""
    for run in runs:
        if run.process is None or run.cancelled_by is not None or run.process.exitcode is not None:
            continue
        run.cancelled_by = signum
        log.warning("run %s/%s cancelled by %s", run.analysis, run.run_id, signal.Signals(signum).name)
        kill_process_tree(run.process.pid)

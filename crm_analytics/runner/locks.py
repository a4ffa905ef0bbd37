"""The per-analysis lock: one run of an analysis on a dataset at a time.

The lock is a file lock on ``outputs/<dataset>/<analysis>/.lock``, taken without waiting: a run
that finds it held is recorded ``skipped_locked``. The run's forked child inherits the lock's file
descriptor and keeps it until the kernel and every other process of the run are gone, so a runner
killed outright leaves the lock held until its run is really over. A child must hold no other
run's lock, so the descriptors of the locks this process holds are kept here (:func:`held_fds`)
for the child to close.
"""

from __future__ import annotations

import threading
from pathlib import Path

import filelock

from crm_analytics.runner.records import LOCK

Locked = filelock.Timeout  # raised by :func:`acquire` when another process holds the lock

_held_fds: set[int] = set()
_held_fds_guard = threading.Lock()


def acquire(analysis_root: Path) -> filelock.BaseFileLock:
    """Take the lock of the analysis folder ``analysis_root`` at once, or raise :data:`Locked` (or ``OSError``)."""
    lock = filelock.FileLock(str(analysis_root / LOCK), timeout=0)
    lock.acquire()
    fd = lock_fd(lock)
    if fd is not None:
        with _held_fds_guard:
            _held_fds.add(fd)
    return lock


def release(lock: filelock.BaseFileLock) -> None:
    """Release ``lock`` and forget its descriptor."""
    fd = lock_fd(lock)
    with _held_fds_guard:
        _held_fds.discard(fd)
    lock.release()


def lock_fd(lock: filelock.BaseFileLock) -> int | None:
    """The file descriptor that holds ``lock`` (``None`` when not held).

    filelock keeps it in a private attribute (``lock._context.lock_file_fd``, as in the version of
    ``constraints.txt``); the runner needs it so the forked child keeps exactly this lock and closes
    every other.
    """
    return getattr(getattr(lock, "_context", None), "lock_file_fd", None)


def held_fds() -> set[int]:
    """The descriptors of every lock this process holds (a copy).

    Read without the guard: it is called in a forked child, where no other thread runs and a
    guard held by a parent's thread at the fork would never be released.
    """
    return set(_held_fds)

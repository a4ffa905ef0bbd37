"""Batches of runs: ``run_all``, the order runs wait for each other in, and the critical path first.

``cleansing`` runs first (it builds the warehouse the others read); the rest run with a few
parallel children from one thread, each waiting for the analyses ``parameters/run_order.yaml``
says it needs (``after:``) and the longest chains of runs starting first.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from crm_analytics import kernels, paths, warehouse
from crm_analytics.runner.cancel import Cancellation, cancel_on_signals, cancel_runs
from crm_analytics.runner.execution import Run, finish, poll, prepare, refresh_index, start, wait_for_any
from crm_analytics.runner.parameters import CLEANSING, RunnerError, batch_parameters, list_analyses
from crm_analytics.runner.records import RunResult, latest_run, read_run_record

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, str, "RunResult | None"], None]


def run_all(
    *,
    jobs: int = 2,
    analyses: list[str] | None = None,
    parameters_by_analysis: Mapping[str, Mapping[str, Any]] | None = None,
    on_progress: ProgressCallback | None = None,
    cell_timeout: float = 600,
    run_timeout: float = 3600,
    notebook_dir: str | Path | None = None,
    output_root: str | Path | None = None,
    parameters_root: str | Path | None = None,
    preload_kernels: bool = False,
    dataset: str | None = None,
    common_parameters: Mapping[str, Any] | None = None,
    parameters_file: str | Path | None = None,
) -> list[RunResult]:
    """Run ``cleansing`` first (when present), then every other analysis with ``jobs`` parallel workers.

    Every run reads ``dataset`` (default: the project's default dataset). ``parameters_file`` and
    ``common_parameters`` (the latter winning) go to every analysis whose notebook declares the
    key; a key no analysis declares is a :class:`ParameterError`. ``parameters_by_analysis`` wins
    over both.

    If ``cleansing`` does not succeed the others are not started (it builds the warehouse they read).
    Every analysis's parameters are checked before anything runs. ``on_progress(kind, analysis,
    result)`` is called from this thread with ``kind`` ``"started"``, ``"finished"`` (with the
    result) or ``"tick"`` (about twice a second, ``analysis`` empty) so a display can refresh
    without a thread of its own (forking next to other threads is best avoided).

    With ``preload_kernels`` this process imports the analysis libraries once, while the first
    run works, and later runs start their kernels from a fork of it (``crm_analytics.kernels``),
    saving each notebook's interpreter start and imports. Leave it off in a long-lived process
    whose code may change between batches: the kernels would inherit the modules loaded first.

    Returns
    -------
    list of RunResult
        In the order the runs finished.
    """
    names = list(analyses) if analyses is not None else list_analyses(notebook_dir)
    chosen, by_analysis = batch_parameters(
        names, dataset=dataset, common_parameters=common_parameters, parameters_file=parameters_file,
        parameters_by_analysis=parameters_by_analysis, notebook_dir=notebook_dir,
    )
    common = {
        "cell_timeout": cell_timeout,
        "run_timeout": run_timeout,
        "notebook_dir": notebook_dir,
        "output_root": output_root,
        "parameters_root": parameters_root,
        "dataset": chosen,
    }
    for name in names:  # fail fast, before any run
        prepare(name, parameters=by_analysis.get(name), parameters_file=None, **common)
    notify = on_progress or (lambda kind, analysis, result: None)
    results: list[RunResult] = []
    with cancel_on_signals() as cancellation:
        if CLEANSING in names:
            names.remove(CLEANSING)
            first = _run_batch([CLEANSING], 1, by_analysis, common, notify, preload=preload_kernels, cancellation=cancellation)
            results.extend(first)
            if not first[0].ok:
                log.error("cleansing did not succeed (%s); the other analyses were not run", first[0].status)
                return results
        dependencies = run_order(names, parameters_root=parameters_root)
        queue = critical_path_first(
            names, dependencies, output_root=output_root, typical=typical_durations(parameters_root=parameters_root), dataset=chosen
        )
        with engine_memory_shared(jobs):
            results.extend(_run_batch(queue, max(1, jobs), by_analysis, common, notify, dependencies, preload=preload_kernels,
                                      cancellation=cancellation))
    return results


@contextlib.contextmanager
def engine_memory_shared(jobs: int) -> Iterator[str | None]:
    """While the block runs, the runs it starts open the warehouse with their share of the memory.

    With more than one job, ``warehouse.MEMORY_LIMIT_ENV`` is set to ``warehouse.parallel_memory_limit(jobs)``
    (inherited by every run and its kernel), so the engines of runs side by side together take at most half
    the RAM. Only DuckDB is bounded, not the frames and models a run holds. A limit already in the environment
    is kept, and so is a single job's default. Yields the limit set, else ``None``.
    """
    if jobs <= 1 or os.environ.get(warehouse.MEMORY_LIMIT_ENV):
        yield None
        return
    limit = warehouse.parallel_memory_limit(jobs)
    os.environ[warehouse.MEMORY_LIMIT_ENV] = limit
    try:
        yield limit
    finally:
        os.environ.pop(warehouse.MEMORY_LIMIT_ENV, None)


def run_order(names: Iterable[str], *, parameters_root: str | Path | None = None) -> dict[str, set[str]]:
    """Which of ``names`` each analysis must wait for, from ``parameters/run_order.yaml`` (``after:``).

    Dependencies outside ``names`` are ignored (their latest results are used as they are).
    """
    declared = _run_order_file(parameters_root).get("after") or {}
    chosen = set(names)
    return {name: set(declared.get(name, ())) & chosen for name in chosen}


def typical_durations(*, parameters_root: str | Path | None = None) -> dict[str, float]:
    """Seconds each analysis usually takes, from ``parameters/run_order.yaml`` (``typical_seconds:``).

    Used to order runs that have never succeeded here (a fresh checkout); empty when not given.
    """
    return {name: float(seconds) for name, seconds in (_run_order_file(parameters_root).get("typical_seconds") or {}).items()}


def _run_order_file(parameters_root: str | Path | None) -> dict:
    path = Path(parameters_root or paths.parameters_dir()) / "run_order.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}


def critical_path_first(
    names: Iterable[str],
    dependencies: Mapping[str, set[str]] | None = None,
    *,
    output_root: str | Path | None = None,
    typical: Mapping[str, float] | None = None,
    dataset: str | None = None,
) -> list[str]:
    """``names`` ordered by the length of the longest chain of runs each one starts, longest first.

    A chain's length is the sum of the last successful durations of the analysis and of those that
    wait for it (``dependencies``: analysis -> what it waits for), so a run others depend on starts
    early and workers are not left idle at the end. An analysis never run here counts its
    ``typical`` seconds, else as long as the longest one known (1 s when none is known). Ties go by name.
    """
    names = list(names)
    known = {name: _last_duration(name, output_root, dataset) for name in names}
    fallback = max((d for d in known.values() if d is not None), default=1.0)
    duration = {name: (typical or {}).get(name, fallback) if d is None else d for name, d in known.items()}
    dependents: dict[str, set[str]] = {name: set() for name in names}
    for name, waits_for in (dependencies or {}).items():
        for other in waits_for & dependents.keys():
            dependents[other].add(name)

    lengths: dict[str, float] = {}
    visiting: list[str] = []

    def chain(name: str) -> float:
        if name in visiting:
            raise RunnerError(f"parameters/run_order.yaml has a cycle among {sorted(visiting[visiting.index(name):])}")
        if name not in lengths:
            visiting.append(name)
            lengths[name] = duration[name] + max((chain(d) for d in dependents[name]), default=0.0)
            visiting.pop()
        return lengths[name]

    return sorted(names, key=lambda name: (-chain(name), name))


def _last_duration(analysis: str, output_root: str | Path | None, dataset: str | None = None) -> float | None:
    """Seconds the last successful run of ``analysis`` on ``dataset`` took; None when it never succeeded."""
    run = latest_run(analysis, output_root=output_root, dataset=dataset)
    seconds = (read_run_record(run) or {}).get("duration_s") if run else None
    return float(seconds) if seconds is not None else None


def _run_batch(
    names: list[str],
    jobs: int,
    by_analysis: Mapping[str, Mapping[str, Any]],
    common: dict,
    notify: ProgressCallback,
    dependencies: Mapping[str, set[str]] | None = None,
    *,
    preload: bool = False,
    cancellation: Cancellation | None = None,
) -> list[RunResult]:
    """Run ``names`` with at most ``jobs`` children at a time, from this single thread.

    An analysis starts only when every analysis it depends on (``dependencies``) has finished,
    successfully or not: a dependent run then uses whatever latest results exist. With
    ``preload`` the kernel libraries are imported here once the first runs are under way.
    Once ``cancellation`` has fired no run starts and the running ones are cancelled.
    """
    queue = list(names)
    waits_for = {name: set((dependencies or {}).get(name, ())) for name in names}
    running: list[Run] = []
    done: list[RunResult] = []
    while queue or running:
        if cancellation is not None and cancellation.signum is not None:
            queue.clear()
            cancel_runs(running, cancellation.signum)
        unfinished = set(queue) | {r.analysis for r in running}
        if queue and not running and all(waits_for[n] & unfinished for n in queue):
            raise RunnerError(f"parameters/run_order.yaml has a cycle among {sorted(queue)}")
        while (ready := [n for n in queue if not waits_for[n] & unfinished]) and len(running) < jobs:
            name = ready[0]
            queue.remove(name)
            run = prepare(name, parameters=by_analysis.get(name), parameters_file=None, **common)
            notify("started", name, None)
            immediate = start(run, prefork_kernel=preload and kernels.is_preloaded())
            if immediate is not None:
                done.append(immediate)
                notify("finished", name, immediate)
                refresh_index(common["output_root"], common["dataset"])
            else:
                running.append(run)
        if preload and running and not kernels.is_preloaded():
            kernels.preload()  # in this process, while the started runs use the other cores
        for run in [r for r in running if poll(r)]:
            running.remove(run)
            result = finish(run)
            done.append(result)
            notify("finished", run.analysis, result)
            refresh_index(common["output_root"], common["dataset"])
        if running:
            wait_for_any(running, 0.5)
            notify("tick", "", None)
    return done

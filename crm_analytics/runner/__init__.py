"""Run analysis notebooks with papermill and leave an immutable record of each run.

A run executes ``notebooks/<analysis>.ipynb`` on one dataset in a forked child process and
leaves ``outputs/<dataset>/<analysis>/<run_id>/`` (the executed notebook, ``report.html``,
tables, figures, ``run.json``); ``latest`` moves only after a success. Each concern has its
module:

- :mod:`~crm_analytics.runner.parameters`: analysis names, the dataset of a run, parameter
  files, merging and checking parameters (names and types) before a kernel starts; the errors.
- :mod:`~crm_analytics.runner.records`: statuses, :class:`RunResult`, run ids, ``run.json``,
  the data fingerprint, versions, the folder layout and the ``latest`` pointer.
- :mod:`~crm_analytics.runner.execution`: one run's lifecycle (prepare, start, poll, finish),
  ``not_applicable`` and ``skipped_locked`` runs, :func:`run_analysis`.
- :mod:`~crm_analytics.runner.verdict`: the status a run ends with, from the child's outcome
  and the executed notebook.
- :mod:`~crm_analytics.runner.processes`: the forked child, its parent watch, killing a
  process tree.
- :mod:`~crm_analytics.runner.locks`: the per-analysis lock and the descriptors a child keeps.
- :mod:`~crm_analytics.runner.cancel`: SIGINT and SIGTERM cancel the runs, not the runner.
- :mod:`~crm_analytics.runner.report`: the HTML report of the executed notebook.
- :mod:`~crm_analytics.runner.batch`: :func:`run_all`, run order and the critical path first.

Every name below is importable from ``crm_analytics.runner``; code that replaces one of them
(a test's monkeypatch) affects the callers that look it up here, such as the scheduler's
``runner.run_analysis``, not the runner's own modules.
"""

from crm_analytics.imports import import_without

# jsonschema (under nbformat) loads rfc3987_syntax, which builds a parser for the "iri" format at
# import (2-3 s); notebook validation never uses that format. This runs before any module of the
# package imports nbformat.
import_without("jsonschema", hidden=("rfc3987_syntax",))

from crm_analytics.runner.batch import (
    ProgressCallback,
    critical_path_first,
    run_all,
    run_order,
    typical_durations,
)
from crm_analytics.runner.cancel import CANCEL_SIGNALS, Cancellation, cancel_on_signals
from crm_analytics.runner.execution import inapplicable_reason, run_analysis
from crm_analytics.runner.parameters import (
    CLEANSING,
    DATASET_PARAMETER,
    KERNEL_NAME,
    REQUIRED_PARAMETERS,
    ParameterError,
    RunnerError,
    UnknownAnalysisError,
    UnknownDatasetError,
    batch_parameters,
    check_parameter_types,
    check_parameters,
    choose_dataset,
    declared_parameters,
    list_analyses,
    load_parameters_file,
    notebook_path,
    parse_value,
    resolve_parameters,
    spread_parameters,
)
from crm_analytics.runner.processes import kill_process_tree
from crm_analytics.runner.records import (
    ABANDONED,
    CANCELLED,
    FAILED,
    KERNEL_DIED,
    LATEST,
    LOCK,
    NOT_APPLICABLE,
    REPORT,
    RUN_RECORD,
    SKIPPED_LOCKED,
    STATUSES,
    SUCCEEDED,
    TIMEOUT,
    TMP_SUFFIX,
    TRUNCATED,
    RunResult,
    count_alerts,
    data_fingerprint,
    dataset_outputs,
    git_commit,
    latest_run,
    move_latest,
    new_run_id,
    package_versions,
    read_run_record,
    write_json_atomic,
)
from crm_analytics.runner.report import warm_up, write_report
from crm_analytics.runner.verdict import inspect_executed

__all__ = [
    "ABANDONED", "CANCELLED", "CANCEL_SIGNALS", "CLEANSING", "DATASET_PARAMETER", "FAILED", "KERNEL_DIED", "KERNEL_NAME",
    "LATEST", "LOCK", "NOT_APPLICABLE", "REPORT", "REQUIRED_PARAMETERS", "RUN_RECORD", "SKIPPED_LOCKED", "STATUSES",
    "SUCCEEDED", "TIMEOUT", "TMP_SUFFIX", "TRUNCATED",
    "Cancellation", "ParameterError", "ProgressCallback", "RunResult", "RunnerError", "UnknownAnalysisError",
    "UnknownDatasetError",
    "batch_parameters", "cancel_on_signals", "check_parameter_types", "check_parameters", "choose_dataset",
    "count_alerts", "critical_path_first", "data_fingerprint", "dataset_outputs", "declared_parameters", "git_commit",
    "inapplicable_reason", "inspect_executed", "kill_process_tree", "latest_run", "list_analyses",
    "load_parameters_file", "move_latest", "new_run_id", "notebook_path", "package_versions", "parse_value",
    "read_run_record", "resolve_parameters", "run_all", "run_analysis", "run_order", "spread_parameters",
    "typical_durations", "warm_up", "write_json_atomic", "write_report",
]

"""Run the analyses on the schedule of ``parameters/schedule.yaml`` (APScheduler 3.x).

``parameters/schedule.yaml``::

    misfire_grace_time: 300        # seconds a late run may still start (default 300)
    dataset: online_retail_ii      # optional: dataset of the jobs (default: the project's default dataset)
    timezone: Europe/London        # optional: default zone of the jobs (default: the dataset's time zone)
    jobs:
      - id: kpi-daily              # unique
        analysis: kpi              # notebooks/kpi.ipynb
        dataset: demo              # optional, overrides the schedule's dataset
        parameters: parameters/kpi/default.yaml   # optional, relative to the project
        cron: "0 7 * * *"          # minute hour day month day-of-week (crontab meaning: 0 = Sunday)
        timezone: Asia/Shanghai    # optional, overrides the default zone
        retries: 1                 # extra attempts after a failed run (default 0)
        retry_delay_s: 60          # pause before a retry (default 60)
        pdf: true                  # optional: also print a successful run's report to report.pdf in its run folder
        recipients: [ops@example.com]   # optional: mail a successful run's report (crm_analytics.mailer)
        attach_tables: [alerts]    # optional: result tables attached to the mail as masked CSV
        on_failure: notice         # optional: nothing (default) or a short notice when the run fails

A job's zone is its ``timezone``, else the schedule's ``timezone``, else the business time zone
of the job's dataset (its ``dataset``, else the schedule's, else the project default), else UTC.

One long-lived scheduler process runs the jobs (coalesce, one instance at a time, a
misfire grace time). Its job store is a SQLite file (``outputs/.scheduler/jobs.sqlite``)
so a run that fell due while the scheduler was down is still started after a restart
when within the grace time, and logged as missed otherwise. Each job calls the runner,
which takes a per-analysis file lock: a second process never runs the same analysis at
the same time; it records a ``skipped_locked`` run instead.

Every trigger, skip, miss, retry and result is appended to ``outputs/scheduler.log.jsonl``
(one JSON object a line), and so is every mail delivery attempt. Cell output never goes there.
SMTP settings come from the environment or a secrets file (:mod:`crm_analytics.mailer`), never
from the schedule: a schedule holding any is refused.
"""

from __future__ import annotations

import json
import logging
import shlex
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from apscheduler.triggers.cron import CronTrigger

from crm_analytics import paths

if TYPE_CHECKING:  # the schedulers load only when one is built: pages read cron times without them
    from apscheduler.events import JobExecutionEvent, JobSubmissionEvent, SchedulerEvent
    from apscheduler.schedulers.base import BaseScheduler

    from crm_analytics.mailer import MailOptions

log = logging.getLogger(__name__)

DEFAULT_TIMEZONE = "UTC"  # only when no zone is given and the dataset's cannot be read
DEFAULT_MISFIRE_GRACE_S = 300
LOG_NAME = "scheduler.log.jsonl"
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_JOB_KEYS = {"id", "analysis", "dataset", "parameters", "cron", "timezone", "retries", "retry_delay_s", "pdf",
             "recipients", "attach_tables", "on_failure"}
_RETRYABLE = {"failed", "timeout", "kernel_died", "truncated"}


class ScheduleError(ValueError):
    """``schedule.yaml`` is malformed; the message names the job and the field."""


@dataclass(frozen=True)
class ScheduledJob:
    """One entry of ``schedule.yaml``."""

    id: str
    analysis: str
    cron: str
    timezone: str
    parameters: str | None = None
    retries: int = 0
    retry_delay_s: float = 60.0
    dataset: str | None = None
    pdf: bool = False
    mail: MailOptions | None = None  # recipients of the report; None: nothing is mailed


@dataclass(frozen=True)
class ScheduleConfig:
    """The whole schedule."""

    jobs: tuple[ScheduledJob, ...]
    misfire_grace_time: int = DEFAULT_MISFIRE_GRACE_S
    timezone: str = DEFAULT_TIMEZONE
    source: Path | None = field(default=None, compare=False)
    dataset: str | None = None


# ----------------------------------------------------------------------------- configuration


def schedule_file() -> Path:
    """Return ``parameters/schedule.yaml``."""
    return paths.parameters_dir() / "schedule.yaml"


def _zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{where}: unknown time zone {name!r} (use an IANA name such as Europe/London)") from None


def _day_numbers(part: str, where: str) -> set[int]:
    """Expand one comma-separated piece of a crontab day-of-week field (0 or 7 = Sunday)."""
    names = {name: i for i, name in enumerate(_DAY_NAMES)}

    def day(token: str) -> int:
        token = token.lower()
        if token in names:
            return names[token]
        if token.isdigit() and 0 <= int(token) <= 7:
            return int(token) % 7
        raise ScheduleError(f"{where}: bad day of week {token!r}")

    body, _, step_text = part.partition("/")
    step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
    if step_text and step is None:
        raise ScheduleError(f"{where}: bad step {step_text!r} in day of week")
    if body == "*":
        first, last = 0, 6
    elif "-" in body:
        first_text, last_text = body.split("-", 1)
        first, last = day(first_text), day(last_text)
        if last_text.strip() == "7":
            last = 7
    else:
        first = last = day(body)
        if step:
            last = 7
    return {d % 7 for d in range(first, last + 1, step or 1)}


def crontab_day_of_week(field_text: str, where: str = "cron") -> str:
    """Translate a crontab day-of-week field (0 = Sunday) into APScheduler 3 day names.

    APScheduler 3 counts 0 as Monday, so numbers are never passed through.
    """
    if field_text == "*":
        return "*"
    days: set[int] = set()
    for part in field_text.split(","):
        days |= _day_numbers(part.strip(), where)
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def cron_trigger(expr: str, tz: str, *, where: str = "cron") -> CronTrigger:
    """Return the :class:`CronTrigger` of a five-field crontab expression in the zone ``tz``."""
    fields = expr.split()
    if len(fields) != 5:
        raise ScheduleError(f"{where}: cron {expr!r} must have 5 fields (minute hour day month day-of-week)")
    minute, hour, day, month, dow = fields
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=crontab_day_of_week(dow, where),
            timezone=_zone(tz, where),
        )
    except ValueError as exc:
        if isinstance(exc, ScheduleError):
            raise
        raise ScheduleError(f"{where}: bad cron {expr!r}: {exc}") from None


def dataset_zone(dataset: str | None, *, where: str = "schedule", required: bool = True) -> str:
    """Return the business time zone of ``dataset`` (``None``: the project default).

    An unreadable dataset raises :class:`ScheduleError` naming ``where``; with ``required=False``
    the default dataset may be absent and :data:`DEFAULT_TIMEZONE` (UTC) is returned instead.
    """
    from crm_analytics import datasets

    try:
        return datasets.load_dataset(dataset or None).time_zone
    except datasets.DatasetError as exc:
        if required:
            raise ScheduleError(f"{where}: {exc}") from None
        return DEFAULT_TIMEZONE


def _mail_options(raw: Mapping[str, Any], where: str) -> MailOptions | None:
    """The job's mail options (:func:`crm_analytics.mailer.parse_mail_options`); SMTP settings in the schedule are refused."""
    from crm_analytics import mailer

    try:
        mailer.refuse_smtp_settings(raw, where)
        return mailer.parse_mail_options(raw, where)
    except mailer.MailConfigError as exc:
        raise ScheduleError(str(exc)) from None


def _parse_job(raw: Any, index: int, default_zone: str | None, default_dataset: str | None = None) -> ScheduledJob:
    where = f"schedule job #{index + 1}"
    if not isinstance(raw, Mapping):
        raise ScheduleError(f"{where}: expected a mapping with id, analysis and cron")
    where = f"schedule job {raw.get('id', f'#{index + 1}')!r}"
    mail = _mail_options(raw, where)
    unknown = sorted(set(raw) - _JOB_KEYS)
    if unknown:
        raise ScheduleError(f"{where}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(_JOB_KEYS))}")
    missing = [key for key in ("id", "analysis", "cron") if not raw.get(key)]
    if missing:
        raise ScheduleError(f"{where}: missing {', '.join(missing)}")
    if not isinstance(raw.get("pdf", False), bool):
        raise ScheduleError(f"{where}: pdf must be true or false, got {raw.get('pdf')!r}")
    dataset = str(raw.get("dataset") or default_dataset or "") or None
    zone = raw.get("timezone") or default_zone
    if not zone:
        zone = dataset_zone(dataset, where=where, required=dataset is not None)
    elif raw.get("dataset"):
        dataset_zone(dataset, where=where)  # the named dataset must exist
    job = ScheduledJob(
        id=str(raw["id"]),
        analysis=str(raw["analysis"]),
        dataset=dataset,
        cron=str(raw["cron"]).strip(),
        timezone=str(zone),
        parameters=str(raw["parameters"]) if raw.get("parameters") else None,
        retries=int(raw.get("retries", 0)),
        retry_delay_s=float(raw.get("retry_delay_s", 60.0)),
        pdf=raw.get("pdf", False),
        mail=mail,
    )
    if job.retries < 0 or job.retry_delay_s < 0:
        raise ScheduleError(f"{where}: retries and retry_delay_s must not be negative")
    cron_trigger(job.cron, job.timezone, where=where)
    return job


def parse_schedule(raw: Any, *, source: Path | None = None, dataset: str | None = None) -> ScheduleConfig:
    """Validate a loaded ``schedule.yaml`` document and return it as a :class:`ScheduleConfig`.

    ``dataset`` (the command line's ``--dataset``) replaces the schedule's own ``dataset:`` as the
    dataset of jobs that do not name one.
    """
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ScheduleError("schedule: expected a mapping with a 'jobs' list")
    from crm_analytics import mailer

    try:
        mailer.refuse_smtp_settings(raw, "schedule")
    except mailer.MailConfigError as exc:
        raise ScheduleError(str(exc)) from None
    default_dataset = str(dataset or raw.get("dataset") or "") or None
    declared_zone = str(raw["timezone"]) if raw.get("timezone") else None
    if declared_zone:
        _zone(declared_zone, "schedule")
    zone = declared_zone or dataset_zone(default_dataset, required=default_dataset is not None)
    if declared_zone and default_dataset:
        dataset_zone(default_dataset)  # the named dataset must exist
    entries = raw.get("jobs") or []
    if not isinstance(entries, list):
        raise ScheduleError("schedule: 'jobs' must be a list")
    jobs = tuple(_parse_job(entry, i, declared_zone, default_dataset) for i, entry in enumerate(entries))
    ids = [job.id for job in jobs]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ScheduleError(f"schedule: duplicate job id(s) {', '.join(duplicated)}")
    grace = int(raw.get("misfire_grace_time", DEFAULT_MISFIRE_GRACE_S))
    return ScheduleConfig(jobs=jobs, misfire_grace_time=grace, timezone=zone, source=source, dataset=default_dataset)


def load_schedule(
    path: str | Path | None = None,
    *,
    dataset: str | None = None,
    check_jobs: bool = True,
    notebook_dir: str | Path | None = None,
    parameters_root: str | Path | None = None,
) -> ScheduleConfig:
    """Read and validate ``schedule.yaml`` (default ``parameters/schedule.yaml``); ``dataset`` as in :func:`parse_schedule`.

    With ``check_jobs`` (the default) every job is also checked as the runner would check it when it
    fires (:func:`check_jobs_can_run`, with the runner's ``notebook_dir`` and ``parameters_root``), so a
    mistake is reported when the schedule is loaded rather than at fire time.
    """
    path = Path(path) if path else schedule_file()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScheduleError(f"schedule file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ScheduleError(f"schedule file {path} is not valid YAML: {exc}") from None
    try:
        config = parse_schedule(raw, source=path, dataset=dataset)
    except ScheduleError as exc:
        raise ScheduleError(f"{path}: {exc}") from None
    if check_jobs:
        check_jobs_can_run(config, notebook_dir=notebook_dir, parameters_root=parameters_root)
    return config


def job_parameters_file(job: ScheduledJob) -> str | None:
    """The absolute path of a job's parameter file (a relative one is taken from the checkout), or ``None``."""
    if not job.parameters:
        return None
    given = Path(job.parameters)
    return str(given if given.is_absolute() else paths.code_root() / given)


def check_jobs_can_run(
    config: ScheduleConfig, *, notebook_dir: str | Path | None = None, parameters_root: str | Path | None = None
) -> None:
    """Raise :class:`ScheduleError` for the first job the runner would refuse when it fires.

    Checks, per job and before any kernel: the analysis has a notebook (else the closest name), the
    parameter file exists and its keys and value types fit the notebook, and the dataset exists.
    The message names the schedule file, the job and the problem.
    """
    from crm_analytics import runner

    for job in config.jobs:
        try:
            notebook = runner.notebook_path(job.analysis, notebook_dir)
            runner.resolve_parameters(job.analysis, notebook=notebook, parameters_file=job_parameters_file(job),
                                      parameters_root=parameters_root, dataset=job.dataset)
        except runner.RunnerError as exc:
            where = f"{config.source}: " if config.source else ""
            raise ScheduleError(f"{where}schedule job {job.id!r}: {exc}") from None


# ----------------------------------------------------------------------------- the run log


class RunLog:
    """Append-only JSON-lines log of the scheduler (never any cell output)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._guard = threading.Lock()

    def write(self, event: str, **fields: Any) -> dict:
        """Append one record ``{"time", "event", **fields}`` and return it."""
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "event": event, **fields}
        line = json.dumps(record, default=str, ensure_ascii=False)
        with self._guard:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        return record

    def read(self) -> list[dict]:
        """Return every record written so far."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def default_log_path(output_root: str | Path | None = None) -> Path:
    """Return ``outputs/scheduler.log.jsonl`` (one log for every dataset's jobs)."""
    return (Path(output_root) if output_root else paths.outputs_root()) / LOG_NAME


# ----------------------------------------------------------------------------- executing a job


def execute_job(
    *,
    job_id: str,
    analysis: str,
    parameters_file: str | None = None,
    retries: int = 0,
    retry_delay_s: float = 60.0,
    log_path: str,
    runner_options: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    pdf: bool = False,
    mail: Mapping[str, Any] | None = None,
) -> str:
    """Run one scheduled job on ``dataset``: the analysis, then up to ``retries`` more attempts while it fails.

    Returns the final status. A ``skipped_locked`` run (another process runs the analysis) is
    logged as a skip and not retried. With ``pdf``, a successful run's report is also printed to
    ``report.pdf`` in its run folder (:func:`print_report`). With ``mail`` (``MailOptions.as_kwargs``),
    the final run is mailed (:func:`send_mail`). Everything is logged to ``log_path``.
    """
    from crm_analytics import runner

    run_log = RunLog(log_path)
    options = dict(runner_options or {})
    if dataset:
        options["dataset"] = dataset
    run_log.write("trigger", job_id=job_id, analysis=analysis, dataset=options.get("dataset"), parameters_file=parameters_file)
    status, result = "failed", None
    for attempt in range(1, retries + 2):
        try:
            result = runner.run_analysis(analysis, parameters_file=parameters_file, **options)
        except runner.RunnerError as exc:
            run_log.write("error", job_id=job_id, analysis=analysis, attempt=attempt, message=str(exc))
            status, result = "failed", None
            break
        status = result.status
        fields = {
            "job_id": job_id,
            "analysis": analysis,
            "dataset": result.dataset,
            "attempt": attempt,
            "run_id": result.run_id,
            "status": status,
            "duration_s": result.duration_s,
            "error_name": result.error_name,
            "alert_count": result.alert_count,
        }
        if status == "skipped_locked":
            run_log.write("skip", reason="locked by another process", **fields)
            return status
        run_log.write("result", **fields)
        if pdf and status == "succeeded" and result.run_dir is not None:
            print_report(run_log, result.run_dir, job_id=job_id, analysis=analysis)
        if status not in _RETRYABLE or attempt > retries:
            break
        run_log.write("retry", job_id=job_id, analysis=analysis, attempt=attempt + 1, delay_s=retry_delay_s)
        time.sleep(retry_delay_s)
    if mail:
        send_mail(run_log, mail, status=status, result=result, job_id=job_id, analysis=analysis, dataset=options.get("dataset"))
    return status


def send_mail(run_log: RunLog, mail: Mapping[str, Any], *, status: str, result: Any, job_id: str, analysis: str,
              dataset: str | None = None) -> bool:
    """Mail a finished job's report (or its failure notice) to the job's recipients; log every attempt, never raise.

    ``result`` is the final :class:`crm_analytics.runner.RunResult`, or ``None`` when the runner refused
    the job. Delivery never changes the run's status (:func:`crm_analytics.mailer.deliver`).
    """
    from crm_analytics import mailer

    return mailer.deliver(
        run_log.write, mail, status=status, run_dir=getattr(result, "run_dir", None), job_id=job_id, analysis=analysis,
        dataset=getattr(result, "dataset", None) or dataset, run_id=getattr(result, "run_id", None),
        error_name=getattr(result, "error_name", None) or (None if result is not None else "RunnerError"),
    )


def print_report(run_log: RunLog, run_dir: str | Path, *, job_id: str, analysis: str) -> Path | None:
    """Print a run's report to ``report.pdf`` in its run folder; log ``pdf`` (its path) or ``pdf_error``, never raise.

    The run has succeeded whatever happens here: a PDF that cannot be made is logged, not a failed run.
    """
    from crm_analytics import report_pdf

    try:
        written = report_pdf.render_run_pdf(run_dir)
    except (report_pdf.PdfError, OSError) as exc:
        run_log.write("pdf_error", job_id=job_id, analysis=analysis, message=str(exc))
        return None
    run_log.write("pdf", job_id=job_id, analysis=analysis, path=str(written))
    return written


# ----------------------------------------------------------------------------- crashed runs


def _folders(parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def find_unfinished_runs(output_root: str | Path | None = None) -> list[Path]:
    """Return run folders that started and never ended: ``*.tmp`` folders, or a ``run.json`` without ``ended_at``.

    Runs live in ``<output_root>/<dataset>/<analysis>/<run_id>/``. Folders whose analysis lock is
    held right now (a run in progress) are left out.
    """
    import filelock

    root = Path(output_root) if output_root else paths.outputs_root()
    found: list[Path] = []
    if not root.is_dir():
        return found
    for analysis_dir in (a for d in _folders(root) for a in _folders(d)):
        candidates = []
        for run_dir in _folders(analysis_dir):
            record = _read_record(run_dir)
            if run_dir.name.endswith(".tmp") or (
                record is not None and not record.get("ended_at") and record.get("status") != "crashed"
            ):
                candidates.append(run_dir)
        if not candidates:
            continue
        lock = filelock.FileLock(str(analysis_dir / ".lock"), timeout=0)
        try:
            with lock:
                found.extend(candidates)
        except filelock.Timeout:
            continue
    return found


def _read_record(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def report_crashed_runs(run_log: RunLog, output_root: str | Path | None = None) -> list[dict]:
    """Log every unfinished run as ``crashed_run`` and mark its record ``status: crashed`` (no end time).

    A ``.tmp`` folder is renamed to its run id so it is reported once.
    """
    from crm_analytics import runner

    logged = []
    for run_dir in find_unfinished_runs(output_root):
        record = _read_record(run_dir) or {}
        run_id = record.get("run_id") or run_dir.name.removesuffix(".tmp")
        record.update(status="crashed", detected_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        record.setdefault("analysis", run_dir.parent.name)
        record.setdefault("run_id", run_id)
        record.setdefault("ended_at", None)
        final = run_dir.with_name(run_id)
        try:
            runner.write_json_atomic(run_dir / "run.json", record)
            if final != run_dir and not final.exists():
                run_dir.rename(final)
        except OSError as exc:
            log.warning("cannot mark crashed run %s: %s", run_dir, exc)
        logged.append(
            run_log.write(
                "crashed_run",
                analysis=record["analysis"],
                run_id=run_id,
                started_at=record.get("started_at"),
                path=str(final if final.exists() else run_dir),
            )
        )
    return logged


# ----------------------------------------------------------------------------- the scheduler


def _job_kwargs(job: ScheduledJob, log_path: Path, runner_options: Mapping[str, Any]) -> dict:
    return {
        "job_id": job.id,
        "analysis": job.analysis,
        "dataset": job.dataset,
        "parameters_file": job_parameters_file(job),  # relative to the checkout, like the crontab lines (cd <root>)
        "retries": job.retries,
        "retry_delay_s": job.retry_delay_s,
        "pdf": job.pdf,
        "mail": job.mail.as_kwargs() if job.mail else None,
        "log_path": str(log_path),
        "runner_options": dict(runner_options),
    }


def sync_jobs(scheduler: BaseScheduler, config: ScheduleConfig, *, log_path: Path, runner_options: Mapping[str, Any]) -> None:
    """Make the scheduler's (possibly persistent) job store match ``config``.

    A stored job whose trigger is unchanged keeps its stored next run time, so a run that fell
    due while the scheduler was down is detected (run within the grace time, missed beyond it).
    """
    wanted = {job.id for job in config.jobs}
    for stored in scheduler.get_jobs():
        if stored.id not in wanted:
            scheduler.remove_job(stored.id)
    for job in config.jobs:
        trigger = cron_trigger(job.cron, job.timezone, where=f"schedule job {job.id!r}")
        options = {
            "kwargs": _job_kwargs(job, log_path, runner_options),
            "name": f"{job.analysis}{f' on {job.dataset}' if job.dataset else ''} ({job.cron} {job.timezone})",
            "misfire_grace_time": config.misfire_grace_time,
            "coalesce": True,
            "max_instances": 1,
        }
        stored = scheduler.get_job(job.id)
        if stored is not None and repr(stored.trigger) == repr(trigger):
            scheduler.modify_job(job.id, **options)
        else:
            scheduler.add_job(execute_job, trigger=trigger, id=job.id, replace_existing=True, **options)


def default_jobstore_url(output_root: str | Path | None = None) -> str:
    """Return the SQLite job store URL, ``outputs/.scheduler/jobs.sqlite``."""
    folder = (Path(output_root) if output_root else paths.outputs_root()) / ".scheduler"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'jobs.sqlite').resolve()}"


def build_scheduler(
    config: ScheduleConfig,
    *,
    scheduler_cls: type[BaseScheduler] | None = None,
    jobstore_url: str | None = None,
    log_path: str | Path | None = None,
    runner_options: Mapping[str, Any] | None = None,
    max_workers: int = 2,
) -> BaseScheduler:
    """Return an unstarted scheduler for ``config`` with its listeners.

    Parameters
    ----------
    scheduler_cls
        ``BlockingScheduler`` for the CLI (the default, ``None``), ``BackgroundScheduler`` in tests.
    jobstore_url
        SQLAlchemy URL of the job store, ``"memory"`` for an in-memory store; default the SQLite
        file under ``outputs/.scheduler/``.
    runner_options
        Keyword arguments passed to :func:`crm_analytics.runner.run_analysis` (e.g. ``output_root``).
    """
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, EVENT_SCHEDULER_START
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler_cls = scheduler_cls or BlockingScheduler

    options = dict(runner_options or {})
    log_file = Path(log_path) if log_path else default_log_path(options.get("output_root"))
    run_log = RunLog(log_file)
    url = jobstore_url or default_jobstore_url(options.get("output_root"))
    if url == "memory":
        store = MemoryJobStore()
    else:
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        store = SQLAlchemyJobStore(url=url)
    scheduler = scheduler_cls(
        jobstores={"default": store},
        executors={"default": ThreadPoolExecutor(max_workers)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": config.misfire_grace_time},
        timezone=ZoneInfo(config.timezone),
    )
    analyses = {job.id: job.analysis for job in config.jobs}

    def on_start(event: SchedulerEvent) -> None:
        sync_jobs(scheduler, config, log_path=log_file, runner_options=options)

    def on_missed(event: JobExecutionEvent) -> None:
        run_log.write(
            "missed",
            job_id=event.job_id,
            analysis=analyses.get(event.job_id),
            scheduled_run_time=event.scheduled_run_time,
            misfire_grace_time_s=config.misfire_grace_time,
        )

    def on_max_instances(event: JobSubmissionEvent) -> None:
        run_log.write("skip", job_id=event.job_id, analysis=analyses.get(event.job_id), reason="previous run still going")

    def on_error(event: JobExecutionEvent) -> None:
        run_log.write(
            "error", job_id=event.job_id, analysis=analyses.get(event.job_id),
            message=f"{type(event.exception).__name__}: {event.exception}",
        )

    scheduler.add_listener(on_start, EVENT_SCHEDULER_START)
    scheduler.add_listener(on_missed, EVENT_JOB_MISSED)
    scheduler.add_listener(on_max_instances, EVENT_JOB_MAX_INSTANCES)
    scheduler.add_listener(on_error, EVENT_JOB_ERROR)
    scheduler.run_log = run_log  # type: ignore[attr-defined]
    return scheduler


def run_schedule(
    config: ScheduleConfig | None = None,
    *,
    jobstore_url: str | None = None,
    runner_options: Mapping[str, Any] | None = None,
) -> None:
    """Run the schedule in the foreground until interrupted (the ``schedule run`` command)."""
    options = dict(runner_options or {})
    config = config or load_schedule(notebook_dir=options.get("notebook_dir"), parameters_root=options.get("parameters_root"))
    scheduler = build_scheduler(config, jobstore_url=jobstore_url, runner_options=options)
    run_log: RunLog = scheduler.run_log  # type: ignore[attr-defined]
    run_log.write("scheduler_start", jobs=[job.id for job in config.jobs], misfire_grace_time_s=config.misfire_grace_time)
    report_crashed_runs(run_log, options.get("output_root"))
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        run_log.write("scheduler_stop")


# ----------------------------------------------------------------------------- listing and crontab


def next_fire_times(config: ScheduleConfig, *, now: datetime | None = None, count: int = 3) -> list[tuple[ScheduledJob, list[datetime]]]:
    """Return the next ``count`` fire times of every job, in the job's own zone."""
    now = now or datetime.now(timezone.utc)
    listing = []
    for job in config.jobs:
        trigger = cron_trigger(job.cron, job.timezone, where=f"schedule job {job.id!r}")
        times: list[datetime] = []
        previous = None
        moment = now.astimezone(ZoneInfo(job.timezone))
        while len(times) < count:
            fire = trigger.get_next_fire_time(previous, moment)
            if fire is None:
                break
            times.append(fire)
            previous, moment = fire, fire
        listing.append((job, times))
    return listing


def crontab_lines(config: ScheduleConfig, *, root: str | Path | None = None, command: str = ".venv/bin/crm-analytics") -> str:
    """Return crontab lines equivalent to ``config``, grouped under ``CRON_TZ=`` lines (cronie).

    Retries, mailed reports and the misfire grace time have no crontab equivalent; the per-analysis
    lock still keeps two runs of one analysis apart.
    """
    root = Path(root) if root else paths.code_root()
    lines = [
        "# crm-analytics schedule, generated from parameters/schedule.yaml",
        "# CRON_TZ sets the zone of the lines below it (cronie); retries are not expressed here.",
    ]
    zone = None
    for job in sorted(config.jobs, key=lambda j: (j.timezone, j.id)):
        if job.timezone != zone:
            zone = job.timezone
            lines.append(f"CRON_TZ={zone}")
        run = f"{command} run {shlex.quote(job.analysis)}"
        if job.dataset:
            run += f" --dataset {shlex.quote(job.dataset)}"
        if job.parameters:
            run += f" -f {shlex.quote(job.parameters)}"
        if job.pdf:
            run += f" && {command} report {shlex.quote(job.analysis)} --pdf"
            if job.dataset:
                run += f" --dataset {shlex.quote(job.dataset)}"
        lines.append(f"{job.cron} cd {shlex.quote(str(root))} && {run}  # {job.id}")
    return "\n".join(lines) + "\n"

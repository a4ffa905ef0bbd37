"""Tests of crm_analytics.scheduler: the schedule file, time zones, misfires, locks, retries, crashed runs."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from crm_analytics import runner, scheduler

FIXTURES = Path(__file__).resolve().parent / "notebooks"


def _config(*jobs: dict, grace: int = 60, zone: str = "Asia/Shanghai") -> scheduler.ScheduleConfig:
    return scheduler.parse_schedule({"misfire_grace_time": grace, "timezone": zone, "jobs": list(jobs)})


KPI = {"id": "kpi-daily", "analysis": "kpi", "cron": "0 7 * * *"}


# ----------------------------------------------------------------------------- the schedule file


def test_project_schedule_is_valid():
    config = scheduler.load_schedule()
    assert config.jobs and config.misfire_grace_time > 0
    assert len({job.id for job in config.jobs}) == len(config.jobs)


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"id": "a", "analysis": "kpi", "cron": "0 7 * *"}, "5 fields"),
        ({"id": "a", "analysis": "kpi", "cron": "0 25 * * *"}, "bad cron"),
        ({"id": "a", "analysis": "kpi", "cron": "0 7 * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"id": "a", "analysis": "kpi", "cron": "0 7 * * *", "retry": 2}, "unknown field"),
        ({"id": "a", "cron": "0 7 * * *"}, "missing analysis"),
    ],
)
def test_malformed_jobs_are_refused_with_the_job_named(job, message):
    with pytest.raises(scheduler.ScheduleError, match=message):
        _config(job)


def test_duplicate_ids_are_refused():
    with pytest.raises(scheduler.ScheduleError, match="duplicate job id"):
        _config(KPI, KPI)


@pytest.mark.parametrize(
    ("field", "expected"),
    [("*", "*"), ("0", "sun"), ("7", "sun"), ("1-5", "mon,tue,wed,thu,fri"), ("sat,0", "sun,sat"), ("*/2", "sun,tue,thu,sat")],
)
def test_day_of_week_keeps_crontab_meaning(field, expected):
    assert scheduler.crontab_day_of_week(field) == expected


def test_monday_job_fires_on_monday():
    config = _config({"id": "w", "analysis": "seg", "cron": "0 6 * * 1"})
    [(job, times)] = scheduler.next_fire_times(config, now=datetime(2024, 5, 1, tzinfo=timezone.utc), count=2)
    assert [t.strftime("%a %Y-%m-%d %H:%M") for t in times] == ["Mon 2024-05-06 06:00", "Mon 2024-05-13 06:00"]


# ----------------------------------------------------------------------------- time zones


def test_asia_shanghai_fires_at_local_time_without_dst():
    config = _config(KPI)
    [(job, times)] = scheduler.next_fire_times(config, now=datetime(2024, 3, 30, 0, 0, tzinfo=timezone.utc), count=3)
    assert [t.astimezone(timezone.utc).strftime("%m-%d %H:%M") for t in times] == ["03-30 23:00", "03-31 23:00", "04-01 23:00"]
    assert all(t.utcoffset() == timedelta(hours=8) for t in times)


def test_europe_berlin_follows_daylight_saving_time():
    config = _config({"id": "eu", "analysis": "kpi", "cron": "0 9 * * *", "timezone": "Europe/Berlin"})
    [(job, times)] = scheduler.next_fire_times(config, now=datetime(2024, 3, 29, 12, tzinfo=timezone.utc), count=3)
    local = [t.astimezone(ZoneInfo("Europe/Berlin")).strftime("%d %H:%M") for t in times]
    utc = [t.astimezone(timezone.utc).strftime("%d %H:%M") for t in times]
    assert local == ["30 09:00", "31 09:00", "01 09:00"]
    assert utc == ["30 08:00", "31 07:00", "01 07:00"]  # clocks went forward on 31 March 2024


def test_europe_berlin_runs_once_when_the_local_time_does_not_exist():
    config = _config({"id": "eu", "analysis": "kpi", "cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    [(job, times)] = scheduler.next_fire_times(config, now=datetime(2024, 3, 30, 12, tzinfo=timezone.utc), count=3)
    utc = [t.astimezone(timezone.utc).strftime("%m-%d %H:%M") for t in times]
    # 02:30 did not exist on 31 March 2024: APScheduler 3 fires once, at 01:30 UTC (03:30 summer time)
    assert utc == ["03-31 01:30", "04-01 00:30", "04-02 00:30"]


# ----------------------------------------------------------------------------- datasets


def test_zone_defaults_to_the_dataset_time_zone_not_a_constant():
    assert scheduler.DEFAULT_TIMEZONE == "UTC"
    raw = {"jobs": [KPI, {**KPI, "id": "kpi-eu", "timezone": "Europe/Berlin"}]}
    config = scheduler.parse_schedule(raw, dataset="demo")
    assert config.timezone == "Asia/Shanghai" and config.dataset == "demo"  # the demo's business zone
    assert [(job.timezone, job.dataset) for job in config.jobs] == [("Asia/Shanghai", "demo"), ("Europe/Berlin", "demo")]
    declared = scheduler.parse_schedule({"timezone": "Europe/London", "jobs": [KPI]}, dataset="demo")
    assert declared.jobs[0].timezone == "Europe/London"  # a declared zone wins over the dataset's


def test_a_job_names_its_dataset_and_an_unknown_one_is_refused():
    config = scheduler.parse_schedule({"dataset": "demo", "jobs": [KPI, {**KPI, "id": "other", "dataset": "demo"}]})
    assert {job.dataset for job in config.jobs} == {"demo"}
    assert "run kpi --dataset demo" in scheduler.crontab_lines(config, root="/srv/crm")
    with pytest.raises(scheduler.ScheduleError, match=r"schedule job 'x'.*no dataset 'dem'.*did you mean 'demo'"):
        scheduler.parse_schedule({"jobs": [{**KPI, "id": "x", "dataset": "dem"}]})
    with pytest.raises(scheduler.ScheduleError, match="no dataset 'dem'"):
        scheduler.parse_schedule({"timezone": "UTC", "jobs": [KPI]}, dataset="dem")


def test_every_job_is_checked_as_the_runner_will_check_it_when_it_fires(tmp_path):
    wrong_types = tmp_path / "kpi_nightly.yaml"
    wrong_types.write_text("history_months: twelve\nas_of: 2024-02-30\n")
    typo = tmp_path / "kpi_typo.yaml"
    typo.write_text("histroy_months: 12\n")
    cases = [
        ({**KPI, "analysis": "kpii"}, r"schedule job 'kpi-daily': unknown analysis 'kpii' \(did you mean 'kpi'\?\)"),
        ({**KPI, "parameters": str(tmp_path / "missing.yaml")}, "schedule job 'kpi-daily': parameter file not found"),
        ({**KPI, "parameters": str(typo)}, "unknown parameter for 'kpi': 'histroy_months' \\(did you mean 'history_months'\\?\\)"),
        ({**KPI, "parameters": str(wrong_types)}, "(?=.*'history_months' of 'kpi' is 'twelve'.*expected an int)(?=.*'as_of' of 'kpi' is '2024-02-30'.*ISO date)"),
    ]
    for job, message in cases:
        with pytest.raises(scheduler.ScheduleError, match=message):
            scheduler.check_jobs_can_run(_config(job))
    scheduler.check_jobs_can_run(_config(KPI, {**KPI, "id": "kpi-file", "parameters": "parameters/kpi/default.yaml"}))


def test_loading_a_schedule_checks_its_jobs_unless_told_not_to(tmp_path):
    path = tmp_path / "schedule.yaml"
    path.write_text("timezone: UTC\njobs:\n  - {id: a, analysis: segmentatoin, cron: '0 6 * * 1'}\n")
    with pytest.raises(scheduler.ScheduleError, match=f"{path}: schedule job 'a': unknown analysis 'segmentatoin'"):
        scheduler.load_schedule(path)
    assert scheduler.load_schedule(path, check_jobs=False).jobs[0].analysis == "segmentatoin"
    assert scheduler.load_schedule(path, notebook_dir=tmp_path, check_jobs=False).jobs  # no notebook needed to read cron times


def test_job_passes_its_dataset_to_the_runner(tmp_path, monkeypatch):
    seen = {}

    def fake_run(analysis, **kwargs):
        seen.update(kwargs)
        return _fake_result(analysis, "succeeded")

    monkeypatch.setattr(runner, "run_analysis", fake_run)
    scheduler.execute_job(job_id="j", analysis="kpi", log_path=str(tmp_path / "log.jsonl"), dataset="demo")
    assert seen["dataset"] == "demo"
    assert scheduler.RunLog(tmp_path / "log.jsonl").read()[0]["dataset"] == "demo"


# ----------------------------------------------------------------------------- crontab


def test_crontab_groups_jobs_under_cron_tz_lines():
    config = _config(
        {**KPI, "parameters": "parameters/kpi/default.yaml"},
        {"id": "eu", "analysis": "churn", "cron": "30 6 * * 1-5", "timezone": "Europe/Berlin"},
    )
    text = scheduler.crontab_lines(config, root="/srv/crm")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "CRON_TZ=Asia/Shanghai",
        "0 7 * * * cd /srv/crm && .venv/bin/crm-analytics run kpi -f parameters/kpi/default.yaml  # kpi-daily",
        "CRON_TZ=Europe/Berlin",
        "30 6 * * 1-5 cd /srv/crm && .venv/bin/crm-analytics run churn  # eu",
    ]


# ----------------------------------------------------------------------------- jobs, with the runner stubbed


def _fake_result(analysis: str, status: str) -> runner.RunResult:
    return runner.RunResult(
        analysis=analysis, run_id="r", status=status, run_dir=None, parameters={},
        started_at="2024-01-01T00:00:00+00:00", ended_at="2024-01-01T00:00:01+00:00", duration_s=1.0,
        error_name=None if status == "succeeded" else "ValueError",
    )


@pytest.fixture
def fake_runner(monkeypatch):
    """Replace the runner: statuses are served from ``calls['statuses']`` in order."""
    calls = {"analyses": [], "statuses": []}

    def fake_run(analysis, **kwargs):
        calls["analyses"].append(analysis)
        status = calls["statuses"].pop(0) if calls["statuses"] else "succeeded"
        return _fake_result(analysis, status)

    monkeypatch.setattr(runner, "run_analysis", fake_run)
    return calls


def test_failed_run_is_retried_then_logged(tmp_path, fake_runner):
    fake_runner["statuses"] = ["failed", "succeeded"]
    log_path = tmp_path / "log.jsonl"
    status = scheduler.execute_job(job_id="j", analysis="kpi", retries=2, retry_delay_s=0, log_path=str(log_path))
    assert status == "succeeded" and fake_runner["analyses"] == ["kpi", "kpi"]
    events = [(r["event"], r.get("status")) for r in scheduler.RunLog(log_path).read()]
    assert events == [("trigger", None), ("result", "failed"), ("retry", None), ("result", "succeeded")]


def test_locked_run_is_logged_as_skip_and_not_retried(tmp_path, fake_runner):
    fake_runner["statuses"] = ["skipped_locked"]
    log_path = tmp_path / "log.jsonl"
    assert scheduler.execute_job(job_id="j", analysis="kpi", retries=3, retry_delay_s=0, log_path=str(log_path)) == "skipped_locked"
    assert [r["event"] for r in scheduler.RunLog(log_path).read()] == ["trigger", "skip"]


def _wait_for(predicate, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _restart_after_downtime(tmp_path: Path, late_by: timedelta, grace: int) -> list[dict]:
    """Start and stop a scheduler, pretend a run fell due ``late_by`` ago while it was down, restart it."""
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    log_path = tmp_path / "scheduler.log.jsonl"
    config = _config(KPI, grace=grace)
    first = scheduler.build_scheduler(config, scheduler_cls=BackgroundScheduler, jobstore_url=url, log_path=log_path)
    first.start()
    stored_next = first.get_job("kpi-daily").next_run_time
    first.shutdown()
    assert stored_next > datetime.now(timezone.utc)

    # Edit the store directly: a paused scheduler still processes due jobs once while shutting down.
    store = SQLAlchemyJobStore(url=url)
    store.start(BackgroundScheduler(), "default")
    job = store.lookup_job("kpi-daily")
    job._modify(next_run_time=datetime.now(timezone.utc) - late_by)
    store.update_job(job)
    store.shutdown()

    second = scheduler.build_scheduler(config, scheduler_cls=BackgroundScheduler, jobstore_url=url, log_path=log_path)
    second.start()
    try:
        run_log = scheduler.RunLog(log_path)
        _wait_for(lambda: any(r["event"] in ("result", "missed") for r in run_log.read()))
        assert second.get_job("kpi-daily").next_run_time > datetime.now(timezone.utc)
    finally:
        second.shutdown()
    return scheduler.RunLog(log_path).read()


def test_restart_within_grace_time_runs_the_missed_job(tmp_path, fake_runner):
    records = _restart_after_downtime(tmp_path, timedelta(seconds=20), grace=300)
    assert [r["event"] for r in records] == ["trigger", "result"]
    assert fake_runner["analyses"] == ["kpi"]


def test_restart_beyond_grace_time_logs_a_miss(tmp_path, fake_runner):
    records = _restart_after_downtime(tmp_path, timedelta(minutes=30), grace=300)
    assert [r["event"] for r in records] == ["missed"]
    assert records[0]["job_id"] == "kpi-daily" and records[0]["analysis"] == "kpi"
    assert fake_runner["analyses"] == []


def test_changed_cron_replaces_the_stored_job(tmp_path, fake_runner):
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    for cron, hour in (("0 7 * * *", 7), ("0 9 * * *", 9)):
        config = _config({**KPI, "cron": cron})
        sched = scheduler.build_scheduler(config, scheduler_cls=BackgroundScheduler, jobstore_url=url, log_path=tmp_path / "l")
        sched.start()
        next_run = sched.get_job("kpi-daily").next_run_time
        sched.shutdown()
        assert next_run.astimezone(ZoneInfo("Asia/Shanghai")).hour == hour


# ----------------------------------------------------------------------------- crashed runs


def test_unfinished_runs_are_logged_and_marked_once(tmp_path):
    outputs = tmp_path / "outputs"
    tmp_run = outputs / "demo" / "kpi" / "20240101T000000.000Z-aaaaaa.tmp"
    tmp_run.mkdir(parents=True)
    (tmp_run / "run.json").write_text(json.dumps({"analysis": "kpi", "run_id": "20240101T000000.000Z-aaaaaa",
                                                  "status": "running", "started_at": "2024-01-01T00:00:00+00:00", "ended_at": None}))
    no_end = outputs / "other" / "churn" / "20240102T000000.000Z-bbbbbb"  # runs of every dataset are checked
    no_end.mkdir(parents=True)
    (no_end / "run.json").write_text(json.dumps({"analysis": "churn", "run_id": no_end.name, "status": "running", "ended_at": None}))
    finished = outputs / "other" / "churn" / "20240103T000000.000Z-cccccc"
    finished.mkdir()
    (finished / "run.json").write_text(json.dumps({"status": "succeeded", "ended_at": "2024-01-03T00:00:05+00:00"}))

    run_log = scheduler.RunLog(tmp_path / "log.jsonl")
    logged = scheduler.report_crashed_runs(run_log, outputs)
    assert sorted(r["analysis"] for r in logged) == ["churn", "kpi"]
    assert not tmp_run.exists() and (outputs / "demo" / "kpi" / "20240101T000000.000Z-aaaaaa").is_dir()
    assert json.loads((no_end / "run.json").read_text())["status"] == "crashed"
    assert scheduler.report_crashed_runs(run_log, outputs) == []  # reported once


def test_unfinished_run_of_a_locked_analysis_is_in_progress_not_crashed(tmp_path):
    import filelock

    running = tmp_path / "demo" / "kpi" / "20240101T000000.000Z-aaaaaa.tmp"
    running.mkdir(parents=True)
    with filelock.FileLock(str(tmp_path / "demo" / "kpi" / ".lock")):
        assert scheduler.find_unfinished_runs(tmp_path) == []
    assert scheduler.find_unfinished_runs(tmp_path) == [running]


# ----------------------------------------------------------------------------- real overlapping runs


@pytest.mark.slow
def test_overlapping_triggers_second_is_skipped_locked(tmp_path):
    outputs = tmp_path / "outputs"
    options = {"notebook_dir": str(FIXTURES), "output_root": str(outputs), "parameters_root": str(tmp_path)}
    log_path = tmp_path / "scheduler.log.jsonl"
    params = tmp_path / "slow.yaml"
    params.write_text("seconds: 6\n")
    kwargs = {"job_id": "sleepy", "analysis": "sleeper", "parameters_file": str(params), "log_path": str(log_path),
              "runner_options": options, "dataset": "demo"}
    first = threading.Thread(target=scheduler.execute_job, kwargs=kwargs)
    first.start()
    runs = outputs / "demo" / "sleeper"
    assert _wait_for(lambda: any(runs.glob("*.tmp")) if runs.exists() else False)
    second_status = scheduler.execute_job(**kwargs)
    first.join(timeout=60)
    assert second_status == "skipped_locked"
    records = [p for p in runs.glob("*/run.json") if p.parent.name != "latest"]
    statuses = sorted(json.loads(p.read_text())["status"] for p in records)
    assert statuses == ["skipped_locked", "succeeded"]
    events = [(r["event"], r.get("status")) for r in scheduler.RunLog(log_path).read()]
    assert ("skip", "skipped_locked") in events and ("result", "succeeded") in events

"""Tests of crm_analytics.pages (freshness, banner, cube filters) and of the dashboard notebook's parameters.

``build_page_home`` writes a small project home with ``latest`` run folders of the analyses the dashboard
reads; the browser tests and ``benchmarks/bench_pages.py`` use it too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from crm_analytics import pages, paths, scheduler
from crm_analytics.frames import MissingColumnError

SEGMENTS = ("Champions", "Loyal", "At risk", "Hibernating")
CHANNELS = ("app", "mini_program", "store", "web")
DAILY_AT_TWO = "0 2 * * *"
NOW = pd.Timestamp("2026-03-10 12:00", tz="UTC")


# --------------------------------------------------------------------------------------------------
# a project home with persisted runs


def sample_cube(*, months: int = 12, seed: int = 7) -> pd.DataFrame:
    """Return a month x segment x channel cube with some cells of fewer than 5 customers."""
    rng = np.random.default_rng(seed)
    index = pd.MultiIndex.from_product(
        [pd.date_range("2025-01-01", periods=months, freq="MS"), SEGMENTS, CHANNELS], names=["month_date", "segment", "channel"]
    )
    cube = index.to_frame(index=False)
    cube["n_customers"] = rng.integers(2, 90, len(cube))
    cube["n_orders"] = (cube["n_customers"] * rng.uniform(1.0, 1.6, len(cube))).round().astype("int64")
    cube["revenue_amount"] = (cube["n_orders"] * rng.uniform(150, 450, len(cube))).round(2)
    return cube


def _write_png(path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(["a", "b", "c"], [3, 2, 1])
    ax.set_title(title)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_run(
    home: Path,
    analysis: str,
    run_id: str,
    *,
    status: str = "succeeded",
    started: pd.Timestamp,
    tables: dict[str, pd.DataFrame] | None = None,
    figures: tuple[str, ...] = (),
    make_latest: bool = True,
) -> Path:
    """Write ``outputs/<dataset>/<analysis>/<run_id>/`` (default dataset) with a run.json like the runner's; point ``latest`` at it."""
    run_dir = home / "outputs" / paths.default_dataset() / analysis / run_id
    (run_dir / "tables").mkdir(parents=True, exist_ok=True)
    for name, table in (tables or {}).items():
        table.to_parquet(run_dir / "tables" / f"{name}.parquet", index=False)
    for name in figures:
        _write_png(run_dir / "figures" / f"{name}.png", name)
    record = {
        "analysis": analysis,
        "run_id": run_id,
        "status": status,
        "parameters": {"as_of": "2025-12-31", "output_dir": str(run_dir)},
        "started_at": started.isoformat(),
        "ended_at": (started + pd.Timedelta(minutes=2)).isoformat(),
    }
    (run_dir / "run.json").write_text(json.dumps(record), encoding="utf-8")
    if make_latest and status == "succeeded":
        latest = run_dir.parent / "latest"
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(run_id, target_is_directory=True)
    return run_dir


def build_page_home(home: Path, *, now: pd.Timestamp | None = None) -> Path:
    """Write a project home holding the latest runs the dashboard reads, and a daily schedule for them.

    kpi (the sales cube), overview and funnel (one figure each) succeeded 10 minutes before ``now``; cohort
    has never run, so its section shows the "not yet available" card. The schedule is ``home/schedule.yaml``
    (point ``CRM_ANALYTICS_SCHEDULE`` at it).
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    started = now - pd.Timedelta(minutes=10)
    write_run(home, "kpi", "20250101T000000.000Z-aaaaaa", started=started, tables={"sales_cube": sample_cube()})
    write_run(home, "overview", "20250101T000000.000Z-bbbbbb", started=started, figures=("orders_over_time",))
    write_run(home, "funnel", "20250101T000000.000Z-cccccc", started=started, figures=("funnel",))
    jobs = [{"id": f"{a}-daily", "analysis": a, "cron": DAILY_AT_TWO} for a in ("kpi", "overview", "funnel", "cohort")]
    (home / "schedule.yaml").write_text(yaml.safe_dump({"timezone": "Asia/Shanghai", "jobs": jobs}), encoding="utf-8")
    return home


@pytest.fixture
def page_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    monkeypatch.setenv(pages.SCHEDULE_ENV, str(tmp_path / "schedule.yaml"))
    return build_page_home(tmp_path, now=NOW)


# --------------------------------------------------------------------------------------------------
# freshness


def test_fresh_when_latest_succeeded_and_no_run_is_overdue(page_home):
    status = pages.page_status("kpi", now=NOW)
    assert status.state == "fresh"
    assert status.as_of == "2025-12-31"
    assert status.finished_time == NOW - pd.Timedelta(minutes=8)


def test_missing_when_no_run_succeeded(page_home):
    status = pages.page_status("cohort", now=NOW)
    assert status.state == "missing" and not status.is_usable


def test_failed_when_a_newer_run_did_not_succeed(page_home):
    write_run(page_home, "kpi", "20250102T000000.000Z-dddddd", status="timeout", started=NOW - pd.Timedelta(minutes=5))
    status = pages.page_status("kpi", now=NOW)
    assert status.state == "failed"
    assert "timeout" in status.message
    assert status.latest["run_id"] == "20250101T000000.000Z-aaaaaa"  # the last good data is still shown


def test_an_older_failure_or_a_skipped_run_does_not_count(page_home):
    write_run(page_home, "kpi", "20240101T000000.000Z-eeeeee", status="failed", started=NOW - pd.Timedelta(days=3))
    write_run(page_home, "kpi", "20250103T000000.000Z-ffffff", status="skipped_locked", started=NOW - pd.Timedelta(minutes=1))
    write_run(page_home, "kpi", "20250104T000000.000Z-gggggg.tmp", status="running", started=NOW - pd.Timedelta(minutes=1))
    assert pages.page_status("kpi", now=NOW).state == "fresh"


def test_stale_once_a_scheduled_run_is_overdue_beyond_the_grace(page_home):
    # The run started 2026-03-10 11:50 UTC; the next daily 02:00 Asia/Shanghai fire is 2026-03-10 18:00 UTC.
    due = pd.Timestamp("2026-03-10 18:00", tz="UTC")
    assert pages.next_due_time("kpi", NOW - pd.Timedelta(minutes=10)) == due
    assert pages.page_status("kpi", now=due + pd.Timedelta(minutes=59)).state == "fresh"
    stale = pages.page_status("kpi", now=due + pd.Timedelta(minutes=61))
    assert stale.state == "stale" and "out of date" in stale.message


def test_unscheduled_analysis_is_never_stale_by_age(page_home):
    assert pages.page_status("kpi", now=NOW + pd.Timedelta(days=400), jobs=[]).state == "fresh"


def test_run_times_are_shown_in_the_datasets_time_zone(tmp_path, monkeypatch):
    document = {"time_zone": "Europe/London", "currency": "GBP", "country": "GB"}
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    monkeypatch.setenv(paths.DATASET_ENV, str(tmp_path / "shop.yaml"))
    assert pages.display_time_zone() == "Europe/London"
    assert pages._fmt_time(pd.Timestamp("2026-07-01 11:50", tz="UTC")) == "2026-07-01 12:50 Europe/London"


def test_day_of_week_has_its_crontab_meaning(page_home):
    weekly = [scheduler.ScheduledJob(id="kpi-weekly", analysis="kpi", cron="0 6 * * 1", timezone="Asia/Shanghai")]
    sunday_noon = pd.Timestamp("2026-03-08 12:00", tz="Asia/Shanghai")
    due = pages.next_due_time("kpi", sunday_noon, jobs=weekly)
    assert due == pd.Timestamp("2026-03-09 06:00", tz="Asia/Shanghai") and due.day_name() == "Monday"
    assert pages.next_due_time("funnel", sunday_noon, jobs=weekly) is None


def test_an_unreadable_schedule_is_said_not_fatal(page_home):
    (page_home / "schedule.yaml").write_text("jobs: [{analysis: kpi}]", encoding="utf-8")
    status = pages.page_status("kpi", now=NOW)
    assert status.state == "fresh" and "schedule could not be read" in status.message
    assert pages.scheduled_jobs(page_home / "absent.yaml") == []


def test_naive_run_times_are_utc():
    assert pages.record_time({"started_at": "2026-01-01T00:00:00"}, ("started_at",)) == pd.Timestamp("2026-01-01", tz="UTC")
    assert pages.record_time({}, ("started_at",)) is None


def test_unreadable_run_record_is_empty(tmp_path):
    (tmp_path / "run.json").write_text("{not json", encoding="utf-8")
    assert pages.read_run_record(tmp_path) == {}


# --------------------------------------------------------------------------------------------------
# HTML fragments and tables


def test_banner_escapes_and_names_the_state():
    status = pages.PageStatus("kpi", "failed", "<script>x</script>", latest={"parameters": {"as_of": "2025-12-31"}})
    fragment = pages.banner_html(status)
    assert "crm-banner-failed" in fragment and "Latest run failed" in fragment
    assert "<script>" not in fragment and "Data as of 2025-12-31" in fragment


def test_load_table_reports_a_missing_table_or_column(page_home):
    cube, reason = pages.load_table("kpi", "sales_cube", columns=pages.CUBE_COLUMNS)
    assert reason == "" and len(cube) == 12 * 4 * 4
    assert pages.load_table("cohort", "retention_matrix")[0] is None
    missing, why = pages.load_table("kpi", "sales_cube", columns=("profit_amount",))
    assert missing is None and "profit_amount" in why


def test_figure_section_embeds_the_png_or_says_not_yet_available(page_home):
    assert 'src="data:image/png;base64,' in pages.figure_section_html("funnel", "funnel", title="Funnel")
    card = pages.figure_section_html("cohort", "retention_heatmap", title="Retention")
    assert "crm-unavailable" in card and "retention_heatmap" in card


# --------------------------------------------------------------------------------------------------
# the sales cube


def _tiny_cube() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "month_date": pd.to_datetime(["2025-01-01", "2025-01-01", "2025-02-01", "2025-03-01"]),
            "segment": ["Loyal", "Loyal", "At risk", "Loyal"],
            "channel": ["web", "store", "web", "web"],
            "n_customers": [10, 3, 20, 6],
            "n_orders": [12, 4, 25, 6],
            "revenue_amount": [1200.0, 400.0, 2500.0, 600.0],
        }
    )


def test_prepare_cube_suppresses_small_cells_without_mutating():
    cube = _tiny_cube()
    before = cube.copy()
    prepared = pages.prepare_cube(cube, k=5)
    pd.testing.assert_frame_equal(cube, before)
    assert prepared["is_suppressed"].tolist() == [False, True, False, False]
    assert prepared.loc[1, "channel"] == "store" and pd.isna(prepared.loc[1, "revenue_amount"])


def test_totals_leave_out_suppressed_cells():
    totals = pages.cube_totals(pages.prepare_cube(_tiny_cube(), k=5))
    assert totals == {"revenue_amount": 4300.0, "n_orders": 43.0, "avg_order_amount": 4300.0 / 43, "n_hidden_cells": 1}


def test_filters_by_segment_channel_and_months_back_from_the_latest_month():
    cube = pages.prepare_cube(_tiny_cube(), k=1)
    assert len(pages.filter_cube(cube, segment="Loyal")) == 3
    assert len(pages.filter_cube(cube, channel="web", months=2)) == 2  # February and March
    assert pages.cube_totals(pages.filter_cube(cube, segment="Loyal", channel="web"))["revenue_amount"] == 1800.0


def test_totals_of_an_empty_selection():
    totals = pages.cube_totals(pages.filter_cube(pages.prepare_cube(_tiny_cube()), segment="nobody"))
    assert totals["n_orders"] == 0 and np.isnan(totals["avg_order_amount"])
    assert "—" in pages.totals_html(totals, k=5)


def test_money_on_the_page_is_in_the_dataset_currency_and_locale():
    import matplotlib

    matplotlib.use("Agg")
    totals = pages.cube_totals(pages.prepare_cube(_tiny_cube(), k=5))
    tiles = pages.totals_html(totals, k=5, currency="GBP", locale="en_GB")
    assert "£4,300" in tiles and "£100" in tiles and "¥" not in tiles
    assert "R$\xa04.300" in pages.totals_html(totals, k=5, currency="BRL", locale="pt_BR")
    cube = pages.prepare_cube(_tiny_cube(), k=5)
    assert pages.plot_monthly_revenue(cube, currency="GBP").get_ylabel() == "revenue (GBP)"
    assert pages.plot_segment_revenue(cube, currency="GBP").get_xlabel() == "revenue (GBP)"
    matplotlib.pyplot.close("all")


def test_cube_missing_column_is_named():
    with pytest.raises(MissingColumnError, match="revenue_amount"):
        pages.prepare_cube(_tiny_cube().drop(columns="revenue_amount"))


def test_interactive_cube_redraws_on_a_filter_change(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("VOILA_KERNEL_ID", "a-kernel")  # as under Voilà: a frontend renders the widgets
    section = pages.interactive_cube(_tiny_cube(), k=5)
    filters, tiles = section.children[0].children, section.children[1]
    before = tiles.value
    channel = next(w for w in filters if "crm-filter-channel" in w._dom_classes)
    channel.value = "store"  # only a suppressed cell: nothing visible
    assert tiles.value != before and "¥0" in tiles.value


def test_cube_section_is_static_html_with_charts_in_a_report(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    for name in ("VOILA_KERNEL_ID", "VOILA_BASE_URL", "VOILA_SERVER_URL", "VOILA_REQUEST_URL", "JPY_SESSION_NAME"):
        monkeypatch.delenv(name, raising=False)
    section = pages.interactive_cube(_tiny_cube(), k=5)
    assert section.data.count("data:image/png;base64,") == 2, "both charts are embedded"
    assert "Revenue" in section.data


# --------------------------------------------------------------------------------------------------
# the dashboard notebook


def test_dashboard_defaults_match_the_parameters_cell():
    import papermill

    notebook = paths.notebooks_dir() / "dashboard.ipynb"
    declared = papermill.inspect_notebook(str(notebook))
    defaults = yaml.safe_load((paths.parameters_dir() / "dashboard" / "default.yaml").read_text(encoding="utf-8"))
    assert {"warehouse_path", "output_dir"} <= set(declared)
    assert set(defaults) <= set(declared)
    for key, value in defaults.items():  # Voilà runs the notebook's literals, so they must equal the YAML
        assert yaml.safe_load(declared[key]["default"]) == value, key


def test_dashboard_is_committed_clean():
    import nbformat

    notebook = nbformat.read(paths.notebooks_dir() / "dashboard.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert not any(line.lstrip().startswith(("def ", "class ")) for c in code for line in c.source.splitlines())
    assert notebook.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.slow
def test_dashboard_runs_under_papermill_on_a_page_home(tmp_path, monkeypatch):
    import papermill

    home = build_page_home(tmp_path / "home")  # runs 10 minutes ago by the clock: fresh
    monkeypatch.setenv(paths.HOME_ENV, str(home))
    monkeypatch.setenv(pages.SCHEDULE_ENV, str(home / "schedule.yaml"))
    run_dir = tmp_path / "run"
    papermill.execute_notebook(
        str(paths.notebooks_dir() / "dashboard.ipynb"),
        str(tmp_path / "executed.ipynb"),
        parameters={"output_dir": str(run_dir)},
        kernel_name="python3",
        progress_bar=False,
    )
    status = pd.read_parquet(run_dir / "tables" / "page_status.parquet")
    assert dict(zip(status["analysis"], status["state"])) == {"kpi": "fresh", "overview": "fresh", "funnel": "fresh", "cohort": "missing"}


def test_unavailable_card_names_the_needed_table():
    card = pages.unavailable_html("kpi", pages.table_needed("sales_cube", pages.CUBE_COLUMNS), reason="no run yet")
    assert "sales_cube" in card and "month_date, segment" in card and "no run yet" in card and "<code>kpi</code>" in card


def test_a_channel_keeps_its_colour_whatever_the_filter():
    assert pages.channel_palette(["web", "app"])["web"] == pages.channel_palette(["app", "web", "web"])["web"]
    assert len(set(pages.channel_palette(CHANNELS).values())) == len(CHANNELS)


# --------------------------------------------------------------------------------------------------
# the page server's settings (the server itself runs in tests/test_browser.py)


def test_voila_settings_are_safe_by_default(tmp_path):
    from crm_analytics import serve

    argv = serve.voila_argv(tmp_path)
    assert argv[0] == str(tmp_path)
    for option in (
        "--Voila.ip=127.0.0.1",
        "--Voila.port_retries=0",
        "--template=crm",
        "--strip_sources=True",
        "--show_tracebacks=False",
        "--VoilaExecutor.timeout=120",
        "--MappingKernelManager.cull_idle_timeout=1800",
        "--no-browser",
    ):
        assert option in argv, option
    assert "--preheat_kernel=True" not in argv, "a kernel per visit unless preheating is asked for"
    assert "--preheat_kernel=True" in serve.voila_argv(tmp_path, pool_size=2) and "--pool_size=2" in serve.voila_argv(tmp_path, pool_size=2)
    assert any(a.startswith("--VoilaConfiguration.file_denylist=") and "ipynb" in a for a in argv)
    assert not any(a.startswith("--token") for a in argv)
    with_token = serve.voila_argv(tmp_path, token="abc123", open_browser=True)
    assert "--token=abc123" in with_token and "--no-browser" not in with_token


def test_serving_beyond_this_machine_needs_a_token():
    from crm_analytics import serve

    with pytest.raises(ValueError, match="without a token"):
        serve.check_exposure("0.0.0.0", None)
    serve.check_exposure("0.0.0.0", "a-token")
    serve.check_exposure("127.0.0.1", None)
    serve.check_exposure("10.0.0.5", None, allow_remote_without_token=True)


def test_only_the_stakeholder_notebooks_are_staged(tmp_path):
    from crm_analytics import serve

    found = serve.resolve_notebooks()
    assert [p.name for p in found] == [p.name for p in serve.default_notebooks()]
    assert {p.parent for p in found} == {paths.pages_dir(), paths.notebooks_dir()}  # the pages folder and the dashboard
    assert {f"{n}.ipynb" for n in serve.STAKEHOLDER_NOTEBOOKS} < {p.name for p in found}
    root = serve.stage_notebooks(found, tmp_path / "root")
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in found)
    with pytest.raises(FileNotFoundError, match="no_such_page"):
        serve.resolve_notebooks(["no_such_page"])


# --------------------------------------------------------------------------------------------------
# warnings of the latest run


def test_the_banner_shows_the_warnings_of_the_latest_good_run(page_home):
    run_dir = write_run(page_home, "clv", "20250103T000000.000Z-eeeeee", started=NOW - pd.Timedelta(minutes=5))
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    record["warnings"] = [
        {"kind": "too_little_data", "section": "Gamma-Gamma", "message": "too little data (n = 12 customers, needs 30) <b>"},
        {"kind": "not_converged", "section": "", "message": "the BG/NBD fit did not converge"},
    ]
    (run_dir / "run.json").write_text(json.dumps(record), encoding="utf-8")
    status = pages.page_status("clv", now=NOW)
    assert status.state == "fresh" and [w["kind"] for w in status.warnings] == ["too_little_data", "not_converged"]
    fragment = pages.banner_html(status)
    assert 'class="crm-warnings"' in fragment and "2 warnings in this run" in fragment
    assert "Gamma-Gamma: too little data (n = 12 customers, needs 30) &lt;b&gt;" in fragment
    assert "<li>the BG/NBD fit did not converge</li>" in fragment


def test_a_run_without_warnings_shows_none(page_home):
    status = pages.page_status("kpi", now=NOW)
    assert status.warnings == [] and "crm-warnings" not in pages.banner_html(status)


def test_the_static_sales_section_gives_each_chart_alt_text_naming_the_currency():
    import re

    section = pages.static_cube(sample_cube(), k=5, currency="EUR", locale="en_GB")
    alts = re.findall(r'<img class="crm-figure" alt="([^"]+)"', section.data)
    assert len(alts) == section.data.count("<img") == 2
    assert alts[0].startswith("Revenue per month by channel; x axis: month; y axis: revenue (EUR); legend: ")
    assert alts[1].startswith("Revenue by segment; x axis: revenue (EUR)")

"""A sales representative's own pipeline: the deal counts the pipeline run persists and the page recomputes from.

The pipeline run persists ``owner_stage_counts`` (deals per owner pseudonym, team, region and furthest stage,
``pipeline.owner_stage_counts``); the sales and marketing page narrows it to the viewer's rows and recomputes the
stage conversion, weighted pipeline and win rates (``crm_analytics.pipeline_counts``). Over every row that must give
the run's own tables, over one owner's rows the run's methods applied to that owner's deals. In the browser,
``crm-analytics serve`` takes viewers from a trusted proxy's header (as in ``test_viewer_access``) over the demo
runs of ``test_audience_pages.audience_home``, with two representatives (``{owner: $viewer}``) and a leadership
viewer of every row.
"""

from __future__ import annotations

import re

import duckdb
import numpy as np
import pandas as pd
import pytest
import test_audience_pages
import test_viewer_access
import yaml

from crm_analytics import access, audience_pages, datasets, pages, paths, pipeline, pipeline_counts, privacy

import test_browser
from test_browser import free_port, start_server, stop_server

audience_home = test_audience_pages.audience_home  # the demo home with good runs of every page's analyses
browser, visit = test_browser.browser, test_browser.visit
viewer_headers, wait_until_answering = test_viewer_access.viewer_headers, test_viewer_access.wait_until_answering
LEADERSHIP = "ceo@example.org"
KEY = "a-pseudonym-key-for-these-tests"


def run_tables(home) -> dict[str, pd.DataFrame]:
    folder = home / "outputs" / paths.default_dataset() / "pipeline" / "latest" / "tables"
    return {path.stem: pd.read_parquet(path) for path in folder.glob("*.parquet")}


def warehouse_deals(home) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The opportunities and stage history of the home's demo warehouse."""
    with duckdb.connect(str(home / "data" / "warehouse" / f"{paths.default_dataset()}.duckdb"), read_only=True) as con:
        return con.table("opportunities").df(), con.table("opportunity_stage_history").df()


@pytest.fixture(scope="module")
def owners(audience_home) -> list[str]:
    """Every owner of the demo's opportunities, those with the most deals first."""
    opportunities, _history = warehouse_deals(audience_home)
    return [str(o) for o in opportunities["owner"].value_counts().index]


def rep_viewer(identity: str) -> access.Viewer:
    return access.Viewer(identity, access.ViewerGroup("sales_reps", (identity,), access.RowFilter("owner", (), is_viewer=True)))


def figures(counts: pd.DataFrame, *, k: int | None = None) -> dict[str, pd.DataFrame]:
    return {"stage_conversion": pipeline_counts.stage_conversion(counts, k=k), "weighted_pipeline": pipeline_counts.weighted_pipeline(counts, k=k),
            "win_rate": pipeline_counts.win_rates(counts, k=k)}


# --------------------------------------------------------------------------------------------------
# the counts and the figures recomputed from them


@pytest.mark.slow
def test_over_every_row_the_counts_give_the_runs_own_tables(audience_home):
    tables = run_tables(audience_home)
    counts = tables[audience_pages.OWNER_STAGE_COUNTS]
    for name, recomputed in figures(counts).items():
        pd.testing.assert_frame_equal(recomputed, tables[name], check_dtype=False, rtol=1e-9)
    breakdown = next(name for name in tables if name.startswith("breakdown_by_"))
    by = breakdown.removeprefix("breakdown_by_")
    pd.testing.assert_frame_equal(pipeline_counts.win_rates(counts, by=by), tables[breakdown][[by, *pipeline_counts.WIN_RATE_COLUMNS]],
                                  check_dtype=False, rtol=1e-9)
    assert tables["win_rate"]["n_closed"].iloc[0] > 30 and counts["owner_key"].nunique() > 2


@pytest.mark.slow
def test_the_counts_hold_owner_pseudonyms_and_no_name(audience_home, owners):
    counts = run_tables(audience_home)[audience_pages.OWNER_STAGE_COUNTS]
    assert "owner" not in counts.columns and counts["owner_key"].str.fullmatch(r"per_[0-9a-f]{16}").all()
    text = counts.to_csv(index=False)
    assert [name for name in owners if name in text] == []
    assert set(counts["owner_key"]) == set(privacy.person_keys(pd.Series(owners)))


@pytest.mark.slow
def test_a_representative_gets_the_runs_methods_on_their_own_deals(audience_home, owners, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(audience_home))
    counts = run_tables(audience_home)[audience_pages.OWNER_STAGE_COUNTS]
    opportunities, history = warehouse_deals(audience_home)
    for owner in owners[:2]:
        mine = pages.rows_for_viewer(counts, rep_viewer(owner))
        deals = opportunities.loc[opportunities["owner"] == owner]
        steps = history.loc[history["opportunity_id"].isin(deals["opportunity_id"])]
        assert int(mine["n_deals"].sum()) == len(deals) > 0
        recomputed = figures(mine)
        pd.testing.assert_frame_equal(recomputed["stage_conversion"], pipeline.stage_conversion(steps), check_dtype=False)
        pd.testing.assert_frame_equal(recomputed["weighted_pipeline"], pipeline.weighted_pipeline(deals, steps), check_dtype=False, rtol=1e-9)
        pd.testing.assert_frame_equal(recomputed["win_rate"], pipeline.win_rates(deals), check_dtype=False, rtol=1e-9)
    assert pages.rows_for_viewer(counts, rep_viewer("Nobody Here")).empty


# a hand-made pipeline of two regions and two teams: o1-o6 in North (team A), o7-o8 in South (team B)
D0 = pd.Timestamp("2024-01-01")


@pytest.fixture
def regional() -> tuple[pd.DataFrame, pd.DataFrame]:
    day = lambda n: D0 + pd.Timedelta(days=n)  # noqa: E731
    opportunities = pd.DataFrame({
        "opportunity_id": [f"o{i}" for i in range(1, 9)],
        "lead_source": ["referral", "web_form", "web_form", "referral", "partner", "partner", "referral", "web_form"],
        "owner": ["Wang Fei", "Wang Fei", "Wang Fan", "Wang Fan", "Wang Fei", "Wang Fan", "Anna Berg", "Anna Berg"],
        "created_time": [day(0)] * 8,
        "expected_amount": [1000.0, 500.0, 200.0, 800.0, 300.0, np.nan, 900.0, 400.0],
        "status": ["won", "lost", "lost", "open", "won", "open", "won", "open"],
        "closed_time": [day(20), day(10), day(1), pd.NaT, day(10), pd.NaT, day(5), pd.NaT],
        "team": ["A"] * 6 + ["B"] * 2,
        "region": ["North"] * 6 + ["South"] * 2,
    })
    ladder = {"o1": 5, "o2": 2, "o3": 1, "o4": 3, "o5": 5, "o6": 2, "o7": 5, "o8": 4}
    rows = [(o, stage, day(k)) for o, furthest in ladder.items() for k, stage in enumerate(pipeline.STAGES[:furthest])]
    rows += [("o2", "lost", day(10)), ("o3", "lost", day(1))]
    return opportunities, pd.DataFrame(rows, columns=["opportunity_id", "stage", "entered_time"])


def group_viewer(column: str, values: tuple[str, ...]) -> access.Viewer:
    return access.Viewer("lead@example.org", access.ViewerGroup("group", ("lead@example.org",), access.RowFilter(column, values)))


@pytest.mark.parametrize(("column", "value"), [("region", "North"), ("team", "B")])
def test_a_team_or_region_sees_its_own_deals_and_small_stages_suppressed(regional, column, value):
    opportunities, history = regional
    counts = pipeline.owner_stage_counts(opportunities, history, breakdown_by="lead_source", key=KEY)
    assert {"owner_key", "team", "region", "lead_source"} <= set(counts.columns) and "owner" not in counts.columns
    rows = pages.rows_for_viewer(counts, group_viewer(column, (value,)))
    deals = opportunities.loc[opportunities[column] == value]
    steps = history.loc[history["opportunity_id"].isin(deals["opportunity_id"])]
    pd.testing.assert_frame_equal(pipeline_counts.stage_conversion(rows), pipeline.stage_conversion(steps), check_dtype=False)
    pd.testing.assert_frame_equal(pipeline_counts.weighted_pipeline(rows), pipeline.weighted_pipeline(deals, steps), check_dtype=False)
    pd.testing.assert_frame_equal(pipeline_counts.win_rates(rows, by="lead_source"), pipeline.win_rates(deals, by="lead_source"), check_dtype=False)
    shown = pipeline_counts.stage_conversion(rows, k=3).set_index("stage")
    small = shown["is_suppressed"]
    assert small.any() and shown.loc[small, "n_reached"].isna().all()
    assert (pipeline.stage_conversion(steps).set_index("stage")["n_reached"] < 3).eq(small).all()
    before_hidden = np.append(small.to_numpy()[1:], False)  # the conversion into a hidden stage would give it away
    assert shown.loc[before_hidden, "conversion_to_next_pct"].isna().all()


def test_a_column_of_masked_names_cannot_be_matched_to_a_viewer(regional):
    opportunities, _history = regional
    breakdown = privacy.mask_frame(pipeline.breakdown(opportunities, by="owner"), distinct_names=True)
    assert pages.rows_for_viewer(breakdown, rep_viewer("Wang Fei")) is None
    assert pages.rows_for_viewer(breakdown, group_viewer("region", ("North",))) is None


# --------------------------------------------------------------------------------------------------
# in the browser


@pytest.fixture(scope="module")
def reps(owners) -> tuple[str, str]:
    return owners[0], owners[1]


@pytest.fixture(scope="module")
def pipeline_server(audience_home, reps, tmp_path_factory):
    folder = tmp_path_factory.mktemp("viewer_pipeline")
    access_file = folder / "access.yaml"
    groups = {"sales_reps": {"viewers": list(reps), "rows": {"owner": access.VIEWER_PLACEHOLDER}},
              "leadership": {"viewers": [LEADERSHIP], "rows": "all"}}
    access_file.write_text(yaml.safe_dump({"groups": groups}, allow_unicode=True), encoding="utf-8")
    secret_file = folder / "proxy.secret"
    secret_file.write_text(test_viewer_access.SECRET + "\n", encoding="utf-8")
    port = free_port()
    process = start_server(
        audience_home, port, "--max-kernels", "8", "--viewer-header", test_viewer_access.HEADER, "--proxy-secret-file", str(secret_file),
        "--access-file", str(access_file), log=folder / "serve.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(base + "/voila/render/landing.ipynb", process, viewer_headers(LEADERSHIP))
        yield base
    finally:
        stop_server(process)


# the pipeline section of a rendered page: its tiles (label -> value), the stage table's rows and its text
PIPELINE_SECTION = """() => {
  const heading = [...document.querySelectorAll('h3')].find(h => h.innerText.trim() === 'Pipeline');
  const box = heading.parentElement;
  const tiles = Object.fromEntries([...box.querySelectorAll('.crm-tile')].map(
      t => [t.firstElementChild.innerText.trim(), t.querySelector('.crm-tile-value').innerText.trim()]));
  const rows = [...(box.querySelector('table')?.querySelectorAll('tbody tr') ?? [])].map(r => [...r.querySelectorAll('th, td')].map(c => c.innerText.trim()));
  return {tiles, rows, text: box.innerText};
}"""


def pipeline_section(visit, base: str, identity: str, *, shot: str) -> tuple[dict, object]:
    page = visit(f"{base}/voila/render/sales_marketing.ipynb", (test_audience_pages.READY, "h3:text-is('Pipeline')"),
                 headers=viewer_headers(identity))
    page.screenshot(f"viewer-pipeline-{shot}")  # named by role: file names hold no one's name
    test_audience_pages._clean(page)
    return page.page.evaluate(PIPELINE_SECTION), page


def expected_section(stages: pd.DataFrame, weighted: pd.DataFrame, win: pd.DataFrame) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """The stage rows (stage, deals reaching it) and the tiles the page should show for these tables."""
    demo = datasets.load_dataset(paths.default_dataset())
    row = win.iloc[0]
    tiles = {"Weighted open pipeline": audience_pages.money_text(weighted["weighted_amount"].sum(), demo.currency, demo.locale),
             "Win rate": f"{row['win_rate_pct']:.1f}%"}
    return [(str(s), int(n)) for s, n in zip(stages["stage"], stages["n_reached"], strict=True)], tiles


def shown_stages(section: dict) -> list[tuple[str, int]]:
    return [(cells[0], int(re.sub(r"\D", "", cells[1]))) for cells in section["rows"]]


@pytest.mark.browser
def test_two_representatives_see_their_own_pipeline_and_no_other_owners_name(pipeline_server, visit, audience_home, reps, owners):
    counts = run_tables(audience_home)[audience_pages.OWNER_STAGE_COUNTS]
    seen = {}
    for rep in reps:
        section, page = pipeline_section(visit, pipeline_server, rep, shot=f"rep-{reps.index(rep) + 1}")
        mine = counts.loc[counts["owner_key"] == privacy.person_keys(pd.Series([rep])).iloc[0]]
        recomputed = figures(mine)
        stages, tiles = expected_section(recomputed["stage_conversion"], recomputed["weighted_pipeline"], recomputed["win_rate"])
        assert shown_stages(section) == stages
        assert {label: section["tiles"].get(label) for label in tiles} == tiles
        assert "Computed from the deals in your view only." in section["text"]
        html = page.page.content()
        others = [name for name in owners if name != rep]
        assert [name for name in others if name in html] == [] and not re.search(r"\b[A-Z]\*+ [A-Z]\*+", html)  # nor their masks
        seen[rep] = (stages, tiles)
    first, second = (seen[rep] for rep in reps)
    assert first[0] != second[0] and first[1] != second[1]


@pytest.mark.browser
def test_the_leadership_viewer_sees_the_runs_totals(pipeline_server, visit, audience_home):
    tables = run_tables(audience_home)
    section, page = pipeline_section(visit, pipeline_server, LEADERSHIP, shot="leadership")
    stages, tiles = expected_section(tables["stage_conversion"], tables["weighted_pipeline"], tables["win_rate"])
    assert shown_stages(section) == stages
    assert {label: section["tiles"].get(label) for label in tiles} == tiles
    assert "Computed from the deals in your view only." not in section["text"]
    assert page.page.locator(".crm-not-in-view").count() == 0

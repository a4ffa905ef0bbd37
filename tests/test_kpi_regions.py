"""KPI values per region (``kpi.compute_kpis_by_attribute``), persisted by the KPI run and narrowed to a viewer's
regions on the executive page (``audience_pages.kpi_values_for_viewer``).

Everything runs on the session's generated demo (``demo_home``: 5,000 customers and their warehouse). The values of
one province are checked against the KPIs computed over that province's customers alone, from input tables
filtered to them; the page function reads real KPI runs made by the runner.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
import yaml

from crm_analytics import access, audience_pages, datasets, engine, kpi, paths, runner

GRAIN = "month"
HISTORY_MONTHS = 12


@pytest.fixture(scope="module")
def warehouse(demo_home):
    """The demo warehouse's tables the catalogue reads, the catalogue with the demo's targets, and the window."""
    catalogue = kpi.load_catalogue(targets_file=datasets.load_dataset("demo").targets_file)
    con = engine.connect("duckdb", warehouse_path=paths.warehouse_path())
    tables = {name: con.table(name) for name in kpi.required_tables(catalogue)}
    end = kpi.activity_window_end(tables)
    return tables, catalogue, kpi.window_start(end, history_months=HISTORY_MONTHS), end


@pytest.fixture(scope="module")
def customers(warehouse) -> pd.DataFrame:
    tables, *_ = warehouse
    return tables["customers"].select("customer_id", "province", "city").to_pandas()


def largest_provinces(customers: pd.DataFrame, n: int) -> list[str]:
    return [str(p) for p in customers["province"].value_counts().index[:n]]


def only_customers(tables: dict, customer_ids) -> dict:
    """The tables with only the rows of ``customer_ids`` (tables without a customer column kept whole)."""
    ids = tables["customers"].filter(tables["customers"].customer_id.isin(list(customer_ids))).select(_id="customer_id")
    return {name: t.semi_join(ids, t.customer_id == ids._id) if "customer_id" in t.columns else t for name, t in tables.items()}


def keyed(values: pd.DataFrame) -> pd.Series:
    return values.set_index(["kpi_id", "period_start"])["value"].sort_index()


def test_a_provinces_kpis_are_those_computed_over_its_customers_alone(warehouse, customers):
    tables, catalogue, start, end = warehouse
    province = largest_provinces(customers, 1)[0]
    by_province = kpi.compute_kpis_by_attribute(tables, catalogue, customers=tables["customers"], attribute="province",
                                                grain=GRAIN, start=start, end=end, k=audience_pages.MIN_GROUP_SIZE)
    attributable = [k for k in catalogue if "segment" in k.dimensions]
    ids = customers.loc[customers["province"] == province, "customer_id"]
    truth = kpi.compute_kpis(only_customers(tables, ids), attributable, grain=GRAIN, start=start, end=end, dimensions=())

    mine = by_province[by_province["segment"] == province]
    assert set(by_province["channel"]) == {"all"} and set(mine["kpi_id"]) == {k.id for k in attributable}
    pd.testing.assert_series_equal(keyed(mine), keyed(truth), check_exact=False, rtol=1e-9, atol=1e-9)
    assert "revenue" in set(mine["kpi_id"]) and "channel_efficiency" not in set(by_province["kpi_id"])  # per-channel KPIs are not per customer


def test_regions_of_fewer_than_k_customers_are_left_out(warehouse, customers):
    tables, catalogue, start, end = warehouse
    orders = tables["orders"]
    recent = orders.filter(orders.order_time >= end - pd.Timedelta(days=60)).select("customer_id").distinct().limit(9).to_pandas()["customer_id"]
    k = audience_pages.MIN_GROUP_SIZE
    moved = customers.copy()
    moved.loc[moved["customer_id"].isin(recent[: k - 1]), "province"] = "Tiny"  # k - 1 customers
    moved.loc[moved["customer_id"].isin(recent[k - 1:]), "province"] = "Small"  # k customers
    revenue = [c for c in catalogue if c.id in ("revenue", "active_customers")]
    values = kpi.compute_kpis_by_attribute(tables, revenue, customers=moved, attribute="province", grain=GRAIN, start=start, end=end, k=k)
    assert "Tiny" not in set(values["segment"]) and "Small" in set(values["segment"])
    sizes = kpi.attribute_sizes(moved, "province", k=k).set_index("province")
    assert bool(sizes.loc["Tiny", "is_suppressed"]) and pd.isna(sizes.loc["Tiny", "n_customers"])
    assert sizes.loc["Small", "n_customers"] == k and not sizes.loc["Small", "is_suppressed"]


def test_the_breakdown_follows_the_access_files_customer_filters(tmp_path):
    groups = {
        "south": {"viewers": ["alice@example.org"], "rows": {"province": ["Guangdong"]}},
        "reps": {"viewers": ["Zhang Wei"], "rows": {"owner": "$viewer"}},
        "north": {"viewers": ["carol@example.org"], "rows": {"region": ["North"]}},
        "leadership": {"viewers": ["ceo@example.org"], "rows": "all"},
    }
    (tmp_path / "access.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    filtered_on = kpi.access_filter_columns(tmp_path / "access.yaml")
    assert filtered_on == ["province", "region"]  # a filter on the viewer's own identity is no attribute
    columns = ["customer_id", "province", "city", "signup_time"]
    assert kpi.breakdown_attribute("", customer_columns=columns, filter_columns=filtered_on) == ("province", {"region": "the customers table lacks it"})
    assert kpi.breakdown_attribute("", customer_columns=columns, filter_columns=["city", "province"]) == ("city", {"province": "the KPIs are computed per city only"})
    assert kpi.breakdown_attribute("none", customer_columns=columns, filter_columns=filtered_on) == (None, {})
    assert kpi.breakdown_attribute("city", customer_columns=columns, filter_columns=filtered_on) == ("city", {})
    assert kpi.breakdown_attribute("", customer_columns=columns) == (None, {})
    assert kpi.access_filter_columns(tmp_path / "absent.yaml") == []
    with pytest.raises(ValueError, match="no attribute 'provnce' \\(did you mean 'province'"):
        kpi.breakdown_attribute("provnce", customer_columns=columns)


def test_the_breakdown_reads_the_groups_a_server_of_the_dataset_would_use(tmp_path, monkeypatch):
    """A dataset file's own ``access`` block is used over ``parameters/access.yaml``, as ``serve`` does."""
    monkeypatch.delenv(access.ACCESS_FILE_ENV, raising=False)
    dataset_file = tmp_path / "shop.yaml"
    block = {"groups": {"east": {"viewers": ["bob@example.org"], "rows": {"city": ["Leeds"]}}}}
    dataset_file.write_text(yaml.safe_dump({"currency": "GBP", "access": block}), encoding="utf-8")
    assert kpi.access_filter_columns(dataset_file=dataset_file) == ["city"]
    dataset_file.write_text(yaml.safe_dump({"currency": "GBP"}), encoding="utf-8")
    project_groups = kpi.access_filter_columns()  # parameters/access.yaml, as without a dataset file
    assert kpi.access_filter_columns(dataset_file=dataset_file) == project_groups


# --------------------------------------------------------------------------------------------------
# the KPI run and the executive page's rows per viewer

VIEWERS = {"one": "alice@example.org", "two": "bob@example.org", "cities": "dan@example.org", "reps": "Zhang Wei", "leadership": "ceo@example.org"}
RUN = {"grains": ["month", "quarter"], "history_months": HISTORY_MONTHS}


@pytest.fixture(scope="module")
def provinces(customers) -> list[str]:
    return largest_provinces(customers, 2)


@pytest.fixture(scope="module")
def access_file(tmp_path_factory, provinces, customers):
    path = tmp_path_factory.mktemp("access") / "access.yaml"
    city = str(customers["city"].value_counts().index[0])
    groups = {
        "one": {"viewers": [VIEWERS["one"]], "rows": {"province": provinces[:1]}},
        "two": {"viewers": [VIEWERS["two"]], "rows": {"province": provinces}},
        "cities": {"viewers": [VIEWERS["cities"]], "rows": {"city": [city]}},
        "reps": {"viewers": [VIEWERS["reps"]], "rows": {"owner": "$viewer"}},
        "leadership": {"viewers": [VIEWERS["leadership"]], "rows": "all"},
    }
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")  # province first
    return path


@pytest.fixture(scope="module")
def kpi_home(demo_home, tmp_path_factory):
    """A project home over the demo's data, for KPI runs of its own."""
    home = tmp_path_factory.mktemp("kpi_home")
    (home / "data").symlink_to(demo_home / "data", target_is_directory=True)
    return home


def run_kpi(home, **environ) -> dict[str, pd.DataFrame]:
    """A KPI run by the runner with the default parameters (but ``RUN``); its persisted tables by name."""
    saved = {name: os.environ.get(name) for name in (paths.HOME_ENV, *environ)}
    os.environ.update({paths.HOME_ENV: str(home), **environ})
    try:
        result = runner.run_analysis("kpi", parameters=RUN, cell_timeout=300, run_timeout=600, write_index=False)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert result.ok, result
    return {p.stem: pd.read_parquet(p) for p in (result.run_dir / "tables").glob("*.parquet")}


def as_viewer(monkeypatch, access_file, group: str, home) -> None:
    monkeypatch.setenv(paths.HOME_ENV, str(home))
    monkeypatch.setenv(access.ACCESS_FILE_ENV, str(access_file))
    policy = access.load_access(access_file)
    for name, value in access.viewer_environment(access.Viewer(VIEWERS[group], policy.group_named(group))).items():
        monkeypatch.setenv(name, value)


@pytest.mark.slow
def test_the_executive_page_shows_a_viewer_the_kpis_of_their_own_provinces(kpi_home, access_file, provinces, monkeypatch):
    # a run without viewer groups computes nothing per region: a restricted viewer is told so
    default = run_kpi(kpi_home, **{access.ACCESS_FILE_ENV: str(paths.parameters_dir() / access.ACCESS_FILE_NAME)})
    assert "kpi_values_by_region" not in default and "alerts_by_region" not in default
    as_viewer(monkeypatch, access_file, "one", kpi_home)
    tracked, alerts, note = audience_pages.kpi_values_for_viewer()
    assert tracked is None and alerts is None
    assert "KPI board: not available for your view (the KPI run computed no values per province)" in note

    # with the access file, the run's default computes the KPIs per province, the column its groups filter on
    run = run_kpi(kpi_home, **{access.ACCESS_FILE_ENV: str(access_file)})
    regional = run["kpi_values_by_region"]
    assert "province" in regional and "segment" not in regional and "province" in run["alerts_by_region"]
    assert set(regional["grain"]) == {"month", "quarter"} and set(regional["channel"]) == {"all"} and "city" not in regional
    assert "per province only" in (kpi_home / "outputs" / paths.default_dataset() / "kpi" / "latest" / "run.json").read_text(encoding="utf-8")
    pd.testing.assert_frame_equal(run["kpi_values"], default["kpi_values"])  # the totals do not change

    tracked, alerts, note = audience_pages.kpi_values_for_viewer()  # one province: its values are the viewer's totals
    own = regional[regional["province"] == provinces[0]]
    assert note is None and len(tracked) == len(own) and set(tracked["segment"]) == {"all"}
    assert list(tracked.columns) == list(run["kpi_values"].columns)  # shaped like kpi_values, for the board
    assert tracked["value"].tolist() == own["value"].tolist()
    assert len(alerts) == int((run["alerts_by_region"]["province"] == provinces[0]).sum())

    as_viewer(monkeypatch, access_file, "two", kpi_home)  # two provinces: the segment filter offers them
    tracked, alerts, note = audience_pages.kpi_values_for_viewer()
    assert note is None and set(tracked["segment"]) == set(provinces)
    assert len(tracked) == int(regional["province"].isin(provinces).sum())
    assert len(alerts) == int(run["alerts_by_region"]["province"].isin(provinces).sum())
    assert all(name.endswith(f"({region})") for name, region in zip(alerts["name"], alerts["segment"]))

    for group, missing in (("cities", "city"), ("reps", "owner")):  # filters the run computed no values for
        as_viewer(monkeypatch, access_file, group, kpi_home)
        tracked, alerts, note = audience_pages.kpi_values_for_viewer()
        assert tracked is None and f"not available for your view (the KPI run computed no values per {missing})" in note

    as_viewer(monkeypatch, access_file, "leadership", kpi_home)  # every row: the run's totals and alerts
    tracked, alerts, note = audience_pages.kpi_values_for_viewer()
    assert note is None
    pd.testing.assert_frame_equal(tracked, run["kpi_values"])
    pd.testing.assert_frame_equal(alerts, run["alerts"])

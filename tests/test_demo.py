"""Tests of the seeded demo-data generator: contract with the source map, consistency, planted dirt and signal."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import warnings
import zipfile
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from crm_analytics import paths
from crm_analytics.demo import DEFAULT_AS_OF, generate

N_CUSTOMERS = 1500
END = pd.Timestamp("2025-12-31 23:59:59")
CUSTOMER_SOURCES = {"web_signups": "W", "store_members": "S", "call_centre_contacts": "C"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate(N_CUSTOMERS, seed=7, out_dir=tmp_path_factory.mktemp("demo") / "raw")


@pytest.fixture(scope="module")
def source_map() -> dict:
    with open(paths.sources_file(), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["sources"]


@pytest.fixture(scope="module")
def truth(dataset) -> dict[str, pd.DataFrame]:
    folder = dataset / "ground_truth"
    return {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("persons", "source_records", "planted_dirt")}


def _decode(path: Path) -> tuple[str, str]:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError(f"{path} decodes neither as UTF-8 nor as GB18030")


def read_raw(dataset: Path, spec: dict) -> pd.DataFrame:
    """A source file as text columns with the source's own names."""
    path = dataset / spec["path"]
    if spec["format"] == "csv":
        _, encoding = _decode(path)
        return pd.read_csv(path, encoding=encoding, dtype=str, keep_default_na=False, na_values=[""])
    if spec["format"] == "excel":
        return pd.read_excel(path, sheet_name=spec["sheet"], dtype=object).astype("string")
    return pd.read_parquet(path)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- determinism and file contract -------------------------------------------------------------


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    first = _digests(generate(300, seed=11, out_dir=tmp_path / "a"))
    second = _digests(generate(300, seed=11, out_dir=tmp_path / "b"))
    other = _digests(generate(300, seed=12, out_dir=tmp_path / "c"))
    assert first == second
    assert len(first) > 20
    changed = [name for name in first if first[name] != other.get(name)]
    assert "web_orders.csv" in changed and "ground_truth/persons.parquet" in changed


def test_regenerating_replaces_the_previous_dataset(tmp_path):
    folder = generate(200, seed=1, out_dir=tmp_path)
    (folder / "ground_truth" / "stale.json").write_text("{}")
    (folder / "notes.txt").write_text("kept")
    before = (folder / "web_orders.csv").read_bytes()
    generate(250, seed=2, out_dir=tmp_path)
    assert not (folder / "ground_truth" / "stale.json").exists()
    assert (folder / "notes.txt").read_text() == "kept"
    assert (folder / "web_orders.csv").read_bytes() != before
    assert not any(p.name.startswith(".demo") for p in folder.iterdir())
    assert json.loads((folder / "ground_truth" / "manifest.json").read_text())["n_customers"] == 250


def test_every_declared_file_exists_with_exactly_the_mapped_columns(dataset, source_map):
    for name, spec in source_map.items():
        path = dataset / spec["path"]
        assert path.exists(), f"{name}: {path} missing"
        if spec["format"] == "parquet":
            columns = pq.read_schema(path).names
        elif spec["format"] == "excel":
            workbook = openpyxl.load_workbook(path, read_only=True)
            assert workbook.sheetnames == [spec["sheet"]]
            columns = [c.value for c in next(workbook[spec["sheet"]].iter_rows(max_row=1))]
        else:
            text, _ = _decode(path)
            columns = text.split("\n", 1)[0].split(",")
        assert columns == list(spec["columns"].values()), name


def test_manifest_lists_every_file_with_its_hash_and_rows(dataset, source_map):
    manifest = json.loads((dataset / "ground_truth" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["seed"] == 7 and manifest["n_customers"] == N_CUSTOMERS and manifest["as_of"] == DEFAULT_AS_OF
    listed = {f["path"]: f for f in manifest["files"]}
    assert {spec["path"] for spec in source_map.values()} <= set(listed)
    for path, entry in listed.items():
        assert hashlib.sha256((dataset / path).read_bytes()).hexdigest() == entry["sha256"], path
    for name, spec in source_map.items():
        assert len(read_raw(dataset, spec)) == listed[spec["path"]]["rows"], name


def test_excel_file_opens_cleanly_with_fixed_document_dates(dataset):
    path = dataset / "call_centre_contacts.xlsx"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        openpyxl.load_workbook(path)
    with zipfile.ZipFile(path) as archive:
        assert {info.date_time for info in archive.infolist()} == {(2000, 1, 1, 0, 0, 0)}
        assert b"2000-01-01T00:00:00Z" in archive.read("docProps/core.xml")


# --- customers and ground truth -----------------------------------------------------------------


def test_every_customer_record_maps_to_one_person_and_every_person_has_one(dataset, source_map, truth):
    records = truth["source_records"]
    persons = truth["persons"]
    assert records.source_record_id.is_unique
    assert set(records.person_id) == set(persons.person_id)
    assert set(records.source) == {"web", "store", "call_centre"}
    per_person = records.groupby("person_id").source.nunique()
    assert per_person.between(1, 3).all()
    for name, prefix in CUSTOMER_SOURCES.items():
        spec = source_map[name]
        ids = read_raw(dataset, spec)[spec["columns"]["customer_id"]]
        assert ids.notna().all() and ids.is_unique
        assert ids.str.fullmatch(prefix + r"\d{7}").all()
        source = spec["constants"]["source"]
        assert set(ids) == set(records.loc[records.source == source, "source_record_id"]), name


def test_about_two_percent_of_records_are_duplicates_mostly_sharing_email_or_phone(dataset, source_map, truth):
    records = truth["source_records"]
    share = records.is_duplicate.mean()
    assert 0.01 < share < 0.04
    persons = truth["persons"].set_index("person_id")
    spec = source_map["web_signups"]
    web = read_raw(dataset, spec).set_index(spec["columns"]["customer_id"])
    duplicates = records[(records.source == "web") & records.is_duplicate]
    email = web.loc[duplicates.source_record_id, spec["columns"]["email"]].fillna("")
    email = email.map(lambda e: unicodedata.normalize("NFKC", e).strip().lower())
    phone = web.loc[duplicates.source_record_id, spec["columns"]["phone"]].fillna("").str.replace(r"\D", "", regex=True).str[-11:]
    canonical = persons.loc[duplicates.person_id]
    shared = (email.to_numpy() == canonical.email.to_numpy()) | (phone.to_numpy() == canonical.phone.str[-11:].to_numpy())
    assert shared.mean() > 0.7


def test_persons_ground_truth_is_complete_and_consistent(truth):
    persons = truth["persons"]
    expected = {"person_id", "true_segment", "acquisition_channel", "acquisition_time", "dropout_time", "purchase_rate_per_week",
                "dropout_probability", "satisfaction", "full_name", "email", "phone", "birth_date", "city", "province"}
    assert expected <= set(persons.columns)
    assert len(persons) == N_CUSTOMERS and persons.person_id.is_unique
    assert persons.true_segment.nunique() == 5
    assert set(persons.acquisition_channel) == {"organic_search", "paid_search", "social", "referral", "store", "call_centre"}
    assert persons.phone.str.fullmatch(r"\+861\d{10}").all() and persons.phone.is_unique
    assert persons.email.is_unique
    dropped = persons.dropout_time.notna()
    assert 0.2 < dropped.mean() < 0.9
    assert (persons.dropout_time[dropped] >= persons.acquisition_time[dropped]).all()
    assert (persons.dropout_time[dropped] <= END).all()
    # unhappy people drop out more often
    assert persons.loc[dropped, "satisfaction"].mean() < persons.loc[~dropped, "satisfaction"].mean() - 0.1


# --- facts ------------------------------------------------------------------------------------


FACT_CUSTOMER_PREFIX = {
    "web_orders": "W", "store_sales": "S", "web_events": "W", "support_tickets": "C", "experiment_assignments": "W",
    "touchpoints": "[WS]", "surveys": "[WS]", "opportunities": "[WS]",
}


def test_every_fact_customer_id_exists_in_a_customer_source_apart_from_planted_orphans(dataset, source_map, truth):
    known = set(truth["source_records"].source_record_id)
    dirt = truth["planted_dirt"]
    for name, prefix in FACT_CUSTOMER_PREFIX.items():
        spec = source_map[name]
        ids = read_raw(dataset, spec)[spec["columns"]["customer_id"]].dropna()
        orphans = set(dirt.loc[(dirt.source == name) & (dirt.kind == "orphan_customer_id"), "value"])
        unknown = set(ids) - known
        assert unknown == orphans, name
        assert ids.str.fullmatch(prefix + r"\d{7}").all(), name


def test_orders_are_plausible_and_follow_the_purchase_model(dataset, source_map, truth):
    web = read_raw(dataset, source_map["web_orders"])
    store = read_raw(dataset, source_map["store_sales"])
    refunds = web.is_refund == "true"
    orders_per_customer = (len(web) + len(store)) / N_CUSTOMERS
    assert 7 <= orders_per_customer <= 13
    assert 0.01 < refunds.mean() < 0.06
    assert web.order_no[refunds].str.endswith("-R").all()
    assert set(web.order_no[refunds].str[:-2]) <= set(web.order_no)
    assert set(web.platform) == {"web", "app", "mini_program"}
    amounts = pd.to_numeric(web.amount, errors="coerce")
    assert (amounts[refunds.to_numpy()] < 0).all() and (amounts[~refunds.to_numpy()].dropna() > 0).all()
    # no purchase after a person's dropout (refunds may come later)
    records = truth["source_records"].set_index("source_record_id").person_id
    persons = truth["persons"].set_index("person_id")
    times = pd.to_datetime(web.order_time, format="ISO8601", utc=True, errors="coerce").dt.tz_convert("Asia/Shanghai").dt.tz_localize(None)
    bought = pd.DataFrame({"person": web.account_id.map(records), "time": times})[~refunds & (times <= END)].dropna()
    dropout = persons.dropout_time.reindex(bought.person).to_numpy()
    acquired = persons.acquisition_time.reindex(bought.person).to_numpy()
    assert not (bought.time.to_numpy() > dropout).any()
    assert (bought.time.to_numpy() >= acquired).all()


def test_order_lines_match_orders_and_the_catalogue(dataset, source_map):
    items = read_raw(dataset, source_map["order_items"])
    products = read_raw(dataset, source_map["products"])
    web = read_raw(dataset, source_map["web_orders"])
    assert 300 <= len(products) <= 500 and products.category.nunique() == 12
    assert products.product_name.str.contains(r"[\u4e00-\u9fff]").all()
    assert set(items.product_id) <= set(products.product_id)
    assert items.groupby("order_id").line_number.max().between(1, 4).all()
    sale = web[(web.is_refund == "false") & pd.to_numeric(web.amount, errors="coerce").notna()].drop_duplicates("order_no")
    gross = (items.quantity * items.unit_price).groupby(items.order_id).sum().reindex(sale.order_no).to_numpy()
    paid = pd.to_numeric(sale.amount).to_numpy() + pd.to_numeric(sale.discount).to_numpy()
    np.testing.assert_allclose(paid, gross, atol=0.02)


def test_promotion_days_and_spring_festival_shape_daily_orders(dataset, source_map):
    web = read_raw(dataset, source_map["web_orders"])
    local = pd.to_datetime(web.order_time, format="ISO8601", utc=True, errors="coerce").dt.tz_convert("Asia/Shanghai")
    daily = local.dt.date.value_counts()
    november = daily[[d for d in daily.index if d.year == 2025 and d.month == 11]].median()
    assert daily.get(pd.Timestamp("2025-11-11").date(), 0) > 3 * november
    festival = daily[[d for d in daily.index if pd.Timestamp("2025-01-28").date() <= d <= pd.Timestamp("2025-02-02").date()]].mean()
    assert festival < 0.7 * daily[[d for d in daily.index if d.year == 2025 and d.month == 3]].mean()


def test_web_funnel_steps_decrease_and_match_the_planted_rates(dataset, source_map):
    events = read_raw(dataset, source_map["web_events"])
    assert 30 <= len(events) / N_CUSTOMERS <= 90
    steps = ["visit", "product_view", "add_to_cart", "checkout", "purchase"]
    assert set(events.event_name) == set(steps)
    reached = pd.crosstab(events.session_id, events.event_name).clip(upper=1)[steps]
    platform = events.groupby("session_id").platform.first()
    for name, group in reached.groupby(platform):
        rates = group.mean().to_numpy()
        assert (np.diff(rates) < 0).all(), name
    funnel = json.loads((dataset / "ground_truth" / "funnel.json").read_text())
    sessions = events.groupby("session_id")[["platform", "traffic_source"]].first()
    cell = (sessions.platform == "app") & (sessions.traffic_source == "direct")
    app = reached[cell.reindex(reached.index).to_numpy()]
    planted = funnel["step_conversion"]["app"]["direct"]["add_to_cart->checkout"]
    realised = app.add_to_cart.sum() and app.checkout.sum() / app.add_to_cart.sum()
    assert abs(realised - planted) < 0.06
    assert events.product_id.isna().eq(~events.event_name.isin(["product_view", "add_to_cart"])).all()


def test_pipeline_stages_follow_each_other(dataset, source_map):
    opportunities = read_raw(dataset, source_map["opportunities"])
    history = read_raw(dataset, source_map["opportunity_stage_history"])
    assert set(opportunities.status) <= {"open", "won", "lost"} and (opportunities.status == "open").any()
    assert set(opportunities.lead_source) == {"web_form", "trade_show", "referral", "outbound", "partner"}
    assert opportunities.closed_at.isna().eq(opportunities.status == "open").all()
    first = history.groupby("opportunity_id").stage.first()
    assert (first == "lead").all()
    order = {"lead": 0, "qualified": 1, "proposal": 2, "negotiation": 3, "won": 4, "lost": 4}
    ranks = history.stage.map(order)
    assert ranks.groupby(history.opportunity_id).apply(lambda r: r.is_monotonic_increasing).all()
    assert (history[history.stage == "won"].groupby("opportunity_id").size() == 1).all()


def test_marketing_channel_effects_are_planted_and_recorded(dataset, source_map):
    effects = json.loads((dataset / "ground_truth" / "channel_effects.json").read_text())
    assert effects["ranking"][0] == "wechat" and effects["ranking"][-1] == "sms"
    touchpoints = read_raw(dataset, source_map["touchpoints"])
    assert set(touchpoints.channel) == set(effects["channels"])
    campaigns = read_raw(dataset, source_map["campaigns"])
    assert set(touchpoints.campaign_id) <= set(campaigns.campaign_id)
    assert effects["n_converted_journeys"] > 0
    counted = {c: v["n_touchpoints"] for c, v in effects["channels"].items()}
    assert counted == touchpoints.channel.value_counts().to_dict()


def test_experiment_realised_lift_is_near_the_planted_one(dataset, source_map):
    truth = json.loads((dataset / "ground_truth" / "experiment.json").read_text())
    assignments = read_raw(dataset, source_map["experiment_assignments"])
    assert assignments.experiment_id.unique().tolist() == [truth["experiment_id"]]
    assert re.fullmatch(r"checkout_redesign_\d{4}", truth["experiment_id"])
    assert assignments.account_id.is_unique
    rates = assignments.groupby("variant").converted.mean()
    n = assignments.variant.value_counts()
    assert abs(n["treatment"] / n.sum() - 0.5) < 4 * np.sqrt(0.25 / n.sum())
    for variant in ("control", "treatment"):
        planted = truth["planted"]["conversion_rate"][variant]
        assert rates[variant] == pytest.approx(truth["realised"][variant]["conversion_rate"])
        assert abs(rates[variant] - planted) < 4 * np.sqrt(planted * (1 - planted) / n[variant])
    assert (assignments.revenue[~assignments.converted] == 0).all() and (assignments.revenue[assignments.converted] > 0).all()


def test_support_and_surveys_track_satisfaction(dataset, source_map, truth):
    records = truth["source_records"].set_index("source_record_id").person_id
    satisfaction = truth["persons"].set_index("person_id").satisfaction
    surveys = read_raw(dataset, source_map["surveys"])
    nps = pd.to_numeric(surveys.nps)
    person_sat = satisfaction.reindex(surveys.account_id.map(records)).to_numpy()
    assert np.corrcoef(nps.fillna(nps.mean()), person_sat)[0, 1] > 0.5
    assert nps.dropna().between(0, 10).all() and pd.to_numeric(surveys.csat).dropna().between(1, 5).all()
    assert surveys.comment.str.contains(r"[\u4e00-\u9fff]").any() and surveys.comment.str.contains(r"^[a-z ]+$").any()
    tickets = read_raw(dataset, source_map["support_tickets"])
    with_ticket = satisfaction.index.isin(tickets.contact_id.map(records))
    assert satisfaction[with_ticket].mean() < satisfaction[~with_ticket].mean()
    opened = pd.to_datetime(tickets.opened_at)
    assert (pd.to_datetime(tickets.first_response_at).dropna() >= opened[tickets.first_response_at.notna()]).all()


# --- planted dirt -------------------------------------------------------------------------------


def test_file_level_dirt_bom_encoding_and_excel_numbers(dataset):
    assert (dataset / "web_signups.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert not (dataset / "web_orders.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    for name in ("store_members.csv", "store_sales.csv"):
        raw = (dataset / name).read_bytes()
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")
        assert raw.decode("gb18030").startswith(("会员号", "小票号"))
    sheet = openpyxl.load_workbook(dataset / "call_centre_contacts.xlsx", read_only=True)["contacts"]
    rows = list(sheet.iter_rows(min_row=2, values_only=True))
    assert any(isinstance(r[2], str) and re.fullmatch(r"1\.\d{1,5}E\+10", r[2]) for r in rows)
    assert sum(isinstance(r[4], float) for r in rows) > 0.5 * len(rows)  # Excel serial dates
    assert any(isinstance(r[4], str) for r in rows)


def test_every_dirt_kind_is_planted_and_logged_where_it_is(dataset, source_map, truth):
    dirt = truth["planted_dirt"]
    kinds = set(dirt.kind)
    expected = {"missing_value", "name_pinyin", "name_traditional", "extra_whitespace", "full_width", "email_case",
                "invalid_email", "invalid_date", "future_date", "phone_scientific_notation", "orphan_customer_id",
                "duplicate_row", "duplicate_record", "invalid_amount", "bom", "encoding", "mixed_time_offsets",
                "amount_text_formats", "excel_serial_date"}
    assert expected <= kinds, expected - kinds
    assert set(dirt.source) <= set(source_map)
    rows = dirt[(dirt.row >= 0) & dirt.value.notna() & ~dirt.kind.isin(["missing_value", "duplicate_record"])]
    for name, logged in rows.groupby("source"):
        frame = read_raw(dataset, source_map[name])
        for column, part in logged.groupby("column"):
            written = frame[column].iloc[part.row.to_numpy()].astype(str).to_numpy()
            assert (written == part.value.to_numpy()).all(), (name, column)
    person_of = truth["source_records"].set_index("source_record_id").person_id
    duplicates = dirt[dirt.kind == "duplicate_record"]
    assert len(duplicates) == truth["source_records"].is_duplicate.sum()
    assert (duplicates.source_record_id.map(person_of) == duplicates.value.map(person_of)).all()
    assert (duplicates.source_record_id != duplicates.value).all()
    missing = dirt[(dirt.kind == "missing_value") & (dirt.row >= 0)]
    for name, logged in missing.groupby("source"):
        frame = read_raw(dataset, source_map[name])
        for column, part in logged.groupby("column"):
            assert frame[column].iloc[part.row.to_numpy()].isna().all(), (name, column)


def test_dirty_spellings_show_up_in_the_exports(dataset, source_map):
    web = read_raw(dataset, source_map["web_signups"])
    assert web.signup_time.str.endswith("Z").any() and web.signup_time.str.endswith("+08:00").any()
    assert web.email.str.contains("＠").any() and web.email.str.contains(r"^\s|\s$").any()
    assert web.name.str.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+").any()
    assert web.mobile.str.startswith("+86 ").any() and web.mobile.str.startswith("0086").any()
    store = read_raw(dataset, source_map["store_members"])
    assert store["注册日期"].str.contains("年").any() and store["注册日期"].str.fullmatch(r"\d{8}").any()
    assert set(store["性别"].dropna()) == {"女", "男"}
    sales = read_raw(dataset, source_map["store_sales"])
    amounts = sales["实付金额"].dropna()
    for pattern in (r"^¥", r"^RMB ", r"元$", r"^（.*）$", r"[０-９]"):
        assert amounts.str.contains(pattern).any(), pattern
    future = pd.to_datetime(sales["交易时间"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    assert (future > END).any()


@pytest.mark.slow
def test_behavioural_clustering_recovers_the_planted_segments(dataset, source_map, truth):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    from sklearn.preprocessing import StandardScaler

    person_of = truth["source_records"].set_index("source_record_id").person_id
    web = read_raw(dataset, source_map["web_orders"])
    store = read_raw(dataset, source_map["store_sales"])
    orders = pd.concat([
        pd.DataFrame({"order_id": web.order_no, "customer": web.account_id, "channel": web.platform,
                      "discounted": pd.to_numeric(web.discount, errors="coerce").fillna(0) > 0}),
        pd.DataFrame({"order_id": store["小票号"], "customer": store["会员号"], "channel": "store",
                      "discounted": store["折扣金额"].notna()}),
    ]).drop_duplicates("order_id")
    orders["person"] = orders.customer.map(person_of)
    orders = orders.dropna(subset=["person"])
    items = read_raw(dataset, source_map["order_items"]).merge(read_raw(dataset, source_map["products"]), on="product_id")
    items = items.merge(orders[["order_id", "person"]], on="order_id")
    items["value"] = items.quantity * items.unit_price
    categories = items.pivot_table(index="person", columns="category", values="value", aggfunc="sum", fill_value=0)
    features = categories.div(categories.sum(axis=1), axis=0)
    features = features.join(pd.crosstab(orders.person, orders.channel, normalize="index"))
    features["discount_share"] = orders.groupby("person").discounted.mean()
    features["log_order_value"] = np.log(items.groupby("person").value.sum() / orders.groupby("person").size())
    features = features.fillna(0)
    labels = KMeans(5, n_init=10, random_state=0).fit_predict(StandardScaler().fit_transform(features))
    segments = truth["persons"].set_index("person_id").true_segment.reindex(features.index)
    assert adjusted_rand_score(segments, labels) >= 0.7


def test_too_few_customers_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least"):
        generate(3, out_dir=tmp_path)

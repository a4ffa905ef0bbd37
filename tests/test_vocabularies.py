"""Vocabularies (accepted values, value maps, unknown values) and more source shapes (header-less CSVs, unix
timestamps, generated keys), each through a real cleansing build of tiny files written here."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest
import yaml

from crm_analytics import datasets, parsing, paths, schema, sources
from crm_analytics.cleansing import UnknownValueError, build_clean_warehouse, vocabulary

AS_OF = "2025-01-01"
CRM_STAGES = ["Prospecting", "Engaging", "Won", "Lost"]  # a typical CRM export's ladder: two of its names are not ours


def write_dataset(root, name: str, files: dict[str, str | pd.DataFrame], sources_block: dict, **keys) -> "paths.Path":
    """Write a dataset's files under ``data/raw/<name>`` and its dataset file; return the file."""
    raw = root / "data" / "raw" / name
    raw.mkdir(parents=True, exist_ok=True)
    for file, content in files.items():
        if isinstance(content, pd.DataFrame):
            content.to_parquet(raw / file)
        else:
            (raw / file).write_text(content, encoding="utf-8")
    document = {"data_dir": f"data/raw/{name}", "time_zone": "Europe/Berlin", "currency": "EUR", "country": "DE",
                "sources": sources_block} | keys
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


ACCOUNTS = {"table": "customers", "path": "accounts.csv", "format": "csv", "date_formats": ["%Y-%m-%d %H:%M:%S"],
            "columns": {"customer_id": "id", "signup_time": "created"}, "constants": {"source": "crm"}}
HISTORY = {"table": "opportunity_stage_history", "path": "history.csv", "format": "csv", "date_formats": ["%Y-%m-%d %H:%M:%S"],
           "columns": {"opportunity_id": "opp", "stage": "stage", "entered_time": "at"}}


def accounts_csv(n: int = 3) -> str:
    return "id,created\n" + "".join(f"A{i},2024-01-01 10:00:00\n" for i in range(n))


def history_csv(stages: list[str]) -> str:
    return "opp,stage,at\n" + "".join(f"P{i},{stage},2024-02-01 10:00:00\n" for i, stage in enumerate(stages))


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    return tmp_path


def read(dataset: str, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(paths.warehouse_path(dataset)), read_only=True) as con:
        return con.execute(sql).df()


# ---------------------------------------------------------------------------------- the schema


def test_every_categorical_value_of_the_demo_generator_is_accepted():
    from crm_analytics.demo import b2b, experiment, marketing, reference, service, web

    accepted = lambda table, column: set(schema.get_table(table).column(column).values)  # noqa: E731
    assert set(reference.SALES_CHANNELS) <= accepted("orders", "channel")
    assert set(reference.ACQUISITION_CHANNELS) <= accepted("customers", "acquisition_channel")
    assert set(reference.GENDERS) <= accepted("customers", "gender")
    assert set(web.EVENTS) <= accepted("web_events", "event_name") and set(web.TRAFFIC_SOURCES) <= accepted("web_events", "traffic_channel")
    assert set(reference.WEB_PLATFORMS) <= accepted("web_events", "platform")
    assert set(marketing.CHANNELS) <= accepted("campaigns", "channel") == accepted("touchpoints", "channel")
    assert set(service.TICKET_CATEGORIES) <= accepted("support_tickets", "category")
    assert set(service.CONTACT_CHANNELS) <= accepted("support_tickets", "contact_channel")
    assert set(b2b.STAGES) | {"won", "lost"} == accepted("opportunity_stage_history", "stage")
    assert accepted("opportunities", "status") == {"open", "won", "lost"}
    assert schema.get_table("experiment_assignments").column("variant").values is None, "arms are named by the analysis"
    assert set(experiment.VARIANTS) and schema.get_table("opportunities").column("lead_source").values is None


def test_the_data_model_page_lists_the_accepted_values():
    text = schema.data_model_markdown()
    assert "`lead`, `qualified`, `proposal`, `negotiation`, `won`, `lost`" in text
    assert "## Vocabularies" in text and "Open list of codes" in text


# ------------------------------------------------------------------------------ value maps


def test_value_maps_are_checked_when_the_dataset_is_loaded(home):
    file = write_dataset(home, "maps", {}, {"accounts": ACCOUNTS},
                         value_maps={"opportunity_stage_history": {"stage": {"Engaging": "qualifed"}}})
    with pytest.raises(datasets.DatasetError, match=r"maps\.yaml: value_maps\.opportunity_stage_history\.stage\.Engaging: 'qualifed' "
                                                     r"is not an accepted value \(did you mean 'qualified'\?\)"):
        datasets.load_dataset(file)
    for value_maps, expected in [
        ({"oportunities": {"status": {"Open": "open"}}}, r"unknown table 'oportunities' \(did you mean 'opportunities'\?\)"),
        ({"opportunities": {"event_name": {"Won": "won"}}}, r"'event_name' is not a categorical column of table 'opportunities'.*"
                                                            r"'event_name' is a column of \['web_events'\]"),
        ({"opportunity_stage_history": {"stage": {"Engaging": "TODO"}}}, r"Engaging: set the canonical value \(one of \['lead'"),
    ]:
        file.write_text(yaml.safe_dump(yaml.safe_load(file.read_text()) | {"value_maps": value_maps}), encoding="utf-8")
        with pytest.raises(datasets.DatasetError, match=r"maps\.yaml: value_maps.*" + expected):
            datasets.load_dataset(file)


def test_unknown_stages_fail_the_build_with_their_counts_and_the_line_to_add(home):
    stages = ["Prospecting"] * 5 + ["Engaging"] * 3 + ["Won"] * 2 + ["Lost"] * 2
    file = write_dataset(home, "crm", {"accounts.csv": accounts_csv(), "history.csv": history_csv(stages)},
                         {"accounts": ACCOUNTS, "history": HISTORY})
    output_dir = home / "run"
    with pytest.raises(UnknownValueError) as raised:
        build_clean_warehouse(dataset=file, as_of=AS_OF, output_dir=output_dir)
    message = str(raised.value)
    assert message.startswith(f"{file}: values neither accepted by their column nor mapped in `value_maps`")
    assert ("table 'opportunity_stage_history', column 'stage': 'Prospecting' (5 rows of source 'history'), "
            "'Engaging' (3 rows of source 'history'); accepted values: lead, qualified, proposal, negotiation, won, lost") in message
    assert "`value_maps: {opportunity_stage_history: {stage: {Prospecting: TODO, Engaging: TODO}}}`" in message
    assert "'Won'" not in message, "Won is our won, spelled in capitals"
    assert isinstance(raised.value, sources.SourceError) and not paths.warehouse_path("crm").exists()
    profile = pd.read_parquet(output_dir / "tables" / "quality_profile.parquet").set_index(["column_name", "stage"])
    assert profile.loc[("stage", "before"), "validity_pct"] == pytest.approx(4 / 12 * 100), "unknown values are never valid"


def test_the_line_of_the_error_once_filled_in_maps_the_values_and_the_report_counts_them(home):
    stages = ["Prospecting"] * 5 + [" engaging "] * 2 + ["Engaging"] + ["Won"] * 2 + ["Lost"] * 2
    file = write_dataset(home, "crm", {"accounts.csv": accounts_csv(), "history.csv": history_csv(stages)},
                         {"accounts": ACCOUNTS, "history": HISTORY},
                         value_maps={"opportunity_stage_history": {"stage": {"Prospecting": "lead", "Engaging": "qualified"}}})
    result = build_clean_warehouse(dataset=file, as_of=AS_OF)
    stored = read("crm", "SELECT stage, count(*) AS n FROM opportunity_stage_history GROUP BY stage").set_index("stage")["n"].to_dict()
    assert stored == {"lead": 5, "qualified": 3, "won": 2, "lost": 2}
    applied = result.value_maps[["source", "table_name", "column_name", "source_value", "canonical_value", "n_rows"]]
    assert applied.values.tolist() == [["history", "opportunity_stage_history", "stage", "Engaging", "qualified", 3],
                                       ["history", "opportunity_stage_history", "stage", "Prospecting", "lead", 5]]
    assert read("crm", "SELECT sum(n_rows) AS n FROM quality_value_maps")["n"].iloc[0] == 8
    profile = result.profile.set_index(["column_name", "stage"])
    assert profile.loc[("stage", "before"), "validity_pct"] == 100.0 and profile.loc[("stage", "after"), "validity_pct"] == 100.0


def test_a_few_stray_values_go_to_quarantine_as_unknown_value_never_silently(home):
    stages = ["lead"] * 398 + ["Lead (old)"] * 2  # 2 rows of 400: 0.5%, one distinct value
    genders = "id,created,gender\n" + "".join(f"A{i},2024-01-01 10:00:00,{'x' if i == 0 else 'F'}\n" for i in range(400))
    accounts = ACCOUNTS | {"columns": ACCOUNTS["columns"] | {"gender": "gender"}}
    file = write_dataset(home, "stray", {"accounts.csv": genders, "history.csv": history_csv(stages)},
                         {"accounts": accounts, "history": HISTORY})
    result = build_clean_warehouse(dataset=file, as_of=AS_OF)
    unknown = result.quarantine[result.quarantine["reason"] == vocabulary.UNKNOWN_VALUE]
    got = sorted(zip(unknown["source"], unknown["column_name"], unknown["raw_value"], unknown["action"]))
    assert got == [("accounts", "gender", "x", "value"), ("history", "stage", "Lead (old)", "row"), ("history", "stage", "Lead (old)", "row")]
    counts = result.row_counts.set_index("source")
    assert counts.loc["history", ["rows_in", "rows_clean", "rows_quarantined"]].tolist() == [400, 398, 2]
    assert counts.loc["accounts", "rows_clean"] == 400, "an unknown optional value is blanked, its row kept"
    assert read("stray", "SELECT count(*) AS n FROM customers WHERE gender IS NULL")["n"].iloc[0] == 1
    profile = result.profile.set_index(["source", "column_name", "stage"])
    assert profile.loc[("history", "stage", "before"), "validity_pct"] == pytest.approx(99.5)
    assert profile.loc[("accounts", "gender", "before"), "validity_pct"] == pytest.approx(399 / 400 * 100)


def test_one_more_row_or_value_beyond_the_stray_bounds_fails_the_build(home):
    stages = ["lead"] * 397 + ["Lead (old)"] * 3  # 3 rows of 400: 0.75%
    file = write_dataset(home, "many", {"accounts.csv": accounts_csv(), "history.csv": history_csv(stages)},
                         {"accounts": ACCOUNTS, "history": HISTORY})
    with pytest.raises(UnknownValueError, match=r"'Lead \(old\)' \(3 rows of source 'history'\)"):
        build_clean_warehouse(dataset=file, as_of=AS_OF)


def test_typed_parquet_sources_are_mapped_and_checked_inside_duckdb(home):
    events = pd.DataFrame({"event_id": [f"E{i}" for i in range(6)], "who": ["A0"] * 6, "session_id": ["s"] * 6,
                           "at": pd.to_datetime(["2024-03-01 10:00"] * 6).tz_localize("UTC"),
                           "what": ["Page View", "page view", "ATC", "purchase", "Visit", "Wishlist"], "platform": ["web"] * 6})
    spec = {"table": "web_events", "path": "events.parquet", "format": "parquet",
            "columns": {"event_id": "event_id", "customer_id": "who", "session_id": "session_id", "event_time": "at",
                        "event_name": "what", "platform": "platform"}}
    file = write_dataset(home, "clicks", {"accounts.csv": accounts_csv(1), "events.parquet": events}, {"accounts": ACCOUNTS, "events": spec},
                         value_maps={"web_events": {"event_name": {"ATC": "add_to_cart"}}})
    with pytest.raises(UnknownValueError, match=r"column 'event_name': 'Wishlist' \(1 rows of source 'events'\).*"
                                                r"`value_maps: \{web_events: \{event_name: \{Wishlist: TODO\}\}\}`"):
        build_clean_warehouse(dataset=file, as_of=AS_OF)
    document = yaml.safe_load(file.read_text())
    document["value_maps"]["web_events"]["event_name"]["wishlist"] = "other"
    file.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = build_clean_warehouse(dataset=file, as_of=AS_OF)
    stored = read("clicks", "SELECT event_id, event_name FROM web_events ORDER BY event_id")["event_name"].tolist()
    assert stored == ["page_view", "page_view", "add_to_cart", "purchase", "visit", "other"]
    assert sorted(zip(result.value_maps["source_value"], result.value_maps["n_rows"])) == [("ATC", 1), ("wishlist", 1)]


# ------------------------------------------------------------------------------ source shapes


def test_a_header_less_csv_is_read_with_the_declared_names(home):
    people = {"table": "customers", "path": "people.csv", "format": "csv", "header": False, "names": ["id", "created", "mail"],
              "date_formats": ["%Y-%m-%d"], "columns": {"customer_id": "id", "signup_time": "created", "email": "mail"},
              "constants": {"source": "crm"}}
    file = write_dataset(home, "bare", {"people.csv": "A1;2024-01-02;a@x.de\nA2;2024-01-03;b@x.de\n"}, {"people": people})
    source_map = sources.load_source_map(file)
    frame = sources.read_source("people", source_map["people"], home / "data" / "raw" / "bare")
    assert frame["customer_id"].tolist() == ["A1", "A2"] and frame["_source_row"].tolist() == [1, 2], "the first line is data"
    result = build_clean_warehouse(dataset=file, as_of=AS_OF)
    assert result.row_counts["rows_clean"].sum() == 2
    assert sorted(read("bare", "SELECT email FROM customers")["email"]) == ["a@x.de", "b@x.de"]
    short = source_map["people"] | {"names": ["id", "created"]}
    with pytest.raises(sources.SourceError, match=r"people\.csv: key `names` lists 2 columns \['id', 'created'\] but the first line has"):
        sources.read_source("people", short, home / "data" / "raw" / "bare")
    document = yaml.safe_load(file.read_text())
    document["sources"]["people"].pop("names")
    file.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(sources.SourceError, match=r"bare\.yaml: source 'people': `header: false` needs key `names`"):
        sources.load_source_map(file)


def test_unix_seconds_and_milliseconds_are_dates_in_the_business_zone(home):
    people = ACCOUNTS | {"path": "people.csv", "date_formats": ["unix_s"]}
    orders = {"table": "orders", "path": "orders.csv", "format": "csv", "date_formats": ["unix_ms"],
              "columns": {"order_id": "no", "customer_id": "id", "order_time": "at", "order_amount": "amount"},
              "constants": {"source": "crm", "channel": "web"}}
    events = pd.DataFrame({"event_id": ["E1"], "who": ["A1"], "session_id": ["s"], "at": [1_709_251_200], "what": ["visit"], "platform": ["web"]})
    spec = {"table": "web_events", "path": "events.parquet", "format": "parquet", "date_formats": ["unix_s"],
            "columns": {"event_id": "event_id", "customer_id": "who", "session_id": "session_id", "event_time": "at",
                        "event_name": "what", "platform": "platform"}}
    file = write_dataset(home, "epoch", {"people.csv": "id,created\nA1,1700000000\n",
                                         "orders.csv": "no,id,at,amount\nO1,A1,1709251200123,5\n", "events.parquet": events},
                         {"accounts": people, "orders": orders, "events": spec})
    build_clean_warehouse(dataset=file, as_of=AS_OF)
    # 1700000000 s is 2023-11-14 22:13:20 UTC, 23:13:20 in Berlin; 1709251200 s is 2024-03-01 00:00 UTC, 01:00 in Berlin
    assert read("epoch", "SELECT signup_time FROM customers")["signup_time"].iloc[0] == pd.Timestamp("2023-11-14 23:13:20")
    assert read("epoch", "SELECT order_time FROM orders")["order_time"].iloc[0] == pd.Timestamp("2024-03-01 01:00:00.123")
    assert read("epoch", "SELECT event_time FROM web_events")["event_time"].iloc[0] == pd.Timestamp("2024-03-01 01:00:00")


def test_a_bad_strftime_directive_is_a_clear_error_suggesting_unix_s(home):
    file = write_dataset(home, "bad", {}, {"accounts": ACCOUNTS | {"date_formats": ["%s"]}})
    with pytest.raises(sources.SourceError, match=r"bad\.yaml: source 'accounts': key `date_formats`: '%s' has the unknown code %s; "
                                                  r"for unix timestamps write unix_s"):
        sources.load_source_map(file)
    with pytest.raises(parsing.DateFormatError, match=r"date format '%s' is not a strftime pattern \('s' is a bad directive.*unix_s"):
        parsing.parse_datetimes(pd.Series(["1700000000"]), formats=["%s"], business_time_zone="UTC")


def test_generated_keys_are_stable_across_runs_and_readers(home):
    orders = {"table": "orders", "path": "orders.csv", "format": "csv", "date_formats": ["%Y-%m-%d %H:%M:%S"],
              "generate_key": ["customer_id", "order_time", "order_amount"],
              "columns": {"customer_id": "id", "order_time": "at", "order_amount": "amount"}, "constants": {"source": "crm", "channel": "web"}}
    text = "id,at,amount\nA1,2024-01-02 10:00:00,5\nA2,2024-01-03 10:00:00,7\nA1,2024-01-02 10:00:00,5\n"
    file = write_dataset(home, "nokey", {"accounts.csv": "id,created\nA1,2024-01-01 10:00:00\nA2,2024-01-01 10:00:00\n",
                                         "orders.csv": text}, {"accounts": ACCOUNTS, "orders": orders})
    first = build_clean_warehouse(dataset=file, as_of=AS_OF, quarantine_threshold=1.0)
    ids = read("nokey", "SELECT order_id FROM orders ORDER BY order_time")["order_id"].tolist()
    build_clean_warehouse(dataset=file, as_of=AS_OF, quarantine_threshold=1.0)
    assert read("nokey", "SELECT order_id FROM orders ORDER BY order_time")["order_id"].tolist() == ids
    expected = sources.generate_keys([pd.Series(["A1"]), pd.Series(["2024-01-02 10:00:00"]), pd.Series(["5"])]).iloc[0]
    assert ids[0] == expected and len(ids[0]) == 1 + sources.KEY_HEX_DIGITS
    assert first.quarantine[["source_row", "reason"]].values.tolist() == [[3, "duplicate_key"]], "an identical row is a duplicate"
    sql = sources.generated_key_sql(["'A1'", "'2024-01-02 10:00:00'", "'5'"])
    assert duckdb.sql(f"SELECT {sql}").fetchone()[0] == expected, "DuckDB (Parquet sources) gives the same id"
    with pytest.raises(sources.SourceError, match=r"key `generate_key` generates 'order_id', which the source also maps"):
        sources.check_spec("orders", orders | {"columns": orders["columns"] | {"order_id": "id"}})

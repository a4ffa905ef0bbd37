"""Reading each source format and encoding onto the contract, and the errors that name file and column."""

from pathlib import Path

import pandas as pd
import pytest

from crm_analytics import sources

STORE_HEADER = "会员号,姓名,手机号,邮箱,注册日期,省份,城市,性别,出生日期"
STORE_ROWS = ["S0000001,张伟,13800138000,zw@example.com,2024年3月4日,广东,深圳,男,1990-01-02", "S0000002,李娜,,ln@example.com,20240305,,,女,"]


@pytest.fixture()
def source_map():
    return sources.load_source_map()


def write(path: Path, text: str, encoding: str) -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("encoding, expected", [("utf-8", "utf-8-sig"), ("utf-8-sig", "utf-8-sig"), ("gb18030", "gb18030")])
def test_csv_encodings_are_detected_and_read_exactly(tmp_path, source_map, encoding, expected):
    write(tmp_path / "store_members.csv", "\n".join([STORE_HEADER, *STORE_ROWS]) + "\n", encoding)
    frame = sources.read_source("store_members", source_map["store_members"], tmp_path)
    assert frame.attrs["encoding"] == expected
    assert frame["customer_id"].tolist() == ["S0000001", "S0000002"]
    assert frame["full_name"].tolist() == ["张伟", "李娜"]
    assert frame.loc[0, "phone"] == "13800138000", "phones stay text"
    assert pd.isna(frame.loc[1, "phone"])
    assert frame["source"].eq("store").all(), "constants are filled in"
    assert frame["_source_row"].tolist() == [1, 2]
    assert frame["_source_file"].iloc[0].endswith("store_members.csv")


def test_bom_does_not_leak_into_the_first_header(tmp_path, source_map):
    write(tmp_path / "store_members.csv", "\n".join([STORE_HEADER, *STORE_ROWS]), "utf-8-sig")
    frame = sources.read_source("store_members", source_map["store_members"], tmp_path)
    assert frame["customer_id"].iloc[0] == "S0000001"


def test_undecodable_bytes_are_an_error_not_replacement_characters(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a,b\n\xff\xfe\xfa,1\n" + "中".encode("utf-16-le"))
    with pytest.raises(sources.SourceError, match="not decodable"):
        sources.detect_encoding(path, cascade=("utf-8-sig", "ascii"))


def test_semicolon_delimited_file_is_sniffed(tmp_path, source_map):
    write(tmp_path / "store_members.csv", "\n".join(line.replace(",", ";") for line in [STORE_HEADER, *STORE_ROWS]), "utf-8")
    frame = sources.read_source("store_members", source_map["store_members"], tmp_path)
    assert frame.attrs["delimiter"] == ";"
    assert frame["full_name"].tolist() == ["张伟", "李娜"]


def test_missing_required_column_names_file_and_column(tmp_path, source_map):
    write(tmp_path / "store_members.csv", "姓名,手机号\n张伟,13800138000\n", "utf-8")
    with pytest.raises(sources.SourceError) as error:
        sources.read_source("store_members", source_map["store_members"], tmp_path)
    message = str(error.value)
    assert "store_members.csv" in message and "会员号" in message and "customer_id" in message


def test_unknown_extra_columns_are_reported_not_fatal(tmp_path, source_map):
    header = STORE_HEADER + ",备注"
    write(tmp_path / "store_members.csv", "\n".join([header, STORE_ROWS[0] + ",VIP"]), "utf-8")
    frame = sources.read_source("store_members", source_map["store_members"], tmp_path)
    assert frame.attrs["unknown_columns"] == ["备注"]
    assert len(frame) == 1


def test_empty_file_and_header_only(tmp_path, source_map):
    (tmp_path / "store_members.csv").write_bytes(b"")
    with pytest.raises(sources.SourceError, match="empty input"):
        sources.read_source("store_members", source_map["store_members"], tmp_path)
    write(tmp_path / "store_members.csv", STORE_HEADER + "\n", "utf-8")
    assert len(sources.read_source("store_members", source_map["store_members"], tmp_path)) == 0


def test_missing_file_is_named(tmp_path, source_map):
    with pytest.raises(sources.SourceError, match="store_members.csv: file not found"):
        sources.read_source("store_members", source_map["store_members"], tmp_path)


def test_excel_numbers_and_dates_read_as_the_text_a_person_sees(tmp_path, source_map):
    frame = pd.DataFrame(
        {
            "contact_id": ["C0000001", "C0000002"],
            "customer_name": ["王芳", "Wang Fang"],
            "phone": [13800138000, "1.38001E+10"],
            "email": [None, "wf@example.com"],
            "created": [45123, pd.Timestamp("2024-03-04")],
            "region": ["广东省深圳市", "Shenzhen, Guangdong"],
        }
    )
    frame.to_excel(tmp_path / "call_centre_contacts.xlsx", sheet_name="contacts", index=False)
    read = sources.read_source("call_centre_contacts", source_map["call_centre_contacts"], tmp_path)
    assert read["phone"].tolist() == ["13800138000", "1.38001E+10"]
    assert read["signup_time"].tolist() == ["45123", "2024-03-04"]
    assert pd.isna(read.loc[0, "email"])


def test_parquet_keeps_types(tmp_path, source_map):
    events = pd.DataFrame(
        {
            "event_id": ["E1"], "account_id": ["W1"], "session_id": ["s1"],
            "event_time": pd.to_datetime(["2024-01-01 10:00"]), "event_name": ["visit"],
            "platform": ["app"], "traffic_source": ["direct"], "product_id": [None],
        }
    )
    events.to_parquet(tmp_path / "web_events.parquet")
    read = sources.read_source("web_events", source_map["web_events"], tmp_path)
    assert read["customer_id"].tolist() == ["W1"]
    assert pd.api.types.is_datetime64_any_dtype(read["event_time"])


def test_source_map_errors_name_source_and_field(tmp_path):
    bad = tmp_path / "sources.yaml"
    bad.write_text("sources:\n  x:\n    table: orders\n    format: csv\n    path: x.csv\n    columns: {order_id: id, amount: a}\n")
    with pytest.raises(sources.SourceError, match=r"source 'x'.*\['amount'\] are not columns of table 'orders'"):
        sources.load_source_map(bad)
    bad.write_text("sources:\n  x:\n    table: orders\n    format: csv\n    path: x.csv\n    columns: {order_id: id}\n")
    with pytest.raises(sources.SourceError, match="neither mapped nor constant"):
        sources.load_source_map(bad)
    bad.write_text("sources:\n  x:\n    table: orders\n    format: json\n    columns: {}\n")
    with pytest.raises(sources.SourceError, match="format must be one of"):
        sources.load_source_map(bad)


def test_project_source_map_is_valid():
    source_map = sources.load_source_map()
    assert {"customers", "orders", "web_events"} <= {spec["table"] for spec in source_map.values()}


def test_constant_offset_between_zones():
    import datetime as dt

    day = dt.datetime(2024, 1, 1)
    assert sources.constant_offset("UTC", "Asia/Shanghai", day, day + dt.timedelta(days=900)) == dt.timedelta(hours=8)
    assert sources.constant_offset("Europe/Berlin", "Asia/Shanghai", day, day + dt.timedelta(days=30)) == dt.timedelta(hours=7)
    assert sources.constant_offset("Europe/Berlin", "Asia/Shanghai", day, day + dt.timedelta(days=200)) is None, "Berlin switches to summer time"


@pytest.mark.parametrize("zone, expected", [("UTC", "2024-07-01 08:30"), ("Europe/Berlin", "2024-07-01 06:30"), ("Asia/Shanghai", "2024-07-01 00:30")])
def test_parquet_timestamps_move_into_the_business_zone(tmp_path, source_map, zone, expected):
    import duckdb

    events = pd.DataFrame(
        {
            "event_id": ["E1", "E2"], "account_id": ["W1", "W1"], "session_id": ["s1", "s1"],
            "event_time": pd.to_datetime(["2024-07-01 00:30", "2024-01-15 00:30"]), "event_name": ["visit", "visit"],
            "platform": ["app", "app"], "traffic_source": ["direct", "direct"], "product_id": [None, None],
        }
    )
    events.to_parquet(tmp_path / "web_events.parquet")
    spec = source_map["web_events"] | {"time_zone": zone}
    times = duckdb.sql(sources.parquet_select_sql("web_events", spec, tmp_path, business_time_zone="Asia/Shanghai")).df()["event_time"]
    assert times.iloc[0] == pd.Timestamp(expected)
    winter = {"UTC": "2024-01-15 08:30", "Europe/Berlin": "2024-01-15 07:30", "Asia/Shanghai": "2024-01-15 00:30"}[zone]
    assert times.iloc[1] == pd.Timestamp(winter)


@pytest.mark.parametrize(("zone", "local_times"), [
    ("Europe/London", ["2024-10-27 01:30:00", "2024-03-31 01:30:00", "2024-07-01 12:00:00", "2024-01-15 00:30:00"]),
    ("America/Sao_Paulo", ["2017-02-18 23:41:47", "2016-10-16 00:41:00", "2017-02-18 22:10:00", "2017-06-01 12:00:00"]),
])
def test_parquet_daylight_saving_times_follow_the_rule_of_the_pandas_reader(tmp_path, source_map, zone, local_times):
    """Repeated and skipped local times of a Parquet source get the same instant in DuckDB as in ``parsing.convert_zone``."""
    import duckdb

    from crm_analytics import parsing

    naive = pd.Series(pd.to_datetime(local_times)).astype("datetime64[us]")
    events = pd.DataFrame({"event_id": [f"E{i}" for i in range(4)], "account_id": "W1", "session_id": "s1", "event_time": naive,
                           "event_name": "visit", "platform": "app", "traffic_source": "direct", "product_id": None})
    events.to_parquet(tmp_path / "web_events.parquet")
    spec = source_map["web_events"] | {"time_zone": zone}
    in_utc = duckdb.sql(sources.parquet_select_sql("web_events", spec, tmp_path, business_time_zone="UTC")).df()["event_time"]
    expected = parsing.convert_zone(naive, zone, "UTC")
    assert in_utc.astype("datetime64[us]").tolist() == expected.tolist()
    assert in_utc.iloc[0] == parsing.localize(naive, zone).iloc[0].tz_localize(None), "the repeated hour's first occurrence"
    assert in_utc.notna().all(), "no local time is lost at a daylight-saving change"


# ----------------------------------------------------------------------------- columns never vanish


WEB_HEADER = "account_id,name,email,mobile,gender,birthday,province,city,utm_source,signup_time"
WEB_ROW = "W1,Li Na,ln@example.com,13800138000,F,1990-01-02,Guangdong,Shenzhen,baidu,2024-03-04T10:00:00Z"


def test_a_mistyped_optional_column_is_an_error_with_close_matches(tmp_path, source_map):
    write(tmp_path / "web_signups.csv", f"{WEB_HEADER}\n{WEB_ROW}\n", "utf-8")
    spec = source_map["web_signups"] | {"columns": source_map["web_signups"]["columns"] | {"email": "emial"}}
    with pytest.raises(sources.SourceError) as error:
        sources.read_source("web_signups", spec, tmp_path)
    message = str(error.value)
    assert "web_signups.csv: missing mapped column 'emial' (for 'email') (did you mean 'email'?) in source 'web_signups'" in message
    with pytest.raises(sources.SourceError, match="'emial'"):
        list(sources.read_source_chunks("web_signups", spec, tmp_path, chunk_rows=1))


def test_a_header_naming_a_mapped_column_twice_is_an_error(tmp_path, source_map):
    renamed = WEB_HEADER.replace("mobile", "email")  # the phone column renamed: two columns called email
    write(tmp_path / "web_signups.csv", f"{renamed}\n{WEB_ROW}\n", "utf-8")
    spec = source_map["web_signups"] | {"columns": {k: v for k, v in source_map["web_signups"]["columns"].items() if k != "phone"}}
    with pytest.raises(sources.SourceError, match=r"web_signups\.csv: source 'web_signups': the header names 'email' \(mapped to 'email'\) more than once"):
        sources.read_source("web_signups", spec, tmp_path)
    with pytest.raises(sources.SourceError, match="more than once"):
        list(sources.read_source_chunks("web_signups", spec, tmp_path))


def test_a_repeated_column_the_map_does_not_use_is_read(tmp_path, source_map):
    write(tmp_path / "web_signups.csv", f"{WEB_HEADER},note,note\n{WEB_ROW},a,b\n", "utf-8")
    frame = sources.read_source("web_signups", source_map["web_signups"], tmp_path)
    assert frame["email"].tolist() == ["ln@example.com"] and frame.attrs["missing_optional_columns"] == []


def test_a_repeated_mapped_column_in_a_workbook_is_an_error_but_a_column_called_like_a_renamed_one_is_not(tmp_path, source_map):
    rows = [["C1", "王芳", "13800138000", "a@example.com", "b@example.com", 45123, "深圳"]]
    header = ["contact_id", "customer_name", "phone", "email", "email", "created", "region"]
    pd.DataFrame(rows).to_excel(tmp_path / "call_centre_contacts.xlsx", sheet_name="contacts", index=False, header=header)
    with pytest.raises(sources.SourceError, match=r"call_centre_contacts\.xlsx#contacts: source 'call_centre_contacts': the header names 'email'"):
        sources.read_source("call_centre_contacts", source_map["call_centre_contacts"], tmp_path)
    header[4] = "email.1"  # a real column of that name
    pd.DataFrame(rows).to_excel(tmp_path / "call_centre_contacts.xlsx", sheet_name="contacts", index=False, header=header)
    assert sources.read_source("call_centre_contacts", source_map["call_centre_contacts"], tmp_path)["email"].tolist() == ["a@example.com"]


def test_a_parquet_source_missing_a_mapped_column_is_an_error_in_pandas_and_in_duckdb(tmp_path, source_map):
    pd.DataFrame({"event_id": ["E1"], "account_id": ["W1"], "session_id": ["s1"], "event_time": pd.to_datetime(["2024-01-01"]),
                  "event_name": ["visit"], "platform": ["app"], "traffic_sorce": ["direct"], "product_id": [None]}).to_parquet(
        tmp_path / "web_events.parquet")
    expected = r"missing mapped column 'traffic_source' \(for 'traffic_channel'\) \(did you mean 'traffic_sorce'\?\) in source 'web_events'"
    with pytest.raises(sources.SourceError, match=expected):
        sources.read_source("web_events", source_map["web_events"], tmp_path)
    with pytest.raises(sources.SourceError, match=expected):
        sources.parquet_select_sql("web_events", source_map["web_events"], tmp_path, business_time_zone="Asia/Shanghai")


def test_whitespace_separated_headers_are_read_as_written(tmp_path):
    (tmp_path / "log.txt").write_text(" customer_id  date  dollar_value\n 00001 19970101   11.77\n", encoding="utf-8")
    path, options = sources._csv_options({"path": "log.txt", "table": "orders", "delimiter": r"\s+"}, tmp_path)
    assert sources.csv_header(path, options) == ["customer_id", "date", "dollar_value"]


# ----------------------------------------------------------------------------- configuration mistakes


def _dataset_with_source(tmp_path, **changes) -> "Path":
    spec = {"table": "orders", "path": "orders.csv", "format": "csv", "date_formats": ["%Y-%m-%d"],
            "columns": {"order_id": "order_no", "order_time": "ordered_at", "order_amount": "amount"},
            "constants": {"channel": "web", "source": "web"}} | changes
    import yaml

    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump({"sources": {"web_orders": spec}}), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"time_zone": "Europe/Londn"}, r"source 'web_orders': time_zone 'Europe/Londn' is not an IANA time zone \(did you mean 'Europe/London'"),
        ({"date_formats": ["%Y-%m-%q"]}, r"source 'web_orders': key `date_formats`: '%Y-%m-%q' has the unknown code %q; strftime codes are %Y year"),
        ({"date_formats": ["YYYY-MM-DD"]}, r"key `date_formats`: 'YYYY-MM-DD' has no strftime code \(did you mean '%Y-%m-%d'\?\)"),
        ({"date_formats": ["ISO8601"]}, r"key `date_formats`: 'ISO8601' is not a format \(did you mean 'iso8601'\?\)"),
        ({"date_formats": "%Y-%m-%d"}, r"key `date_formats` must be a list of formats"),
    ],
)
def test_a_mistyped_time_zone_or_date_format_names_the_file_the_source_and_the_key(tmp_path, changes, expected):
    path = _dataset_with_source(tmp_path, **changes)
    with pytest.raises(sources.SourceError, match=expected) as error:
        sources.load_source_map(path)
    assert str(error.value).startswith(str(path))


def test_the_project_datasets_date_formats_are_all_readable():
    from crm_analytics import datasets

    for name in datasets.list_datasets():
        for spec in sources.load_source_map(datasets.dataset_file(name)).values():
            assert all(sources.date_format_problem(fmt) is None for fmt in spec.get("date_formats") or [])

"""The bad-input corpus (tests/data/bad_inputs/): every case parses or lands in quarantine with a reason.

Each case goes through the real reader (``crm_analytics.sources``) and the
cleansing validation. Whole-file problems raise ``SourceError`` naming the
file (and the column); row problems are quarantined; nothing disappears.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from crm_analytics import sources
from crm_analytics.cleansing import validate

CORPUS = Path(__file__).parent / "data" / "bad_inputs"
AS_OF = pd.Timestamp("2025-01-01")
SOURCE_MAP = sources.load_source_map()


def spec_for(source: str, path: str, **changes) -> dict:
    spec = copy.deepcopy(SOURCE_MAP[source])
    spec["path"] = path
    spec.update(changes)
    return spec


def run(source: str, path: str, **changes) -> tuple[pd.DataFrame, validate.ValidatedSource]:
    spec = spec_for(source, path, **changes)
    raw = sources.read_source(source, spec, CORPUS)
    result = validate.validate_source(source, raw, spec, as_of=AS_OF)
    assert result.n_rows_in == len(raw) == len(result.clean) + result.n_rows_quarantined  # nothing disappears
    return raw, result


def reasons(result: validate.ValidatedSource) -> dict[str, str]:
    return dict(zip(result.quarantine["source_row"].astype(str) + ":" + result.quarantine["column_name"], result.quarantine["reason"]))


def test_utf8_bom_first_header_is_read():
    raw, result = run("web_signups", "utf8_bom.csv")
    assert raw.attrs["encoding"] == "utf-8-sig"
    assert result.clean["customer_id"].tolist() == ["W001", "W002"]
    assert result.clean.loc[0, "province"] == "Guangdong" and result.clean.loc[0, "city"] == "Shenzhen"


def test_gb18030_chinese_headers_and_formats():
    raw, result = run("store_members", "gb18030.csv")
    assert raw.attrs["encoding"] == "gb18030"
    clean = result.clean.set_index("customer_id")
    assert clean.loc["S001", "signup_time"] == pd.Timestamp("2023-05-06")
    assert clean.loc["S001", "birth_date"] == pd.Timestamp("1990-01-02")
    assert clean.loc["S002", "full_name"] == "趙六" and clean.loc["S002", "province"] == "Zhejiang"
    assert result.quarantine.empty


def test_wrong_delimiter_is_sniffed():
    raw, result = run("web_signups", "semicolon.csv")
    assert raw.attrs["delimiter"] == ";" and len(result.clean) == 2


def test_empty_file_fails_naming_the_file():
    with pytest.raises(sources.SourceError, match=r"empty\.csv.*empty input"):
        sources.read_source("web_signups", spec_for("web_signups", "empty.csv"), CORPUS)


def test_header_only_gives_zero_rows_everywhere():
    raw, result = run("web_signups", "header_only.csv")
    assert len(raw) == 0 and result.clean.empty and result.quarantine.empty


def test_missing_required_column_names_file_and_column():
    with pytest.raises(sources.SourceError, match=r"missing_column\.csv.*signup_time"):
        sources.read_source("web_signups", spec_for("web_signups", "missing_column.csv"), CORPUS)


def test_unknown_extra_columns_are_ignored_and_reported():
    raw, result = run("web_signups", "extra_columns.csv")
    assert set(raw.attrs["unknown_columns"]) == {"loyalty_tier", "notes"} and len(result.clean) == 1


def test_excel_serial_dates_and_float_phones():
    _, result = run("call_centre_contacts", "excel_serial.xlsx")
    clean = result.clean.set_index("customer_id")
    assert clean.loc["C001", "signup_time"] == pd.Timestamp("2023-07-16")
    assert clean.loc["C002", "signup_time"] == pd.Timestamp("2023-08-01")
    assert clean.loc["C001", "city"] == "Shanghai"
    assert reasons(result) == {"3:signup_time": "unparsed_date"}  # C003: a date in no accepted format


def test_phones_mangled_by_excel_are_quarantined_values():
    _, result = run("web_signups", "mangled_phones.csv")
    assert reasons(result) == {"1:phone": "excel_mangled"}
    assert result.quarantine.loc[0, "raw_value"] == "1.38001E+10" and result.quarantine.loc[0, "action"] == "value"
    assert len(result.clean) == 2 and pd.isna(result.clean.loc[0, "phone"])


def test_amount_spellings_refunds_and_non_numeric():
    _, result = run("web_orders", "amounts.csv")
    clean = result.clean.set_index("order_id")
    assert clean["order_amount"].to_dict() == {"O1": 1234.5, "O2": -123.0, "O3": 123.5, "O4": -88.0, "O6": 1000.0}
    assert clean.loc["O1", "currency"] == "CNY" and clean.loc["O6", "currency"] == "CNY"
    assert bool(clean.loc["O4", "is_refund"]) and bool(clean.loc["O2", "is_refund"]) and not bool(clean.loc["O1", "is_refund"])
    assert reasons(result) == {"5:order_amount": "not_a_number"}


def test_mixed_time_zones_land_on_one_instant():
    _, result = run("web_orders", "mixed_time_zones.csv")
    assert result.clean["order_time"].nunique() == 1
    assert result.clean["order_time"].iloc[0] == pd.Timestamp("2024-03-01 08:00")


def test_future_dates_are_quarantined():
    _, result = run("web_orders", "future_dates.csv")
    assert result.clean["order_id"].tolist() == ["F1"] and reasons(result) == {"2:order_time": "future_date"}


def test_duplicate_ids_keep_the_first_and_quarantine_the_rest():
    _, result = run("web_orders", "duplicate_ids.csv")
    assert result.clean["order_id"].tolist() == ["D1", "D2"] and reasons(result) == {"2:order_id": "duplicate_key"}


def test_ten_thousand_character_strings():
    _, result = run("web_signups", "long_strings.csv")
    got = reasons(result)
    assert got == {"1:full_name": "too_long", "1:acquisition_channel": "too_long"}
    assert all("[10000 characters]" in v for v in result.quarantine["raw_value"])
    assert len(result.clean) == 1  # optional values: nulled, the row stays


BIG_FILE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    from crm_analytics import sources
    from crm_analytics.cleansing.stream import validate_csv_in_chunks
    spec = dict(sources.load_source_map()["web_orders"], path=sys.argv[2])
    n_in = n_clean = n_quarantined = 0
    for part in validate_csv_in_chunks("web_orders", spec, sys.argv[1], as_of=pd.Timestamp("2025-01-01"), chunk_rows=100_000):
        n_in += part.n_rows_in; n_clean += len(part.clean); n_quarantined += part.n_rows_quarantined
    # VmHWM is this program's own peak; ru_maxrss would also count the parent's pages at the fork
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"in": n_in, "clean": n_clean, "quarantined": n_quarantined, "peak_mb": peak_kb / 1024}))
    """
)


@pytest.mark.slow
def test_large_file_is_validated_in_bounded_memory(tmp_path):
    """A large CSV (256 MB; 2 GB with CRM_ANALYTICS_BIG_FILE_MB=2048) streams through in bounded memory."""
    import os

    target_mb = int(os.environ.get("CRM_ANALYTICS_BIG_FILE_MB", "256"))
    header = "order_no,account_id,order_time,amount,currency,discount,platform,is_refund\n"
    block = "".join(f"O{i:09d},W{i % 50000:07d},2024-03-01T10:00:00Z,\"¥1,234.50\",CNY,0,web,false\n" for i in range(100_000))
    block_bad = block.replace("¥1,234.50", "n/a amount", 10)
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(header)
        n_blocks = max(1, target_mb * 1024 * 1024 // len(block.encode()))
        for index in range(n_blocks):
            handle.write((block_bad if index == 0 else block).replace("O0", f"O{index:04d}", 100_000))
    rows = n_blocks * 100_000
    done = subprocess.run([sys.executable, "-c", BIG_FILE_SCRIPT, str(tmp_path), "big.csv"], capture_output=True, text=True, check=True)
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["in"] == rows == counts["clean"] + counts["quarantined"]
    assert counts["quarantined"] == 10
    assert counts["peak_mb"] < 900, counts  # a whole-file read of text columns needs several times the file size

"""Persisting result tables and figures into a run folder, and reading the latest back."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from crm_analytics import paths, results


def test_save_table_writes_parquet_and_csv(tmp_path):
    frame = pd.DataFrame({"segment": ["a", "b"], "n_customers": [3, 4]})
    saved = results.save_table(frame, "segment_sizes", output_dir=tmp_path)
    assert saved == tmp_path / "tables" / "segment_sizes.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(saved), frame)
    assert (tmp_path / "tables" / "segment_sizes.csv").read_text().splitlines()[0] == "segment,n_customers"


def test_named_index_is_kept_unnamed_index_is_not(tmp_path):
    frame = pd.DataFrame({"value": [1, 2]}, index=pd.Index(["x", "y"], name="key"))
    results.save_table(frame, "named", output_dir=tmp_path)
    assert list(pd.read_parquet(tmp_path / "tables" / "named.parquet").columns) == ["key", "value"]
    assert list(frame.columns) == ["value"], "the input is not mutated"


def test_nothing_is_written_without_an_output_dir(tmp_path):
    assert results.save_table(pd.DataFrame({"a": [1]}), "t", output_dir="") is None
    fig = plt.figure()
    assert results.save_figure(fig, "f", output_dir=None) is None
    plt.close(fig)


def test_saved_paths_display_nothing_in_a_notebook(tmp_path):
    saved = results.save_table(pd.DataFrame({"a": [1]}), "t", output_dir=tmp_path)
    assert saved._ipython_display_() is None
    assert saved.exists()


def test_figure_is_written_as_png(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    saved = results.save_figure(fig, "line", output_dir=tmp_path)
    plt.close(fig)
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shown_figure_is_the_written_png_at_the_inline_size_and_is_closed(tmp_path, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objects, **_: shown.extend(objects))
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.plot([1, 2, 3], [3, 1, 2])
    ax.set(xlabel="day", ylabel="orders (count)")
    path = results.show_figure(fig, "trend", output_dir=tmp_path, dpi=150)
    assert path == tmp_path / "figures" / "trend.png"
    (image,) = shown
    assert image.data == path.read_bytes()
    assert image.alt == "x axis: day; y axis: orders (count)"  # written from the figure's labels
    assert image._repr_png_()[1]["alt"] == image.alt  # kept in the output's metadata for the report
    assert image.width == round(int.from_bytes(image.data[16:20], "big") * 100 / 150)  # the PNG width, shown at 100 dpi
    assert fig.number not in plt.get_fignums()
    assert results.show_figure(fig, "trend", output_dir="") is None and len(shown) == 2
    results.show_figure(fig, "trend", output_dir="", alt="Orders per day, falling then rising")
    assert shown[-1].alt == "Orders per day, falling then rising"


def test_a_figure_redrawn_into_a_page_filter_output_is_a_binary_image_widget(tmp_path, monkeypatch):
    """Inside ``plots.figures_as_widgets()`` (a page's filter redraw) the PNG travels as an image widget, with its alt beside it."""
    import IPython.display
    import ipywidgets

    from crm_analytics import plots

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objects, **_: shown.extend(objects))
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.set(xlabel="day", ylabel="orders (count)")
    with plots.figures_as_widgets():
        path = results.show_figure(fig, "trend", output_dir=tmp_path, dpi=150)
    widget, alt = shown
    assert isinstance(widget, ipywidgets.Image) and widget.value == path.read_bytes() and widget.format == "png"
    assert "x axis: day; y axis: orders (count)" in alt.data
    assert not plots.showing_figures_as_widgets()
    results.show_figure(fig, "trend", output_dir="")
    assert isinstance(shown[-1], IPython.display.Image), "outside a redraw, a figure is an image output as before"


def test_result_names_become_safe_file_names(tmp_path):
    with pytest.raises(ValueError, match="file name"):
        results.save_table(pd.DataFrame({"a": [1]}), "../escape", output_dir=tmp_path)


def test_load_latest_table_reads_the_latest_run_and_explains_its_absence(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="crm-analytics run segmentation"):
        results.load_latest_table("segmentation", "segment_sizes")
    run = tmp_path / "outputs" / paths.default_dataset() / "segmentation" / "run1"
    results.save_table(pd.DataFrame({"a": [1]}), "segment_sizes", output_dir=run)
    (tmp_path / "outputs" / paths.default_dataset() / "segmentation" / "latest").symlink_to(run)
    assert results.load_latest_table("segmentation", "segment_sizes")["a"].tolist() == [1]


def test_latest_pointer_file_is_followed_like_a_symlink(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    run = tmp_path / "outputs" / paths.default_dataset() / "kpi" / "20260101T000000.000Z-abc123"
    results.save_table(pd.DataFrame({"a": [2]}), "kpi_values", output_dir=run)
    (tmp_path / "outputs" / paths.default_dataset() / "kpi" / "latest").write_text(run.name + "\n")
    assert paths.latest_run_dir("kpi") == run
    assert results.load_latest_table("kpi", "kpi_values")["a"].tolist() == [2]


def test_warnings_are_shown_and_recorded_for_the_run(tmp_path, capsys):
    results.warn("too little data (n = 3 repeat customers, needs 20)", output_dir=tmp_path, section="BG/NBD")
    results.warn("fit did not converge", output_dir=tmp_path, kind="not_converged")
    results.warn("nothing persisted", output_dir="")
    assert results.read_warnings(tmp_path) == [
        {"kind": "too_little_data", "section": "BG/NBD", "message": "too little data (n = 3 repeat customers, needs 20)"},
        {"kind": "not_converged", "section": "", "message": "fit did not converge"},
    ]
    assert "Warning (BG/NBD):" in capsys.readouterr().out
    with pytest.raises(ValueError, match="warning kind 'oops'"):
        results.warn("x", output_dir=tmp_path, kind="oops")


def test_a_run_without_warnings_has_none(tmp_path):
    assert results.read_warnings(tmp_path) == []


# ----------------------------------------------------------------------------- spreadsheet-safe CSV

FORMULA_PAYLOADS = ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", "\tleading tab", "\rleading return"]


def test_text_that_a_spreadsheet_would_run_is_quoted_in_csv_and_raw_in_parquet(tmp_path):
    frame = pd.DataFrame({"product_name": FORMULA_PAYLOADS, "change": [-5, -1, 0, 2, -3, -4], "lift": [-0.5, 1.5, 2.0, -2.0, 0.1, 0.2]})
    results.save_table(frame, "payloads", output_dir=tmp_path)
    csv = pd.read_csv(tmp_path / "tables" / "payloads.csv", keep_default_na=False)
    assert csv["product_name"].tolist() == ["'" + p for p in FORMULA_PAYLOADS]
    assert csv["change"].tolist() == [-5, -1, 0, 2, -3, -4], "a numeric column's negatives stay numbers"
    assert csv["lift"].tolist() == [-0.5, 1.5, 2.0, -2.0, 0.1, 0.2]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "tables" / "payloads.parquet"), frame)
    assert frame["product_name"].tolist() == FORMULA_PAYLOADS, "the input is not mutated"


def test_harmless_text_missing_values_and_plain_numbers_in_text_stay_as_they_are():
    frame = pd.DataFrame({
        "label": ["plain", "a=b", "-5", "+3.25", "-1e3", None, "'=already quoted"],
        "category": pd.Categorical(["x", "=1+1", "x", "y", "y", "x", "y"]),
        "text": pd.array(["@me", None, "ok", "-", "+", "=", "b"], dtype="string"),
    })
    safe = results.spreadsheet_safe(frame)
    assert safe["label"].tolist()[:5] == ["plain", "a=b", "-5", "+3.25", "-1e3"]
    assert safe["label"].isna().tolist() == [False] * 5 + [True, False]
    assert safe["label"].iloc[6] == "'=already quoted", "a leading quote is not a formula"
    assert safe["category"].tolist() == ["x", "'=1+1", "x", "y", "y", "x", "y"]
    assert safe["text"].tolist()[:1] == ["'@me"] and pd.isna(safe["text"].iloc[1])
    assert safe["text"].tolist()[3:6] == ["'-", "'+", "'="]


def test_long_text_columns_are_escaped_cell_by_cell_where_needed():
    plain = [f"cus_{i:06d}" for i in range(5_000)]
    risky = {17: "=HYPERLINK(1)", 4_000: "-x", 4_999: "@sum"}
    cells = [risky.get(i, value) for i, value in enumerate(plain)]
    cells[100] = None
    frame = pd.DataFrame({"key": pd.array(cells, dtype="string"), "note": pd.Series(cells, dtype="str")})
    safe = results.spreadsheet_safe(frame)
    expected = [None if value is None else results.spreadsheet_safe_text(value) for value in cells]
    for column in ("key", "note"):
        assert [None if pd.isna(v) else v for v in safe[column]] == expected
    assert safe.loc[17, "key"] == "'=HYPERLINK(1)" and safe.loc[18, "key"] == "cus_000018"


def test_column_names_from_data_are_quoted_too(tmp_path):
    pivot = pd.DataFrame({"=cmd()": [1], "web": [2]})
    results.save_table(pivot, "pivot", output_dir=tmp_path)
    assert (tmp_path / "tables" / "pivot.csv").read_text().splitlines()[0] == "'=cmd(),web"
    assert list(pd.read_parquet(tmp_path / "tables" / "pivot.parquet").columns) == ["=cmd()", "web"]


def test_a_product_named_as_a_formula_reaches_a_published_table_escaped(tmp_path):
    import duckdb

    from crm_analytics import behaviour, warehouse

    path = tmp_path / "tiny.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE products (product_id VARCHAR, product_name VARCHAR, category VARCHAR)")
        con.execute("INSERT INTO products VALUES ('p1', '=HYPERLINK(\"http://x\",\"y\")', '@SUM(1+1)'), ('p2', 'Mug', 'Kitchen')")
        con.execute("CREATE TABLE order_items (order_id VARCHAR, product_id VARCHAR, quantity INTEGER)")
        con.execute("INSERT INTO order_items VALUES ('o1', 'p1', 1), ('o1', 'p2', 1), ('o2', 'p1', 2), ('o2', 'p2', 1)")
    con = warehouse.connect(path)
    pairs = behaviour.basket_affinity(con.table("order_items"), products=con.table("products"), level="category", min_support=0.0)
    names = con.table("products").to_pandas().set_index("product_id")["product_name"]
    products = behaviour.basket_affinity(con.table("order_items"), level="product").assign(product_a=lambda t: t["item_a"].map(names))
    results.save_table(pairs, "category_pairs", output_dir=tmp_path)
    results.save_table(products, "product_pairs", output_dir=tmp_path)
    assert "'@SUM(1+1)" in pd.read_csv(tmp_path / "tables" / "category_pairs.csv")[["item_a", "item_b"]].to_numpy()
    assert pd.read_csv(tmp_path / "tables" / "product_pairs.csv")["product_a"].tolist() == ["'=HYPERLINK(\"http://x\",\"y\")"]
    assert pd.read_parquet(tmp_path / "tables" / "product_pairs.parquet")["product_a"].tolist() == ['=HYPERLINK("http://x","y")']


def test_every_csv_the_package_writes_goes_through_write_csv():
    import re
    from pathlib import Path

    package = Path(results.__file__).parent
    writers = {
        str(path.relative_to(package)): n
        for path in package.rglob("*.py")
        if path.parts[-2] != "demo"  # the demo generator writes raw exports, the input of a build
        and (n := len(re.findall(r"\.to_csv\(|csv\.writer\(|pa_csv\.write_csv\(", path.read_text(encoding="utf-8"))))
    }
    assert writers == {"results.py": 1}, "write published CSV files with results.write_csv"


def test_anonymous_orders_are_noted_with_their_share_and_nothing_when_there_are_none(tmp_path):
    orders = pd.DataFrame({"customer_id": pd.array(["a", None, "b", None], dtype="string"), "order_amount": [60.0, 30.0, 20.0, -10.0]})
    counts = results.note_anonymous_orders(orders, output_dir=tmp_path, left_out="the RFM scores", section="Load", currency="GBP", locale="en_GB")
    assert counts["n_anonymous_orders"].iloc[0] == 2
    assert results.read_warnings(tmp_path) == [{"kind": "data_note", "section": "Load", "message":
        "2 of 4 orders (50.0%) have no customer (£20.00, 20.0% of net revenue): they count in revenue and are left out of the RFM scores."}]
    results.note_anonymous_orders(orders.dropna(), output_dir=tmp_path / "none")
    assert results.read_warnings(tmp_path / "none") == []


def test_excluded_products_are_noted_with_lines_and_value(tmp_path):
    items = pd.DataFrame({"product_id": ["A", "POST", "B"], "quantity": [2, 1, 1], "unit_price_amount": [5.0, 10.0, 3.0]})
    results.note_excluded_products(items, exclude_products=["POST"], output_dir=tmp_path, left_out="the basket pairs", dataset="online_retail_ii")
    assert [w["message"] for w in results.read_warnings(tmp_path)] == [
        "1 of 3 order lines (33.3%; £10.00, 43.5% of the line value) carry 1 non-merchandise codes (postage, fees, adjustments) "
        "and are left out of the basket pairs; revenue keeps them."]


# --------------------------------------------------------------------------- the columnar CSV route

CSV_TEXTS = ["plain", "a,b", 'say "hi"', "line\nbreak", "cr\rx", "=1+1", "-5", "+3.5", "-1e3", "@x", "\tTab", "-5\n",
             '=a,"b"', "", " ", "ünï©ødé 中文", "'=q", "-", "=", None, "-٣"]


def _csv_bytes(frame: pd.DataFrame, *, block_rows: int = results.CSV_BLOCK_ROWS) -> bytes:
    blocks = results.columnar_csv_blocks(frame, block_rows=block_rows)
    assert blocks is not None, f"{frame.dtypes.to_dict()} should take the columnar route"
    return b"".join(bytes(block) for block in blocks)


def test_columnar_csv_is_byte_for_byte_the_pandas_text(tmp_path):
    import numpy as np

    rng = np.random.default_rng(3)
    n = 700
    magnitudes = 10.0 ** rng.integers(-22, 22, n)
    floats = np.where(rng.random(n) < 0.1, np.nan, rng.standard_normal(n) * magnitudes)
    floats[:9] = [np.inf, -np.inf, -0.0, 0.0, 1e16, 9999999999999998.0, 1e-4, 9.999e-5, 2.0]
    frame = pd.DataFrame({
        "text": pd.Series([CSV_TEXTS[i % len(CSV_TEXTS)] for i in range(n)], dtype=object),
        "str": pd.Series([CSV_TEXTS[i * 5 % len(CSV_TEXTS)] for i in range(n)], dtype="str"),
        "string": pd.array([CSV_TEXTS[i * 3 % len(CSV_TEXTS)] for i in range(n)], dtype="string"),
        "segment": pd.Categorical([CSV_TEXTS[i * 7 % len(CSV_TEXTS)] for i in range(n)]),
        "amount": floats,
        "money": np.round(rng.random(n) * 1e5, 2),
        "ratio": rng.random(n).astype(np.float32),
        "count": rng.integers(-10**12, 10**12, n),
        "score": rng.integers(1, 6, n).astype(np.int8),
        "flag": rng.random(n) < 0.5,
        "maybe_count": pd.array([None if i % 9 == 0 else i for i in range(n)], dtype="Int64"),
        "maybe_share": pd.array([None if i % 9 == 0 else i / 7 for i in range(n)], dtype="Float64"),
        "maybe_flag": pd.array([None if i % 9 == 0 else i % 2 == 0 for i in range(n)], dtype="boolean"),
        "=total, all": 1.5,
    })
    expected = results.pandas_csv_text(frame).encode("utf-8")
    assert _csv_bytes(frame, block_rows=64) == expected
    assert results.write_csv(frame, tmp_path / "t.csv").read_bytes() == expected
    assert results.csv_text(frame).encode("utf-8") == expected
    for column in frame.columns:  # one column: a row holding one empty cell is written as ""
        assert _csv_bytes(frame[[column]]) == results.pandas_csv_text(frame[[column]]).encode("utf-8"), column
    assert _csv_bytes(frame.iloc[:0]) == results.pandas_csv_text(frame.iloc[:0]).encode("utf-8")


def test_tables_the_columnar_route_does_not_cover_are_written_by_pandas(tmp_path):
    uncovered = {
        "dates": pd.DataFrame({"day": pd.to_datetime(["2024-01-01", None]), "n": [1, 2]}),
        "mixed objects": pd.DataFrame({"value": pd.Series([1, "=a", 2.5], dtype=object)}),
        "numeric categories": pd.DataFrame({"band": pd.Categorical([1, 2, None])}),
        "numbered columns": pd.DataFrame({0: ["=x"], 1: [2]}),
    }
    for name, frame in uncovered.items():
        assert results.columnar_csv_blocks(frame) is None, name
        assert results.write_csv(frame, tmp_path / "t.csv").read_bytes() == results.pandas_csv_text(frame).encode("utf-8"), name


def test_a_duckdb_result_is_written_as_pandas_writes_it(tmp_path):
    import duckdb

    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("""CREATE TABLE t AS SELECT 'cus_' || i AS customer_id, CASE WHEN i % 7 = 0 THEN '=cmd|x' WHEN i % 5 = 0 THEN NULL
                       ELSE 'segment, ' || (i % 3) END AS label, i * 1.1 AS amount, i % 4 = 0 AS flag, i AS n
                       FROM range(5000) r(i)""")
        frame = con.execute("SELECT * FROM t ORDER BY n").df()
    assert _csv_bytes(frame, block_rows=999) == results.pandas_csv_text(frame).encode("utf-8")
    assert pd.read_csv(results.write_csv(frame, tmp_path / "t.csv"), keep_default_na=False)["label"].iloc[7] == "'=cmd|x"

"""Persist a notebook's results into its run folder, and read the latest ones back.

A run folder (``outputs/<dataset>/<analysis>/<run-id>/``) holds ``tables/`` (Parquet and
CSV of every result table) and ``figures/`` (PNG). Notebooks call
``save_table`` and ``save_figure`` (or ``show_figure``) with the ``output_dir`` parameter the runner
injects; with an empty ``output_dir`` (an analyst iterating in JupyterLab)
nothing is written. Stakeholder pages read the last successful run's tables
with ``load_latest_table``.

CSV files are for spreadsheets: every CSV the project writes goes through ``write_csv``, which
puts a single quote in front of text a spreadsheet would run as a formula (``=``, ``+``, ``-``,
``@``, tab, carriage return; OWASP "CSV Injection"). The Parquet files keep the raw values.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from crm_analytics import paths

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
FIGURE_DPI = 110  # resolution of the PNG files (dots per inch)


class SavedPath(type(Path())):
    """The path of a persisted result. Shows nothing as a notebook cell's last value, so reports never print local folders."""

    def _ipython_display_(self) -> None:
        return None


def _checked_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"result name {name!r} must be lower-case letters, digits, '_' or '-' (it becomes a file name)")
    return name


def save_table(df: pd.DataFrame, name: str, *, output_dir: str | Path | None) -> Path | None:
    """Write ``df`` as ``tables/<name>.parquet`` and ``tables/<name>.csv`` under ``output_dir``.

    Returns the Parquet path, or ``None`` when ``output_dir`` is empty (nothing persisted).
    The index is written only when it is named (a meaningful key).
    """
    if not output_dir:
        return None
    folder = Path(output_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    frame = df.reset_index() if any(n is not None for n in df.index.names) else df.copy(deep=False)
    frame.columns = [str(c) for c in frame.columns]
    parquet_path = folder / f"{_checked_name(name)}.parquet"
    frame.to_parquet(parquet_path, index=False)
    write_csv(frame, folder / f"{name}.csv")
    return SavedPath(parquet_path)


# Leading characters that make Excel or LibreOffice read a cell as a formula (OWASP "CSV Injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Text that is only a decimal number (``-5``, ``+3.5``, ``-1e3``): a spreadsheet reads it as that number and runs nothing.
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def spreadsheet_safe_text(value):
    """Return ``value`` with a single quote in front when it is text a spreadsheet would run as a formula.

    Text starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is prefixed with ``'``
    (OWASP "CSV Injection"), unless it is only a decimal number such as ``-5``. Anything that is
    not a ``str`` (numbers, dates, missing values) is returned unchanged.
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


def spreadsheet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``df`` whose text cells and column names cannot run as spreadsheet formulas.

    Parameters
    ----------
    df : pandas.DataFrame
        Any table about to be written as CSV. It is not modified.

    Returns
    -------
    pandas.DataFrame
        The same rows and columns; every text cell (and column name) that ``spreadsheet_safe_text``
        escapes starts with ``'``. Numeric, boolean and date columns are returned as they are, so a
        numeric column's ``-5`` stays the number -5. Text columns come back as ``object`` dtype.
        Parquet files keep the raw values: only CSV, which spreadsheets open, is escaped.
    """
    out = df.copy()
    for position in range(out.shape[1]):
        column = out.iloc[:, position]
        if pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column) or isinstance(column.dtype, pd.CategoricalDtype):
            out.isetitem(position, _spreadsheet_safe_column(column))
    out.columns = [spreadsheet_safe_text(c) for c in out.columns]
    return out


def _spreadsheet_safe_column(column: pd.Series) -> pd.Series:
    """``column`` as ``object`` values passed through ``spreadsheet_safe_text``, calling Python only for cells that may need it.

    In a column holding only text (and missing values) one vectorised test finds the cells starting
    with a formula character; the others are kept as they are, so a million-row key column costs no
    Python call per cell. Any other column is mapped cell by cell.
    """
    values = column.astype(object)
    if pd.api.types.infer_dtype(values, skipna=True) != "string":
        return values.map(spreadsheet_safe_text)
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.array(values.to_numpy(), type=pa.string(), from_pandas=True)
    risky = np.zeros(len(values), dtype=bool)
    for prefix in FORMULA_PREFIXES:
        risky |= pc.starts_with(text, prefix).fill_null(False).to_numpy(zero_copy_only=False)
    cells = values.to_numpy(copy=True)
    cells[risky] = [spreadsheet_safe_text(value) for value in cells[risky]]
    return pd.Series(cells, index=values.index, name=values.name, dtype=object)


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` (without its index) as a CSV file a spreadsheet opens without running any cell.

    Every CSV the project publishes goes through here (``spreadsheet_safe``). Lines end in CRLF as
    RFC 4180 says, so a cell holding a carriage return is quoted rather than read as a line break.
    Returns ``path``.
    """
    with open(path, "wb") as handle:
        for block in _csv_blocks(df):
            handle.write(block)
    return Path(path)


def csv_text(df: pd.DataFrame) -> str:
    """``df`` as the text of the CSV ``write_csv`` writes (formula-safe cells, CRLF lines, no index): for a download."""
    return b"".join(bytes(block) for block in _csv_blocks(df)).decode("utf-8")


def pandas_csv_text(df: pd.DataFrame) -> str:
    """The reference CSV text: ``spreadsheet_safe(df)`` written by pandas (QUOTE_MINIMAL, CRLF lines, no index).

    ``write_csv`` writes these exact bytes; tables of plain columns take a columnar route to them
    (``columnar_csv_blocks``), any other table this one.
    """
    return spreadsheet_safe(df).to_csv(index=False, lineterminator="\r\n")


CSV_BLOCK_ROWS = 100_000  # rows formatted and written at a time by the columnar route


def _csv_blocks(df: pd.DataFrame) -> Iterator:
    """The bytes of ``df``'s CSV (``pandas_csv_text``), in blocks: columnar when every column allows it."""
    blocks = columnar_csv_blocks(df)
    if blocks is None:
        return iter([pandas_csv_text(df).encode("utf-8")])
    return blocks


def columnar_csv_blocks(df: pd.DataFrame, *, block_rows: int = CSV_BLOCK_ROWS) -> Iterator | None:
    """The bytes of ``pandas_csv_text(df)`` built column by column with Arrow, or ``None`` when ``df`` has a column it does not cover.

    Covered: text columns (strings and missing values, as ``object``, ``string`` or ``str`` dtype, or
    categorical over text), NumPy integer, unsigned, float and bool columns, and pandas' nullable
    ``Int``/``UInt``/``Float64``/``boolean`` columns, under text column names. Each cell is written as
    pandas writes it: floats in their shortest round-trip form (``0.1``, ``1e-05``, ``inf``), missing
    values as empty cells, text escaped by ``spreadsheet_safe_text`` and quoted (quotes doubled) when it
    holds a comma, a quote, a carriage return or a line feed; a row of one empty cell is ``""``.

    Returns
    -------
    iterator of bytes-like blocks (UTF-8, CRLF line ends) whose concatenation is the CSV, or ``None``.
    """
    names = list(df.columns)
    if not names or isinstance(df.columns, pd.MultiIndex) or not all(isinstance(name, str) for name in names):
        return None
    cells = [_csv_cells(df.iloc[:, position]) for position in range(df.shape[1])]
    if any(column is None for column in cells):
        return None
    header = _quoted_cells(_pa_text([spreadsheet_safe_text(name) for name in names]))
    return _joined_rows([header.slice(position, 1) for position in range(len(names))], cells, block_rows=block_rows)


def _joined_rows(header: list, cells: list, *, block_rows: int) -> Iterator:
    """Yield the header line, then the rows of ``cells`` (one Arrow text array per column) in blocks of ``block_rows``."""
    import pyarrow.compute as pc

    def lines(columns: list):
        row = pc.binary_join_element_wise(*columns, _text_scalar(",")) if len(columns) > 1 else columns[0]
        if len(columns) == 1:  # a record of one empty field is written as "" (Python's csv writer)
            row = pc.if_else(pc.equal(row, ""), _text_scalar('""'), row)
        terminated = pc.binary_join_element_wise(row, _text_scalar(""), _text_scalar("\r\n"))
        return _text_buffer(terminated)

    yield lines(header)
    for start in range(0, len(cells[0]), block_rows):
        yield lines([column.slice(start, block_rows) for column in cells])


def _text_buffer(text):
    """The concatenated values of an Arrow (large) text array without missing values, as one buffer (no copy)."""
    import numpy as np

    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + len(text) + 1]
    return text.buffers()[2][offsets[0] : offsets[-1]] if len(text) else b""


def _text_scalar(value: str):
    import pyarrow as pa

    return pa.scalar(value, type=pa.large_string())


def _pa_text(values):
    import pyarrow as pa

    return pa.array(values, type=pa.large_string(), from_pandas=True)


def _csv_cells(column: pd.Series):
    """The CSV cells of one column as an Arrow large-text array (quoted where needed), or ``None`` when not covered."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    dtype = column.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return pc.cast(pa.array(column.to_numpy()), pa.large_string())
    if isinstance(dtype, np.dtype) and dtype.kind == "b":
        return pc.if_else(pa.array(column.to_numpy()), "True", "False").cast(pa.large_string())
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return _float_cells(column.to_numpy())
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and str(dtype) == "boolean":
        values = pa.array(column.to_numpy(dtype=object, na_value=None), type=pa.bool_())
        return pc.if_else(values, "True", "False").cast(pa.large_string()).fill_null("")
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and getattr(dtype, "_is_numeric", False) and not isinstance(dtype, pd.CategoricalDtype):
        return _masked_number_cells(column)
    return _text_cells(column)


def _float_cells(values):
    """Floats as pandas writes them (NumPy's shortest round-trip form: ``0.1``, ``2.0``, ``1e-05``, ``inf``); NaN as an empty cell.

    Float64 cells are formatted by Arrow (the same shortest digits) with ``.0`` added to whole numbers;
    the few values Arrow writes in another form (exponents, below 1e-4, from 1e16, not finite) by Python.
    Other widths go through NumPy.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if values.dtype != np.float64:
        cells = values.astype(str)
        cells[np.isnan(values)] = ""
        return _pa_text(cells)
    text = pc.cast(pa.array(values), pa.large_string())
    magnitude = np.abs(values)
    with np.errstate(invalid="ignore"):
        own_form = ~np.isfinite(values) | ((values != 0) & ((magnitude < 1e-4) | (magnitude >= 1e16)))
    own_form |= pc.match_substring(text, "e").to_numpy(zero_copy_only=False)
    whole = (values == np.floor(values)) & ~own_form
    if whole.any():
        text = pc.if_else(pa.array(whole), pc.binary_join_element_wise(text, _text_scalar(".0"), _text_scalar("")), text)
    if own_form.any():
        formatted = ["" if np.isnan(value) else repr(value) for value in values[own_form].tolist()]
        text = pc.replace_with_mask(text, pa.array(own_form), _pa_text(formatted))
    return text


def _masked_number_cells(column: pd.Series):
    """Cells of a nullable ``Int``/``UInt``/``Float64`` column (``<NA>`` empty); ``None`` for other extension numbers."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.dtype.kind
    if kind in "iu" and str(column.dtype)[:1] in "IU":
        values = pa.array(column.to_numpy(dtype=object, na_value=None), type=pa.int64() if kind == "i" else pa.uint64())
        return pc.cast(values, pa.large_string()).fill_null("")
    if kind == "f" and str(column.dtype) == "Float64":
        return _float_cells(column.to_numpy(dtype=np.float64, na_value=np.nan))
    return None


def _text_values(column: pd.Series):
    """A text column (missing values as nulls) as an Arrow large-text array; ``None`` when the column is not only text."""
    import pyarrow as pa

    if isinstance(column.dtype, pd.StringDtype):
        if column.dtype.storage != "pyarrow":
            return _pa_text(column.to_numpy(dtype=object, na_value=None))
        arrow = pa.array(column.array)
        return (arrow.combine_chunks() if isinstance(arrow, pa.ChunkedArray) else arrow).cast(pa.large_string())
    if column.dtype == object and pd.api.types.infer_dtype(column, skipna=True) in ("string", "empty"):
        values = column.to_numpy(dtype=object, copy=True)
        values[pd.isna(values)] = None
        return _pa_text(values)
    return None


def _text_cells(column: pd.Series):
    """CSV cells of a text column (``_text_values``; a categorical one through its categories), or ``None``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column.dtype, pd.CategoricalDtype):
        categories = _text_values(pd.Series(column.cat.categories))
        if categories is None:
            return None
        codes = column.cat.codes.to_numpy()
        return pc.take(_quoted_cells(_escaped(categories)), pa.array(codes, mask=codes < 0)).fill_null("")
    text = _text_values(column)
    return None if text is None else _quoted_cells(_escaped(text))


def _escaped(text):
    """``spreadsheet_safe_text`` of every cell of an Arrow text array, calling Python only for cells starting with a formula character."""
    import numpy as np
    import pyarrow.compute as pc

    risky = np.zeros(len(text), dtype=bool)
    for prefix in FORMULA_PREFIXES:
        risky |= pc.starts_with(text, prefix).fill_null(False).to_numpy(zero_copy_only=False)
    if not risky.any():
        return text
    fixed = [spreadsheet_safe_text(value) for value in text.filter(risky).to_pylist()]
    return pc.replace_with_mask(text, risky, _pa_text(fixed))


def _quoted_cells(text):
    """Cells of an Arrow text array as Python's csv writer (QUOTE_MINIMAL) writes them; missing values empty."""
    import pyarrow.compute as pc

    text = text.fill_null("")
    needs_quotes = pc.match_substring_regex(text, '[,"\r\n]')
    if not pc.any(needs_quotes).as_py():
        return text
    quoted = pc.binary_join_element_wise(_text_scalar('"'), pc.replace_substring(text, '"', '""'), _text_scalar('"'), _text_scalar(""))
    return pc.if_else(needs_quotes, quoted, text)


def save_figure(fig, name: str, *, output_dir: str | Path | None, dpi: int = FIGURE_DPI) -> Path | None:
    """Write a matplotlib figure as ``figures/<name>.png`` under ``output_dir``; ``None`` when not persisting."""
    path = _figure_path(name, output_dir)
    if path is not None:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def show_figure(fig, name: str, *, output_dir: str | Path | None, dpi: int = FIGURE_DPI, alt: str | None = None) -> Path | None:
    """Show a matplotlib figure in the notebook and write the same image as ``figures/<name>.png`` under ``output_dir``.

    Replaces ``plt.show()`` followed by ``save_figure``: the figure is drawn once for both. It appears
    at the size ``plt.show()`` gives (``figure.dpi``) and is then closed, like ``plt.show()`` closes
    it (the object stays usable). Returns the file's path, or ``None`` when not persisting.

    The image carries alternative text for screen readers, ``alt`` or else one written from the figure's
    titles, axis labels and legends (``plots.describe_figure``); it is kept in the output's metadata
    (``image/png`` -> ``alt``) and the run's ``report.html`` writes it as the ``<img>``'s ``alt``.
    """
    import matplotlib.pyplot as plt

    from crm_analytics import plots

    path = _figure_path(name, output_dir)
    alt_text = alt if alt and alt.strip() else plots.describe_figure(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    png = buffer.getvalue()
    show_png(png, width=png_display_width(png, fig.dpi / dpi), alt=alt_text)
    plt.close(fig)
    if path is not None:
        path.write_bytes(png)
    return path


def png_display_width(png: bytes, scale: float = 1.0) -> int:
    """Width in pixels at which ``png`` is shown: its own width (the PNG header's) times ``scale``
    (the figure's screen dpi over the file's dpi)."""
    return round(struct.unpack(">I", png[16:20])[0] * scale)


def show_png(png: bytes, *, width: int, alt: str) -> None:
    """Show a PNG image ``width`` px wide with alternative text ``alt``, as ``show_figure`` shows a figure
    (an image widget on a page that shows figures as widgets, else an inline image)."""
    from IPython.display import Image, display

    from crm_analytics import plots

    if plots.showing_figures_as_widgets():
        _display_image_widget(png, width=width, alt=alt)
    else:
        display(Image(data=png, format="png", width=width, alt=alt))


def _display_image_widget(png: bytes, *, width: int, alt: str) -> None:
    """Show ``png`` as an ``ipywidgets.Image`` ``width`` px wide, its alternative text beside it for screen readers."""
    import html

    import ipywidgets
    from IPython.display import HTML, display

    display(ipywidgets.Image(value=png, format="png", layout=ipywidgets.Layout(width=f"{width}px", max_width="100%")))
    display(HTML(f'<span class="crm-figure-alt" style="position:absolute;left:-10000px">{html.escape(alt)}</span>'))


def _figure_path(name: str, output_dir: str | Path | None) -> SavedPath | None:
    """``<output_dir>/figures/<name>.png`` with its folder created; ``None`` when ``output_dir`` is empty."""
    if not output_dir:
        return None
    folder = Path(output_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    return SavedPath(folder / f"{_checked_name(name)}.png")


def load_latest_table(analysis: str, name: str) -> pd.DataFrame:
    """Return the table ``name`` from the last successful run of ``analysis``.

    Raises ``FileNotFoundError`` naming the analysis and table when no successful run has it.
    """
    path = paths.latest_run_dir(analysis) / "tables" / f"{_checked_name(name)}.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"no table {name!r} in the latest successful run of {analysis!r} ({path}); run `crm-analytics run {analysis}` first"
        )
    return pd.read_parquet(path)


WARNINGS_FILE = "warnings.jsonl"
WARNING_KINDS = ("too_little_data", "not_converged", "skipped", "data_note")


def warn(message: str, *, output_dir: str | Path | None, kind: str = "too_little_data", section: str = "") -> None:
    """Show a one-line warning in the report and record it for the run record, the index and the pages.

    ``kind`` is one of ``WARNING_KINDS``; ``section`` names the report section it concerns. The line is
    appended to ``<output_dir>/warnings.jsonl`` (nothing is written when ``output_dir`` is empty); the
    runner copies the lines into ``run.json`` as ``warnings``. A run with warnings still succeeds.
    """
    import json

    from IPython.display import display

    if kind not in WARNING_KINDS:
        raise ValueError(f"warning kind {kind!r} is not one of {WARNING_KINDS}")
    where = f" ({section})" if section else ""
    display({"text/markdown": f"**Warning{where}:** {message}", "text/plain": f"Warning{where}: {message}"}, raw=True)
    if output_dir:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / WARNINGS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"kind": kind, "section": section, "message": message}, ensure_ascii=False) + "\n")


def read_warnings(run_dir: str | Path) -> list[dict]:
    """Return the warnings a run recorded with ``warn`` (``kind``, ``section``, ``message``), oldest first."""
    import json

    path = Path(run_dir) / WARNINGS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def note_anonymous_orders(
    orders,
    *,
    output_dir: str | Path | None,
    left_out: str = "the customer-level figures",
    section: str = "",
    dataset: str | None = None,
    currency: str | None = None,
    locale: str | None = None,
    customer_col: str = "customer_id",
    amount_col: str = "order_amount",
) -> pd.DataFrame:
    """Say in the report how many orders have no customer and what share of revenue they hold (a ``data_note`` warning).

    Nothing is shown when every order has a customer. ``orders`` is a pandas DataFrame or Ibis table with
    ``customer_col`` and ``amount_col``; ``left_out`` names what the report leaves them out of. The amount is
    written in ``currency`` and ``locale``, by default those of ``dataset`` (a notebook's ``dataset``
    parameter; empty: the default dataset). Returns ``frames.anonymous_orders``.
    """
    from crm_analytics import frames, money

    counts = frames.anonymous_orders(orders, customer_col=customer_col, amount_col=amount_col)
    row = counts.iloc[0]
    if row["n_anonymous_orders"] > 0:
        currency, locale = money.currency_and_locale(currency, locale, dataset=dataset)
        share = "" if pd.isna(row["anonymous_revenue_pct"]) else f", {row['anonymous_revenue_pct']:.1f}% of net revenue"
        message = (f"{int(row['n_anonymous_orders']):,} of {int(row['n_orders']):,} orders ({row['anonymous_orders_pct']:.1f}%) have no customer "
                   f"({money.format_money(row['anonymous_revenue_amount'], currency, locale)}{share}): they count in revenue "
                   f"and are left out of {left_out}.")
        warn(message, output_dir=output_dir, kind="data_note", section=section)
    return counts


def note_excluded_products(
    order_items,
    *,
    exclude_products,
    output_dir: str | Path | None,
    left_out: str = "the product analyses",
    section: str = "",
    dataset: str | None = None,
    currency: str | None = None,
    locale: str | None = None,
    product_col: str = "product_id",
) -> pd.DataFrame:
    """Say in the report how many order lines (and what value) a product analysis leaves out as non-merchandise.

    ``exclude_products`` are the dataset's ``non_merchandise_codes``; nothing is shown when no line has one.
    Money is written as in ``note_anonymous_orders``. Returns ``frames.excluded_lines``.
    """
    from crm_analytics import frames, money

    counts = frames.excluded_lines(order_items, exclude_products=exclude_products, product_col=product_col)
    row = counts.iloc[0]
    if row["n_excluded_lines"] > 0:
        currency, locale = money.currency_and_locale(currency, locale, dataset=dataset)
        value = "" if pd.isna(row["excluded_line_amount"]) else (
            f"; {money.format_money(row['excluded_line_amount'], currency, locale)}"
            + ("" if pd.isna(row["excluded_amount_pct"]) else f", {row['excluded_amount_pct']:.1f}% of the line value"))
        message = (f"{int(row['n_excluded_lines']):,} of {int(row['n_lines']):,} order lines ({row['excluded_lines_pct']:.1f}%{value}) carry "
                   f"{int(row['n_excluded_products']):,} non-merchandise codes (postage, fees, adjustments) and are left out of {left_out}; "
                   f"revenue keeps them.")
        warn(message, output_dir=output_dir, kind="data_note", section=section)
    return counts

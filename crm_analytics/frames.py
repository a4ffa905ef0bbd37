"""Shared helpers for analysis inputs: column checks and table conversion.

Analysis functions accept either an Ibis table (from the warehouse) or a pandas
DataFrame, check the columns they need at the top, and return pandas.

Timestamps are naive local times in the dataset's business time zone. A DataFrame
handed to an analysis may hold time-zone-aware timestamps instead: ``as_ibis`` and
``to_pandas`` convert them to naive business-zone time (``business_time_zone``: the
zone set with ``use_time_zone``, which a notebook calls once from its dataset, else
the default dataset's), so that an order at 00:00+08:00 counts on the day it was in
the business's own calendar, not on its UTC day.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Union

import pandas as pd

if TYPE_CHECKING:  # annotations only
    import ibis
    import ibis.expr.types as ir

# Ibis loads on first use, not on import: stakeholder pages check columns of persisted tables only.
TableLike = Union[pd.DataFrame, "ibis.expr.types.Table"]

_time_zone: str | None = None  # set by use_time_zone; None: the default dataset's zone


def use_time_zone(zone: str | None) -> None:
    """Make ``zone`` (IANA, the dataset's business time zone) the zone aware input is converted to; ``None`` resets.

    A notebook calls it once, with ``datasets.load_dataset(dataset or None).time_zone``.
    """
    global _time_zone
    if zone:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(zone)  # an unknown zone fails here, not in the middle of an analysis
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}; use an IANA name such as Europe/London or America/Sao_Paulo") from None
    _time_zone = zone or None


def business_time_zone() -> str:
    """The business time zone: the one set with ``use_time_zone``, else the default dataset's."""
    if _time_zone:
        return _time_zone
    from crm_analytics import datasets

    return datasets.load_dataset(None).time_zone


def naive_business_times(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with its time-zone-aware timestamp columns as naive local times in ``business_time_zone()``.

    Columns of aware timestamps (any zone, or a mix of zones in an object column) are converted;
    naive timestamps are taken to be business-zone time already and left alone. The input is not
    mutated; it is returned as is when nothing is aware.

    Raises
    ------
    ValueError
        A column mixes aware and naive timestamps (naming it): its naive values cannot be placed in time.
    """
    converted: dict[str, pd.Series] = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            converted[name] = _to_business_zone(column)
        elif column.dtype == object and pd.api.types.infer_dtype(column, skipna=True).startswith("datetime"):
            is_aware = column.dropna().map(lambda value: getattr(value, "tzinfo", None) is not None)
            if is_aware.all():
                converted[name] = _to_business_zone(pd.to_datetime(column, utc=True))
            elif is_aware.any():
                raise ValueError(
                    f"column {name!r} mixes time-zone-aware and naive timestamps ({int(is_aware.sum())} aware, "
                    f"{int((~is_aware).sum())} naive); give them all an offset or none (naive means {business_time_zone()} time)"
                )
    if not converted:
        return frame
    return frame.assign(**converted)


def _to_business_zone(column: pd.Series) -> pd.Series:
    return column.dt.tz_convert(business_time_zone()).dt.tz_localize(None)


class MissingColumnError(KeyError):
    """A required input column is absent. The message names it and lists what is there."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def column_names(table: TableLike) -> list[str]:
    """Return the column names of a pandas DataFrame or an Ibis table."""
    return list(table.columns)


def require_columns(table: TableLike, columns: Iterable[str], *, context: str = "input") -> None:
    """Raise ``MissingColumnError`` unless every name in ``columns`` is a column of ``table``.

    ``context`` names the caller's input in the message, e.g. ``"rfm(orders)"``.
    """
    present = column_names(table)
    missing = [c for c in columns if c not in present]
    if missing:
        raise MissingColumnError(
            f"{context}: missing required column(s) {missing}; the columns present are {present}"
        )


def as_ibis(table: TableLike) -> ir.Table:
    """Return ``table`` as an Ibis table; a pandas DataFrame is wrapped, not copied into a database."""
    import ibis
    import ibis.expr.types as ir

    if isinstance(table, pd.DataFrame):
        return ibis.memtable(naive_business_times(table))
    if isinstance(table, ir.Table):
        return table
    raise TypeError(f"expected a pandas DataFrame or an Ibis table, got {type(table).__name__}")


def to_pandas(table: TableLike) -> pd.DataFrame:
    """Return ``table`` as a pandas DataFrame (an Ibis table is executed; a DataFrame is returned as is,
    its time-zone-aware timestamps as naive business-zone time, see ``naive_business_times``)."""
    import ibis.expr.types as ir

    if isinstance(table, pd.DataFrame):
        return naive_business_times(table)
    if isinstance(table, ir.Table):
        return _executed(table)
    raise TypeError(f"expected a pandas DataFrame or an Ibis table, got {type(table).__name__}")


def _executed(table: ir.Table) -> pd.DataFrame:
    """``table.to_pandas()``, with numeric columns that hold missing values converted by Arrow in compiled code.

    Ibis turns every column holding a missing value into a Python list first (an object per value: about a second
    per query on a million customers); for numbers Arrow gives the same float64 values with NaN, and Ibis's type
    mapping is then applied as ``to_pandas`` applies it. Other columns take Ibis's own path.
    """
    import pyarrow.types as pat
    from ibis.formats.pandas import PandasData

    def column(values):
        numeric = pat.is_floating(values.type) or pat.is_integer(values.type)
        if pat.is_nested(values.type) or pat.is_dictionary(values.type) or (values.null_count and not numeric):
            return values.to_pylist()
        return values.to_pandas()

    arrow = table.to_pyarrow()
    frame = pd.DataFrame({name: column(values) for name, values in zip(arrow.column_names, arrow.columns)})
    return PandasData.convert_table(frame, table.schema())


def as_timestamp(value: str | pd.Timestamp) -> pd.Timestamp:
    """Parse an ISO date or timestamp (as notebooks receive it from YAML) into a naive ``pd.Timestamp``.

    A naive value is business-zone time already; one with an offset (``2024-03-01T00:00+08:00``)
    is converted to naive local time in ``business_time_zone()``.
    """
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        return stamp.tz_convert(business_time_zone()).tz_localize(None)
    return stamp


EXACT_MONEY = "decimal(38, 6)"  # the type money is summed in: exact to a millionth of the unit, up to 10**32


def exact_sum(values, *, where=None):
    """Ibis expression: the sum of a money column (``where`` it holds), added up as exact decimals, as float64.

    A float sum in a parallel engine depends on the order its threads meet the rows, so the same data can give
    sums that differ in the last bit from run to run. Decimals (six places of the currency unit) add up to the
    same value on every run.
    """
    return values.cast(EXACT_MONEY).sum(where=where).cast("float64")


def anonymous_orders(orders: TableLike, *, customer_col: str = "customer_id", amount_col: str = "order_amount") -> pd.DataFrame:
    """How many orders have no customer (anonymous orders, see the dataset key ``anonymous_orders``), counted in the engine.

    Such orders count in revenue and are left out of every customer-level analysis; reports say
    how many there are with ``results.note_anonymous_orders``.

    Parameters
    ----------
    orders : pandas.DataFrame or Ibis table
        ``customer_col`` (missing for an anonymous order) and ``amount_col`` (money; refunds negative).

    Returns
    -------
    pandas.DataFrame
        One row: ``n_orders``, ``n_anonymous_orders``, ``anonymous_orders_pct`` (% of orders; NaN without
        orders), ``revenue_amount`` (net, all orders), ``anonymous_revenue_amount`` (net, anonymous orders),
        ``anonymous_revenue_pct`` (% of net revenue; NaN when that is not positive). Money in the dataset's currency.
    """
    require_columns(orders, [customer_col, amount_col], context="anonymous_orders(orders)")
    table = as_ibis(orders)
    is_anonymous = table[customer_col].isnull()
    counts = table.aggregate(
        n_orders=table.count(),
        n_anonymous_orders=is_anonymous.sum(),
        revenue_amount=exact_sum(table[amount_col]),
        anonymous_revenue_amount=exact_sum(table[amount_col], where=is_anonymous),
    ).to_pandas()
    row = counts.iloc[0]
    n_orders, n_anonymous = int(row["n_orders"]), int(row["n_anonymous_orders"] or 0)
    revenue = float(row["revenue_amount"]) if pd.notna(row["revenue_amount"]) else 0.0
    anonymous_revenue = float(row["anonymous_revenue_amount"]) if pd.notna(row["anonymous_revenue_amount"]) else 0.0
    return pd.DataFrame({
        "n_orders": [n_orders],
        "n_anonymous_orders": [n_anonymous],
        "anonymous_orders_pct": [100 * n_anonymous / n_orders if n_orders else float("nan")],
        "revenue_amount": [revenue],
        "anonymous_revenue_amount": [anonymous_revenue],
        "anonymous_revenue_pct": [100 * anonymous_revenue / revenue if revenue > 0 else float("nan")],
    })


def excluded_lines(
    order_items: TableLike,
    *,
    exclude_products,
    product_col: str = "product_id",
    quantity_col: str = "quantity",
    price_col: str = "unit_price_amount",
) -> pd.DataFrame:
    """How many order lines a product analysis leaves out because their product is in ``exclude_products``.

    Product analyses (baskets, category mix, recommendations) leave out what is not merchandise
    (postage, fees, adjustments: the dataset's ``non_merchandise_codes``); revenue keeps it.

    Parameters
    ----------
    order_items : pandas.DataFrame or Ibis table
        ``product_col`` and, when present, ``quantity_col`` and ``price_col`` (the line value is their product).
    exclude_products : iterable of str
        Product ids left out.

    Returns
    -------
    pandas.DataFrame
        One row: ``n_lines``, ``n_excluded_lines``, ``excluded_lines_pct`` (% of lines), ``n_excluded_products``
        (distinct excluded ids that occur), ``line_amount`` and ``excluded_line_amount`` (sum of quantity x unit
        price, dataset currency; NaN without those columns), ``excluded_amount_pct`` (% of the line amount).
    """
    require_columns(order_items, [product_col], context="excluded_lines(order_items)")
    table = as_ibis(order_items)
    codes = sorted({str(code) for code in exclude_products})
    is_excluded = table[product_col].cast("string").isin(codes) if codes else table[product_col].isnull() & False
    has_value = quantity_col in table.columns and price_col in table.columns
    value = (table[quantity_col] * table[price_col]) if has_value else None
    metrics = {"n_lines": table.count(), "n_excluded_lines": is_excluded.sum(),
               "n_excluded_products": table[product_col].nunique(where=is_excluded)}
    if has_value:
        metrics |= {"line_amount": value.sum(), "excluded_line_amount": value.sum(where=is_excluded)}
    row = table.aggregate(**metrics).to_pandas().iloc[0]
    n_lines, n_excluded = int(row["n_lines"]), int(row["n_excluded_lines"] or 0)
    amount = float(row["line_amount"]) if has_value and pd.notna(row["line_amount"]) else float("nan")
    excluded_amount = (float(row["excluded_line_amount"]) if pd.notna(row["excluded_line_amount"]) else 0.0) if has_value else float("nan")
    return pd.DataFrame({
        "n_lines": [n_lines],
        "n_excluded_lines": [n_excluded],
        "excluded_lines_pct": [100 * n_excluded / n_lines if n_lines else float("nan")],
        "n_excluded_products": [int(row["n_excluded_products"] or 0)],
        "line_amount": [amount],
        "excluded_line_amount": [excluded_amount],
        "excluded_amount_pct": [100 * excluded_amount / amount if amount > 0 else float("nan")],
    })

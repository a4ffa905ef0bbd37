"""Validation against the canonical contracts, and the quarantine.

``validate_source`` takes one source as read by ``crm_analytics.sources``
(canonical names, raw values, lineage columns), standardises every column
according to its contract type, checks the result with a pandera schema in
lazy mode, and splits it into clean rows and quarantine entries.

Two kinds of quarantine entry (column ``action``):

``row``
    the row cannot be trusted (a required value missing or unreadable, a
    duplicate key, a date after ``as_of``...): it leaves the clean table and
    its raw values stay in the quarantine.
``value``
    an optional value is unreadable (a phone mangled by Excel, a birth date in
    no accepted format): the value is set missing in the clean row, and the raw
    value is kept in the quarantine. The row stays clean.

So for every source: rows in = rows clean + rows quarantined (``action == "row"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from crm_analytics import money, schema
from crm_analytics.cleansing import standardise as st
from crm_analytics.cleansing import vocabulary
from crm_analytics.sources import RAGGED_ROW, RAW_LINE, ROW_FAULT, UNDECODABLE_BYTES, SourceError

LINEAGE = ["_source", "_source_file", "_source_row"]
QUARANTINE_COLUMNS = ["source", "source_file", "source_row", "table_name", "column_name", "raw_value", "reason", "action"]
RAW_VALUE_LENGTH = 200  # raw values longer than this are kept truncated, with their length

MISSING_REQUIRED = "missing_required"
DUPLICATE_KEY = "duplicate_key"
FUTURE_DATE = "future_date"
OUT_OF_RANGE = "out_of_range"
UNKNOWN_CUSTOMER = "unknown_customer"
UNKNOWN_ORDER = "unknown_order"  # an order line whose order no source of ``orders`` holds
UNKNOWN_CURRENCY = "unknown_currency"  # a currency text no ISO 4217 code or alias matches
NO_EXCHANGE_RATE = "no_exchange_rate"  # an amount in another currency with no rate on or before its day
# a CSV row that could not be read (``sources.csv_frames``): one entry on the pseudo-column ``_raw_line``, whose raw
# value is what went wrong and the line as written, e.g. ``(undecodable as utf-8) P3,C1,Caf\\xe9,30`` or
# ``(5 fields, expected 4) P3,C1,2024-01-02,30,x``
ROW_FAULTS = frozenset({UNDECODABLE_BYTES, RAGGED_ROW})
# reason codes reported in the quality tables (the "before" validity of their column) but never quarantined
WARNINGS = frozenset({st.UNKNOWN_REGION, st.CONTROL_CHARACTERS_REMOVED})

# Categorical code columns: lower case, words joined by "_" (``Paid Search`` -> ``paid_search``).
CODE_COLUMNS = frozenset({"acquisition_channel", "channel", "platform", "traffic_channel", "event_name", "lead_source",
                          "status", "stage", "category", "contact_channel", "variant", "gender"})
_EARLIEST = pd.Timestamp("1900-01-01")  # birth dates: the oldest living people were born after it
DEFAULT_EARLIEST_DATE = "1970-01-01"
AMOUNT_LIMIT = 1e9
# Extra range checks per column: (low, high), inclusive; a dataset's ``bounds`` override them (``plausibility_bounds``).
RANGES: dict[str, tuple[float, float]] = {
    "nps_score": (0, 10),
    "csat_score": (1, 5),
    "quantity": (1, 1_000_000),
    "n_contacts": (1, 10_000),
    "line_number": (1, 100_000),
    "list_price_amount": (0, 1e9),
    "unit_price_amount": (0, 1e9),
    "spend_amount": (0, 1e12),
    "discount_amount": (-1e9, 1e9),
}


@dataclass(frozen=True)
class Bounds:
    """Plausibility bounds of one build: ``ranges`` ``{column: (low, high)}`` (inclusive) and ``earliest``, the first
    accepted day of every date and time except ``birth_date`` (which starts at 1900-01-01).

    Defaults (``plausibility_bounds``), chosen so that no real record of a customer business falls outside while
    overflow, sentinel and unit mistakes do:

    * every ``*_amount`` without its own entry in ``RANGES``: absolute value at most ``AMOUNT_LIMIT`` (1e9) in the
      dataset's currency. A billion is beyond one order or line of any retail or B2B customer in the currencies that
      have minor units, while ``1e308``, ``9999999999999`` (a filler of nines) or an amount read in the wrong unit
      are far above it. A dataset in a currency of very small unit (IDR, VND) or with very large contracts raises it.
    * ``quantity`` 1 to 1e6 units per line; prices 0 to 1e9; scores within their scale (``RANGES``).
    * dates and times not before 1970-01-01 (``DEFAULT_EARLIEST_DATE``): CRM data is digital, and the usual
      placeholders (``1900-01-01``, Excel's serial 0, Unix time 0 in zones west of UTC) fall before it; a dataset with
      older records declares ``earliest_date``. Not after the build's ``as_of`` (checked separately, ``future_date``).

    A dataset overrides any of them with ``bounds: {order_amount: [min, max], quantity: [min, max],
    earliest_date: "YYYY-MM-DD"}`` (``datasets.check_bounds``).
    """

    ranges: dict[str, tuple[float, float]]
    earliest: pd.Timestamp

    def range_of(self, column: schema.Column) -> tuple[float, float] | None:
        """The inclusive range of a numeric column, or None when it has none."""
        if column.name in self.ranges:
            return self.ranges[column.name]
        if column.name.endswith("_amount") and column.dtype == "float64":
            return (-AMOUNT_LIMIT, AMOUNT_LIMIT)
        return None

    def earliest_of(self, column: schema.Column) -> pd.Timestamp:
        """The first accepted instant of a date or time column."""
        return _EARLIEST if column.name == "birth_date" else self.earliest


def plausibility_bounds(dataset: Any = None) -> Bounds:
    """The bounds of a build: the defaults (``Bounds``) with the ``dataset``'s ``bounds`` applied (None: defaults)."""
    declared = dict(getattr(dataset, "bounds", None) or {})
    earliest = pd.Timestamp(declared.pop("earliest_date", None) or DEFAULT_EARLIEST_DATE)
    ranges = RANGES | {column: (float(low), float(high)) for column, (low, high) in declared.items()}
    return Bounds(ranges=ranges, earliest=earliest)


@dataclass(frozen=True)
class ValidatedSource:
    """One source after standardisation and validation.

    ``clean`` holds the rows that passed, typed to the contract, with the lineage
    columns and any helper columns (``name_key``, ``phone_type``). ``quarantine``
    holds one entry per failed value (``QUARANTINE_COLUMNS``). ``n_rows_in`` counts
    the rows read.
    """

    name: str
    table: str
    clean: pd.DataFrame
    quarantine: pd.DataFrame
    n_rows_in: int
    reasons: pd.DataFrame = field(default_factory=pd.DataFrame)
    value_maps: pd.DataFrame = field(default_factory=vocabulary.empty_mapping_counts)  # vocabulary.VALUE_MAP_COLUMNS

    @property
    def n_rows_quarantined(self) -> int:
        """Rows that left the clean table."""
        return count_quarantined_rows(self.quarantine)


def count_quarantined_rows(quarantine: pd.DataFrame) -> int:
    """Distinct rows with a ``row`` entry, a row being its (``source_file``, ``source_row``): the rows of a source
    derived by a query come from several files or sheets, whose row numbers repeat."""
    rows = quarantine.loc[quarantine["action"] == "row", ["source_file", "source_row"]]
    return int(len(rows.drop_duplicates()))


def empty_quarantine() -> pd.DataFrame:
    """Return an empty quarantine frame with its column types."""
    frame = pd.DataFrame({c: pd.Series([], dtype="string") for c in QUARANTINE_COLUMNS})
    frame["source_row"] = frame["source_row"].astype("Int64")
    return frame


def raw_text(values: pd.Series) -> pd.Series:
    """Render raw values as text for the quarantine, long ones truncated with their length noted."""
    text = values.astype("string")
    long = text.str.len() > RAW_VALUE_LENGTH
    if long.any():
        text = text.mask(long, text.str.slice(0, RAW_VALUE_LENGTH) + "... [" + text.str.len().astype("string") + " characters]")
    return text


# ----------------------------------------------------------------- standardisation by contract type


def _standardise_column(
    column: schema.Column, values: pd.Series, spec: Mapping[str, Any], *, default_region: str | None, business_time_zone: str,
    value_maps: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Return ``(typed columns, reason)`` for one canonical column; the frame may add helper columns.

    ``value_maps``: the dataset's ``{column: {their_value: canonical_value}}`` of the table.
    """
    formats = spec.get("date_formats") or [st.ISO8601]
    zone = spec.get("time_zone") or business_time_zone
    name = column.name
    if vocabulary.is_checked(column, value_maps):
        result = vocabulary.settle_values(values, column, (value_maps or {}).get(name))
        return result[["value"]].rename(columns={"value": name}), result["reason"]
    if name == "phone":
        result = st.standardise_phone(values, default_region=default_region)
        return result[["phone", "phone_type"]], result["reason"]
    if name == "email":
        result = st.standardise_email(values)
        return result[["email"]], result["reason"]
    if name == "full_name":
        result = st.standardise_name(values)
        return result[["full_name", "name_key"]], result["reason"]
    if name == "gender":
        return st.standardise_gender(values).to_frame(name), pd.Series("", index=values.index, dtype="string")
    if name in ("province", "city"):
        result = st.standardise_region(values, level=name)
        # an unknown region is kept as written: reported in the quality tables, not quarantined (WARNINGS)
        return result[["value"]].rename(columns={"value": name}), result["reason"]
    if column.dtype in ("timestamp", "date"):
        result = st.parse_datetimes(
            values, formats=formats, time_zone=zone, business_time_zone=business_time_zone, date_only=column.dtype == "date"
        )
    elif column.dtype == "float64":
        result = st.parse_amounts(values)
    elif column.dtype == "int64":
        result = st.parse_integers(values)
    elif column.dtype == "bool":
        result = st.parse_flags(values)
    else:
        result = st.standardise_text(values)
        if name in CODE_COLUMNS:
            result["value"] = st.standardise_code(result["value"])
    return result[["value"]].rename(columns={"value": name}), result["reason"]


def standardise_frame(
    frame: pd.DataFrame,
    spec: Mapping[str, Any],
    *,
    default_region: str | None = None,
    currency: str | None = None,
    exchange_rates: pd.DataFrame | None = None,
    dataset_file: str = "the dataset file",
    business_time_zone: str | None = None,
    value_maps: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Standardise every canonical column of one source.

    Parameters
    ----------
    frame : DataFrame
        A source as read: canonical columns with raw values plus ``_source``,
        ``_source_file`` and ``_source_row``.
    spec : mapping
        The source's entry of the source map (``table``, ``date_formats``, ``time_zone``).
    default_region : str, optional
        ISO 3166 region of phone numbers without a country code (the dataset's country);
        ``None``: such numbers are invalid.
    currency : str, optional
        The dataset's ISO 4217 code; every amount ends in it (default: the default dataset's).
    exchange_rates : DataFrame, optional
        ``money.parse_exchange_rates`` table; without it an amount in another currency raises ``CurrencyError``.
    dataset_file : str
        Named in a ``CurrencyError``.
    business_time_zone : str, optional
        The dataset's business time zone, where timestamps are stored (default: the
        default dataset's); a source's own ``time_zone`` defaults to it.
    value_maps : mapping, optional
        The dataset's ``{column: {their_value: canonical_value}}`` of this table; categorical values
        neither mapped nor accepted get the reason ``unknown_value`` (``cleansing.vocabulary``).

    Returns
    -------
    (DataFrame, DataFrame)
        The typed frame (same index; contract columns, helper columns ``name_key``
        and ``phone_type`` for customers, the lineage columns) and a frame of
        reason codes with one column per canonical column (empty string = fine).
    """
    table = schema.get_table(spec["table"])
    business_time_zone = business_time_zone or st.default_business_time_zone()
    typed, reasons = [], {}
    for column in table.columns:
        if column.name not in frame.columns:
            continue
        values, reason = _standardise_column(
            column, frame[column.name], spec, default_region=default_region, business_time_zone=business_time_zone,
            value_maps=value_maps,
        )
        typed.append(values)
        reasons[column.name] = reason
    out = pd.concat(typed + [frame[[c for c in LINEAGE if c in frame.columns]]], axis=1)
    out, currency_reasons = settle_currency(out, frame, table, currency=currency or _default_currency(),
                                            exchange_rates=exchange_rates, dataset_file=dataset_file)
    for column, reason in currency_reasons.items():
        reasons[column] = reasons[column].where(reasons[column].fillna("") != "", reason) if column in reasons else reason
    if "is_refund" in table.column_names and "order_amount" in out.columns:
        out["is_refund"] = _refund_flag(out)
    return out, pd.DataFrame(reasons, index=frame.index)


class CurrencyError(SourceError):
    """A source holds amounts in a currency other than the dataset's, and the dataset declares no exchange rates."""


def _default_currency() -> str:
    from crm_analytics import datasets

    return datasets.load_dataset(None).currency


def _row_currency_text(out: pd.DataFrame, frame: pd.DataFrame, amount_columns: list[str]) -> pd.Series:
    """Each row's currency as written: the ``currency`` column, else the currency named in its first amount (``¥``, ``USD``)."""
    given = out["currency"].astype("string") if "currency" in out.columns else pd.Series(pd.NA, index=out.index, dtype="string")
    if amount_columns and amount_columns[0] in frame.columns:
        given = given.fillna(st.parse_amounts(frame[amount_columns[0]])["currency"])
    return given


def _normalised_codes(text: pd.Series) -> pd.Series:
    """``money.normalise_currency`` of each value (computed once per distinct spelling); missing where unknown or empty."""
    lookup = {value: money.normalise_currency(value) for value in text.dropna().unique()}
    return text.map(lookup, na_action="ignore").astype("string")


def _mixed_currency_message(source: str, codes: pd.Series, frame: pd.DataFrame, *, currency: str, dataset_file: str) -> str:
    counts = codes.value_counts()
    listed = ", ".join(f"{code} ({n:,} rows)" for code, n in counts.items())
    rows = ""
    if "_source_row" in frame.columns and len(frame):
        rows = f" (source rows {int(frame['_source_row'].min())}-{int(frame['_source_row'].max())})"
    return (f"source {source!r} holds amounts in {len(counts)} currencies{rows}: {listed}; the dataset currency is {currency}. "
            f"Declare `exchange_rates` in {dataset_file} to convert them (see crm_analytics.money), or correct the source.")


def settle_currency(
    out: pd.DataFrame, frame: pd.DataFrame, table: schema.Table, *, currency: str,
    exchange_rates: pd.DataFrame | None = None, dataset_file: str = "the dataset file",
) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """Put every amount of one source into the dataset ``currency``.

    A row's currency is its ``currency`` column, else the currency named in its first amount
    (``¥12``), else the dataset's; aliases become ISO codes (``RMB`` -> ``CNY``). A currency text
    no code matches is ``unknown_currency`` (the row goes to quarantine). Amounts in another
    currency raise ``CurrencyError`` (naming the currencies and their row counts) unless
    ``exchange_rates`` is given: they are then converted with the latest rate on or before the
    row's day (``money.convert_amounts``), and a row with no such rate is ``no_exchange_rate``.
    The ``currency`` column, when the table has one, ends as ``currency`` on every row.

    Returns the frame (amounts converted) and ``{column: reason codes}`` for the rows that failed.
    """
    amount_columns = [c.name for c in table.columns if c.name.endswith("_amount") and c.name in out.columns]
    if not amount_columns and "currency" not in table.column_names:
        return out, {}
    written = _row_currency_text(out, frame, amount_columns)
    codes = _normalised_codes(written)
    unknown = written.notna() & codes.isna()
    codes = codes.fillna(currency).mask(unknown)
    reason_column = "currency" if "currency" in out.columns else (amount_columns[0] if amount_columns else "currency")
    reasons = {reason_column: pd.Series(np.where(unknown, UNKNOWN_CURRENCY, ""), index=out.index, dtype="string")}
    foreign = (codes.notna() & (codes != currency)).fillna(False).astype(bool)
    if foreign.any() and amount_columns:
        if exchange_rates is None:
            source = str(frame["_source"].iloc[0]) if "_source" in frame.columns and len(frame) else table.name
            raise CurrencyError(_mixed_currency_message(source, codes.dropna(), frame, currency=currency, dataset_file=dataset_file))
        out = out.copy()
        day_column = next((c.name for c in table.columns if c.dtype in ("timestamp", "date") and c.name in out.columns), None)
        days = out[day_column] if day_column else pd.Series(pd.NaT, index=out.index, dtype="datetime64[us]")
        present = out[amount_columns[0]].notna()
        row_codes = codes.astype(object).where(codes.notna(), None)
        for column in amount_columns:
            out[column] = money.convert_amounts(out[column], row_codes, days, exchange_rates, currency).astype("Float64")
        # a row whose day is unreadable already fails on that day; without a day column no rate can apply
        dated = days.notna() if day_column else pd.Series(True, index=out.index)
        failed = foreign & present & out[amount_columns[0]].isna() & dated
        reasons[amount_columns[0]] = pd.Series(np.where(failed, NO_EXCHANGE_RATE, ""), index=out.index, dtype="string")
    if "currency" in table.column_names:
        out["currency"] = pd.Series(currency, index=out.index, dtype="string")
    return out, reasons


def _refund_flag(out: pd.DataFrame) -> pd.Series:
    """Refund flag: as given, else true exactly for negative amounts."""
    given = out["is_refund"] if "is_refund" in out.columns else pd.Series(pd.NA, index=out.index, dtype="boolean")
    return given.fillna(out["order_amount"] < 0).astype("boolean")


# ------------------------------------------------------------------------------ pandera contracts


def cutoff_of(as_of: pd.Timestamp) -> pd.Timestamp:
    """The first instant after ``as_of``: a bare date (midnight) includes its whole day."""
    as_of = pd.Timestamp(as_of)
    return as_of + pd.Timedelta(days=1) if as_of == as_of.normalize() else as_of + pd.Timedelta(microseconds=1)


def _not_after(as_of: pd.Timestamp):
    cutoff = cutoff_of(as_of)
    return pa.Check(lambda s: s.isna() | (s < cutoff), name=FUTURE_DATE)


def _not_before(earliest: pd.Timestamp):
    return pa.Check(lambda s: s.isna() | (s >= earliest), name=OUT_OF_RANGE)


def _in_range(low: float, high: float):
    return pa.Check(lambda s: s.isna() | ((s >= low) & (s <= high)), name=OUT_OF_RANGE)


def contract_schema(table: schema.Table, *, as_of: pd.Timestamp, columns: list[str] | None = None,
                    bounds: Bounds | None = None) -> pa.DataFrameSchema:
    """Return the pandera schema of a canonical table, checked after standardisation.

    Required and key columns must be present and non-null; keys are unique
    (every occurrence after the first fails); timestamps and dates lie between
    the bounds' earliest day and ``as_of``; amounts, scores, quantities and prices lie in
    their range (``bounds``, default ``plausibility_bounds()``).
    ``columns`` limits the schema to the columns a source provides.
    """
    bounds = bounds or plausibility_bounds()
    spec = {}
    for column in table.columns:
        if columns is not None and column.name not in columns:
            continue
        checks = []
        if column.dtype in ("timestamp", "date"):
            checks += [_not_after(as_of), _not_before(bounds.earliest_of(column))]
        if bounds.range_of(column) is not None:
            checks.append(_in_range(*bounds.range_of(column)))
        required = column.required or column.key
        spec[column.name] = pa.Column(
            nullable=not required,
            unique=column.key,
            report_duplicates="exclude_first",
            checks=checks,
            required=required,
            coerce=False,
        )
    return pa.DataFrameSchema(spec, name=table.name, strict=False)


def _reason_of(check: str) -> str:
    if check == "not_nullable":
        return MISSING_REQUIRED
    if check == "field_uniqueness":
        return DUPLICATE_KEY
    return check


def contract_failures(typed: pd.DataFrame, table: schema.Table, *, as_of: pd.Timestamp, bounds: Bounds | None = None) -> pd.DataFrame:
    """Run the contract in lazy mode; return ``(position, column_name, reason)`` for every failing value.

    ``position`` is the row's 0-based position in ``typed``; ``bounds``: see ``contract_schema``.
    """
    columns = [c for c in table.column_names if c in typed.columns]
    contract = contract_schema(table, as_of=as_of, columns=columns, bounds=bounds)
    frame = typed[columns].reset_index(drop=True)
    conditional = required_when_failures(frame, table)
    try:
        contract.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        cases = cases[cases["index"].notna()]
        found = pd.DataFrame(
            {
                "position": cases["index"].astype("int64").to_numpy(),
                "column_name": cases["column"].astype("string").to_numpy(),
                "reason": cases["check"].map(_reason_of).astype("string").to_numpy(),
            }
        )
        # by row, then in the table's column order (pandera's order of a row's columns is not fixed)
        rank = found["column_name"].map({name: i for i, name in enumerate(columns)})
        found = found.assign(_rank=rank).sort_values(["position", "_rank"], kind="stable").drop(columns="_rank")
        return pd.concat([found, conditional], ignore_index=True)
    return conditional


def required_when_failures(frame: pd.DataFrame, table: schema.Table) -> pd.DataFrame:
    """``(position, column_name, reason)`` of the values missing where a column's ``required_when`` asks for them.

    A column the source does not provide counts as missing on every row; a row whose condition column is
    missing or absent is not concerned (a missing ``status`` is a failure of its own).
    """
    parts = []
    for column in table.columns:
        if column.required_when is None or column.required_when[0] not in frame.columns:
            continue
        on, values = column.required_when
        concerned = frame[on].isin(list(values)).fillna(False).to_numpy(dtype=bool)
        missing = frame[column.name].isna().to_numpy(dtype=bool) if column.name in frame.columns else np.ones(len(frame), dtype=bool)
        positions = np.flatnonzero(concerned & missing).astype("int64")
        parts.append(pd.DataFrame({"position": positions, "column_name": column.name, "reason": MISSING_REQUIRED}))
    if not parts:
        return pd.DataFrame({"position": pd.Series([], dtype="int64"), "column_name": pd.Series([], dtype="string"), "reason": pd.Series([], dtype="string")})
    return pd.concat(parts, ignore_index=True).astype({"column_name": "string", "reason": "string"})


def table_contract(table_name: str, *, dataset: Any = None) -> schema.Table:
    """The contract a source of ``table_name`` is validated against.

    The canonical table, except for ``orders`` of a dataset declaring ``anonymous_orders: quarantine``:
    there ``customer_id`` is required, so an order without a customer is quarantined as
    ``missing_required``. By default (``keep``) such an order stays, its ``customer_id`` missing.
    """
    table = schema.get_table(table_name)
    if table.name != "orders" or getattr(dataset, "anonymous_orders", "keep") != "quarantine":
        return table
    columns = tuple(replace(c, required=True) if c.name == "customer_id" else c for c in table.columns)
    return replace(table, columns=columns)


# ------------------------------------------------------------------------------------ quarantine


def _parse_failures(reasons: pd.DataFrame) -> pd.DataFrame:
    """Long frame ``(position, column_name, reason)`` of the standardisers' reason codes (warnings left out)."""
    parts = []
    for column in reasons.columns:
        codes = reasons[column].fillna("")
        flagged = np.flatnonzero((codes.ne("") & ~codes.isin(list(WARNINGS))).to_numpy(dtype=bool))
        if len(flagged):
            parts.append(pd.DataFrame({"position": flagged.astype("int64"), "column_name": column, "reason": codes.to_numpy()[flagged]}))
    if not parts:
        return pd.DataFrame({"position": pd.Series([], dtype="int64"), "column_name": pd.Series([], dtype="string"), "reason": pd.Series([], dtype="string")})
    return pd.concat(parts, ignore_index=True).astype({"column_name": "string", "reason": "string"})


def _action(failures: pd.DataFrame, table: schema.Table) -> pd.Series:
    """``row`` when the failing column is required or a key, or the reason concerns the whole row; else ``value``."""
    required = set(table.required_columns)
    row_reasons = {DUPLICATE_KEY, MISSING_REQUIRED, UNKNOWN_CUSTOMER, UNKNOWN_ORDER, UNKNOWN_CURRENCY, NO_EXCHANGE_RATE,
                   *ROW_FAULTS}  # unknown_value: by column
    is_row = failures["column_name"].isin(required) | failures["reason"].isin(row_reasons)
    return pd.Series(np.where(is_row, "row", "value"), index=failures.index, dtype="string")


def quarantine_entries(raw: pd.DataFrame, failures: pd.DataFrame, table: schema.Table) -> pd.DataFrame:
    """Build quarantine entries for ``failures`` (``position``, ``column_name``, ``reason``) of source frame ``raw``.

    Returns
    -------
    DataFrame
        ``QUARANTINE_COLUMNS``: the source and file, the 1-based ``source_row``, the
        table, the column, the raw value as text (long ones truncated), the reason
        code and the ``action`` (``row`` or ``value``).
    """
    if failures.empty:
        return empty_quarantine()
    failures = failures.drop_duplicates(["position", "column_name"]).reset_index(drop=True)
    pos = failures["position"].to_numpy()
    raw_values = pd.Series(pd.NA, index=failures.index, dtype="string")
    for column, group in failures.groupby("column_name", sort=False).groups.items():
        if column in raw.columns:
            values = raw[column].iloc[pos[group]].to_numpy()
            raw_values.loc[group] = raw_text(pd.Series(values, dtype="object").astype("string")).to_numpy()
    out = pd.DataFrame(
        {
            "source": raw["_source"].iloc[pos].astype("string").to_numpy(),
            "source_file": raw["_source_file"].iloc[pos].astype("string").to_numpy(),
            "source_row": pd.array(raw["_source_row"].iloc[pos].to_numpy(), dtype="Int64"),
            "table_name": table.name,
            "column_name": failures["column_name"].to_numpy(),
            "raw_value": raw_values.to_numpy(),
            "reason": failures["reason"].to_numpy(),
            "action": _action(failures, table).to_numpy(),
        }
    )
    return out.astype({c: "string" for c in QUARANTINE_COLUMNS if c != "source_row"})


def split_clean(
    name: str, raw: pd.DataFrame, typed: pd.DataFrame, failures: pd.DataFrame, table: schema.Table
) -> ValidatedSource:
    """Apply ``failures`` to ``typed``: quarantined rows leave, quarantined optional values become missing."""
    entries = quarantine_entries(raw, failures, table)
    clean = typed.reset_index(drop=True).copy()
    if not entries.empty:
        failures = failures.drop_duplicates(["position", "column_name"]).reset_index(drop=True)
        actions = _action(failures, table)
        for column, group in failures[actions == "value"].groupby("column_name").groups.items():
            if column in clean.columns:
                clean.loc[failures.loc[group, "position"].to_numpy(), column] = pd.NA
        bad_rows = np.unique(failures.loc[actions == "row", "position"].to_numpy())
        clean = clean.drop(index=bad_rows)
    return ValidatedSource(name, table.name, clean.reset_index(drop=True), entries, len(raw))


def validate_source(
    name: str,
    raw: pd.DataFrame,
    spec: Mapping[str, Any],
    *,
    as_of: pd.Timestamp,
    default_region: str | None = None,
    **options: Any,
) -> ValidatedSource:
    """Standardise and validate one source; split it into clean rows and quarantine entries.

    Parameters
    ----------
    name : str
        The source's name in the map.
    raw : DataFrame
        The source as returned by ``crm_analytics.sources.read_source``: canonical
        columns with raw values, ``_source``, ``_source_file``, ``_source_row``.
    spec : mapping
        Its entry of the source map.
    as_of : Timestamp
        Dates after it are quarantined as ``future_date``.
    default_region : str, optional
        ISO 3166 region of phone numbers without a country code (``Dataset.country``); ``None``:
        the ``dataset`` option's country, else the default dataset's.
    **options
        ``currency`` (the dataset's ISO 4217 code) and ``dataset`` (the ``datasets.Dataset``, whose
        ``exchange_rates`` convert amounts in other currencies); by default the default dataset's.
        ``business_time_zone``: the zone timestamps are stored in (default: the dataset's).

    Returns
    -------
    ValidatedSource
        ``clean`` (typed contract columns + helper and lineage columns),
        ``quarantine`` (``QUARANTINE_COLUMNS``) and ``n_rows_in``.

    Raises ``CurrencyError`` when the source holds amounts in another currency than the dataset's
    and the dataset declares no exchange rates.
    """
    return validate_source_typed(name, raw, spec, as_of=as_of, default_region=default_region, **options)[0]


def validate_source_typed(name: str, raw: pd.DataFrame, spec: Mapping[str, Any], **options: Any) -> tuple[ValidatedSource, pd.DataFrame]:
    """``validate_source`` (same parameters), plus the standardised frame of every row before the split (``raw``'s order).

    The standardised key values of quarantined rows matter when a source is
    validated in chunks: a key's first occurrence may be a quarantined row.
    """
    from crm_analytics.frames import require_columns

    unknown = set(options) - {"as_of", "default_region", "currency", "dataset", "business_time_zone"}
    if unknown:
        raise TypeError(f"validate_source_typed() got unexpected keyword arguments {sorted(unknown)}")
    as_of, default_region = options["as_of"], _default_region(options)

    require_columns(raw, LINEAGE, context=f"validate_source({name})")
    table = table_contract(spec["table"], dataset=options.get("dataset"))
    raw = raw.reset_index(drop=True)
    value_maps = vocabulary.table_value_maps(options.get("dataset"), table.name)
    typed, reasons = standardise_frame(raw, spec, default_region=default_region, business_time_zone=_business_time_zone(options),
                                       value_maps=value_maps, **_money_options(options))
    failures = pd.concat([_parse_failures(reasons), contract_failures(typed, table, as_of=as_of, bounds=plausibility_bounds(options.get("dataset")))],
                         ignore_index=True)
    failures = with_row_faults(failures, raw)
    applied = vocabulary.label_mapping_counts(vocabulary.mapping_counts(raw, table.name, value_maps), source=name, table_name=table.name)
    return replace(split_clean(name, raw, typed, failures, table), reasons=reasons.reset_index(drop=True), value_maps=applied), typed


def redacted_raw_lines(values: pd.Series) -> pd.Series:
    """Raw values of ``_raw_line`` entries for a report: what went wrong (the leading ``(...)``) kept, the line itself,
    which may hold personal data, replaced by ``[redacted]``; missing values stay missing."""
    text = values.astype("string")
    return (text.str.extract(r"^(\([^)]*\) )", expand=False).fillna("") + "[redacted]").where(text.notna())


def with_row_faults(failures: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
    """``failures`` (``position``, ``column_name``, ``reason``) with each unreadable row's entries replaced by one:
    its ``ROW_FAULT`` reason on the pseudo-column ``_raw_line`` (its values are missing, so other checks say nothing)."""
    if ROW_FAULT not in raw.columns:
        return failures
    faulty = np.flatnonzero(raw[ROW_FAULT].notna().to_numpy(dtype=bool)).astype("int64")
    if not len(faulty):
        return failures
    own = pd.DataFrame({"position": faulty, "column_name": RAW_LINE, "reason": raw[ROW_FAULT].to_numpy()[faulty]})
    kept = failures[~failures["position"].isin(faulty)]
    return pd.concat([kept, own.astype({"column_name": "string", "reason": "string"})], ignore_index=True)


def _default_region(options: Mapping[str, Any]) -> str:
    """The region of phone numbers without a country code: option ``default_region``, else the ``dataset`` option's
    country, else the default dataset's."""
    if options.get("default_region"):
        return options["default_region"]
    dataset = options.get("dataset")
    if dataset is None:
        from crm_analytics import datasets

        dataset = datasets.load_dataset(None)
    return dataset.country


def _business_time_zone(options: Mapping[str, Any]) -> str | None:
    """The zone timestamps are stored in: option ``business_time_zone``, else the ``dataset`` option's (None: the default dataset's)."""
    dataset = options.get("dataset")
    return options.get("business_time_zone") or (dataset.time_zone if dataset is not None else None)


def _money_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``currency``, ``exchange_rates`` and ``dataset_file`` for ``standardise_frame`` from the validation options."""
    dataset = options.get("dataset")
    if dataset is None and not options.get("currency"):
        from crm_analytics import datasets

        dataset = datasets.load_dataset(None)
    if dataset is None:
        return {"currency": options["currency"]}
    currency = options.get("currency") or dataset.currency
    try:
        rates = money.read_exchange_rates(dataset.exchange_rates, base_dir=dataset.data_dir, to_currency=currency, where=dataset.file)
    except money.ExchangeRateError as error:
        from crm_analytics import datasets

        raise datasets.DatasetError(str(error)) from None
    return {"currency": currency, "exchange_rates": rates, "dataset_file": str(dataset.file)}


def quarantine_clean_rows(
    validated: ValidatedSource, mask: pd.Series | np.ndarray, *, column: str, reason: str
) -> ValidatedSource:
    """Move clean rows selected by ``mask`` into the quarantine (action ``row``) with ``reason`` on ``column``.

    Used for checks that need other tables, such as an order whose customer is unknown.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return validated
    moved = validated.clean[mask]
    entries = pd.DataFrame(
        {
            "source": moved["_source"].astype("string").to_numpy(),
            "source_file": moved["_source_file"].astype("string").to_numpy(),
            "source_row": pd.array(moved["_source_row"].to_numpy(), dtype="Int64"),
            "table_name": validated.table,
            "column_name": column,
            "raw_value": raw_text(moved[column].astype("string")).to_numpy(),
            "reason": reason,
            "action": "row",
        }
    ).astype({c: "string" for c in QUARANTINE_COLUMNS if c != "source_row"})
    return replace(
        validated,
        clean=validated.clean[~mask].reset_index(drop=True),
        quarantine=pd.concat([validated.quarantine, entries], ignore_index=True),
    )

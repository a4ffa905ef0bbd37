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

from crm_analytics import schema
from crm_analytics.cleansing import standardise as st

LINEAGE = ["_source", "_source_file", "_source_row"]
QUARANTINE_COLUMNS = ["source", "source_file", "source_row", "table_name", "column_name", "raw_value", "reason", "action"]
RAW_VALUE_LENGTH = 200  # raw values longer than this are kept truncated, with their length

MISSING_REQUIRED = "missing_required"
DUPLICATE_KEY = "duplicate_key"
FUTURE_DATE = "future_date"
OUT_OF_RANGE = "out_of_range"
UNKNOWN_CUSTOMER = "unknown_customer"
WARNINGS = frozenset({st.UNKNOWN_REGION})  # reason codes reported in the quality tables but never quarantined

# Categorical code columns: lower case, words joined by "_" (``Paid Search`` -> ``paid_search``).
CODE_COLUMNS = frozenset({"acquisition_channel", "channel", "platform", "traffic_channel", "event_name", "lead_source",
                          "status", "stage", "category", "contact_channel", "variant", "gender"})
_EARLIEST = pd.Timestamp("1900-01-01")
# Extra range checks per column: (low, high), inclusive.
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

    @property
    def n_rows_quarantined(self) -> int:
        """Rows that left the clean table."""
        rows = self.quarantine.loc[self.quarantine["action"] == "row", "source_row"]
        return int(rows.nunique())


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
    column: schema.Column, values: pd.Series, spec: Mapping[str, Any], *, default_region: str
) -> tuple[pd.DataFrame, pd.Series]:
    """Return ``(typed columns, reason)`` for one canonical column; the frame may add helper columns."""
    formats = spec.get("date_formats") or [st.ISO8601]
    zone = spec.get("time_zone", schema.BUSINESS_TIME_ZONE)
    name = column.name
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
        result = st.parse_datetimes(values, formats=formats, time_zone=zone, date_only=column.dtype == "date")
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
    frame: pd.DataFrame, spec: Mapping[str, Any], *, default_region: str = "CN"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Standardise every canonical column of one source.

    Parameters
    ----------
    frame : DataFrame
        A source as read: canonical columns with raw values plus ``_source``,
        ``_source_file`` and ``_source_row``.
    spec : mapping
        The source's entry of the source map (``table``, ``date_formats``, ``time_zone``).
    default_region : str
        Region for phone numbers without a country code.

    Returns
    -------
    (DataFrame, DataFrame)
        The typed frame (same index; contract columns, helper columns ``name_key``
        and ``phone_type`` for customers, the lineage columns) and a frame of
        reason codes with one column per canonical column (empty string = fine).
    """
    table = schema.get_table(spec["table"])
    typed, reasons = [], {}
    for column in table.columns:
        if column.name not in frame.columns:
            continue
        values, reason = _standardise_column(column, frame[column.name], spec, default_region=default_region)
        typed.append(values)
        reasons[column.name] = reason
    out = pd.concat(typed + [frame[[c for c in LINEAGE if c in frame.columns]]], axis=1)
    if "currency" in table.column_names:
        out = _fill_currency(out, frame, spec)
    if "is_refund" in table.column_names and "order_amount" in out.columns:
        out["is_refund"] = _refund_flag(out)
    return out, pd.DataFrame(reasons, index=frame.index)


def _fill_currency(out: pd.DataFrame, frame: pd.DataFrame, spec: Mapping[str, Any]) -> pd.DataFrame:
    """Take the currency named inside an amount (``¥``, ``USD``) when the currency column is empty."""
    amount_column = next((c for c in ("order_amount",) if c in frame.columns), None)
    if amount_column is None:
        return out
    named = st.parse_amounts(frame[amount_column])["currency"]
    current = out["currency"] if "currency" in out.columns else pd.Series(pd.NA, index=out.index, dtype="string")
    out["currency"] = current.fillna(named).fillna((spec.get("constants") or {}).get("currency", "CNY")).str.upper()
    return out


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


def _not_before_earliest():
    return pa.Check(lambda s: s.isna() | (s >= _EARLIEST), name=OUT_OF_RANGE)


def _in_range(low: float, high: float):
    return pa.Check(lambda s: s.isna() | ((s >= low) & (s <= high)), name=OUT_OF_RANGE)


def contract_schema(table: schema.Table, *, as_of: pd.Timestamp, columns: list[str] | None = None) -> pa.DataFrameSchema:
    """Return the pandera schema of a canonical table, checked after standardisation.

    Required and key columns must be present and non-null; keys are unique
    (every occurrence after the first fails); timestamps and dates lie between
    1900 and ``as_of``; scores, quantities and prices lie in ``RANGES``.
    ``columns`` limits the schema to the columns a source provides.
    """
    spec = {}
    for column in table.columns:
        if columns is not None and column.name not in columns:
            continue
        checks = []
        if column.dtype in ("timestamp", "date"):
            checks += [_not_after(as_of), _not_before_earliest()]
        if column.name in RANGES:
            checks.append(_in_range(*RANGES[column.name]))
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


def contract_failures(typed: pd.DataFrame, table: schema.Table, *, as_of: pd.Timestamp) -> pd.DataFrame:
    """Run the contract in lazy mode; return ``(position, column_name, reason)`` for every failing value.

    ``position`` is the row's 0-based position in ``typed``.
    """
    columns = [c for c in table.column_names if c in typed.columns]
    contract = contract_schema(table, as_of=as_of, columns=columns)
    frame = typed[columns].reset_index(drop=True)
    try:
        contract.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        cases = cases[cases["index"].notna()]
        return pd.DataFrame(
            {
                "position": cases["index"].astype("int64").to_numpy(),
                "column_name": cases["column"].astype("string").to_numpy(),
                "reason": cases["check"].map(_reason_of).astype("string").to_numpy(),
            }
        )
    return pd.DataFrame({"position": pd.Series([], dtype="int64"), "column_name": pd.Series([], dtype="string"), "reason": pd.Series([], dtype="string")})


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
    row_reasons = {DUPLICATE_KEY, MISSING_REQUIRED, UNKNOWN_CUSTOMER}
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
    default_region: str = "CN",
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
    default_region : str
        Region for phone numbers without a country code.

    Returns
    -------
    ValidatedSource
        ``clean`` (typed contract columns + helper and lineage columns),
        ``quarantine`` (``QUARANTINE_COLUMNS``) and ``n_rows_in``.
    """
    return validate_source_typed(name, raw, spec, as_of=as_of, default_region=default_region)[0]


def validate_source_typed(name: str, raw: pd.DataFrame, spec: Mapping[str, Any], **options: Any) -> tuple[ValidatedSource, pd.DataFrame]:
    """``validate_source`` (same parameters), plus the standardised frame of every row before the split (``raw``'s order).

    The standardised key values of quarantined rows matter when a source is
    validated in chunks: a key's first occurrence may be a quarantined row.
    """
    from crm_analytics.frames import require_columns

    unknown = set(options) - {"as_of", "default_region"}
    if unknown:
        raise TypeError(f"validate_source_typed() got unexpected keyword arguments {sorted(unknown)}")
    as_of, default_region = options["as_of"], options.get("default_region", "CN")

    require_columns(raw, LINEAGE, context=f"validate_source({name})")
    table = schema.get_table(spec["table"])
    raw = raw.reset_index(drop=True)
    typed, reasons = standardise_frame(raw, spec, default_region=default_region)
    failures = pd.concat([_parse_failures(reasons), contract_failures(typed, table, as_of=as_of)], ignore_index=True)
    return replace(split_clean(name, raw, typed, failures, table), reasons=reasons.reset_index(drop=True)), typed


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

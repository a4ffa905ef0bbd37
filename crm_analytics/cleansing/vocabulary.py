"""Vocabularies: every categorical value checked against the accepted values of its column.

A categorical column of the schema (``schema.Column.values``) holds only its accepted values. For one
raw value, in this order:

1. the text is cleaned (NFKC, inner spaces collapsed, trimmed; the usual spellings of "nothing" are missing);
2. the dataset's value map of the column (``value_maps`` of the dataset file, ``{table: {column: {their_value:
   canonical_value}}}``) is looked up, case-insensitively (``datasets.value_map_key``): a match gives its canonical value;
3. otherwise the code is spelled one way (``Paid Search`` -> ``paid_search``; gender spellings -> ``F``, ``M``,
   ``unknown``); an accepted code is kept, any other value gets the reason ``unknown_value``.

So a value that is neither accepted nor mapped is never counted as valid. The build then decides
(``unknown_value_error``): a few stray values, at most ``MAX_UNKNOWN_DISTINCT`` distinct ones in at most
``MAX_UNKNOWN_SHARE`` of a source's rows, stay in the quarantine as ``unknown_value`` (the row, or in an
optional column the value); more fail the build with the values, their counts and the line to add to the
dataset file. Why these bounds: a systematic difference of vocabulary (another CRM's stage names) touches
many rows or several values and would silently change every rate computed on the column, whereas a
typo or a stray test value is rare; 0.5% of the rows moves a share computed on the column by at most
half a percentage point.

Open categorical columns (``schema.Column.categorical``: product categories, lead sources, experiment
arms) accept any code; a value map on them is applied all the same.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import yaml

from crm_analytics import datasets, schema
from crm_analytics.cleansing import standardise as st
from crm_analytics.sources import SourceError

UNKNOWN_VALUE = "unknown_value"
MAX_UNKNOWN_SHARE = 0.005  # of a source's rows: stray unknown values up to this share are quarantined, not fatal
MAX_UNKNOWN_DISTINCT = 3  # distinct (column, value) pairs of a source tolerated as stray
VALUE_MAP_COLUMNS = ["source", "table_name", "column_name", "source_value", "canonical_value", "n_rows"]


class UnknownValueError(SourceError):
    """Categorical values that are neither accepted by their column nor mapped by the dataset's ``value_maps``."""


def table_value_maps(dataset: object, table_name: str) -> dict[str, dict[str, str]]:
    """``{column: {their_value: canonical_value}}`` of one table from a ``datasets.Dataset`` (empty without one)."""
    return dict((getattr(dataset, "value_maps", None) or {}).get(table_name, {}))


def is_checked(column: schema.Column, value_maps: Mapping[str, Mapping[str, str]] | None = None) -> bool:
    """Whether a column's values are settled here: it has a vocabulary, or the dataset maps its values."""
    return column.values is not None or (column.is_categorical and column.name in (value_maps or {}))


def checked_columns(table: schema.Table, value_maps: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """Columns of ``table`` whose values are settled here (``is_checked``)."""
    return [c.name for c in table.columns if is_checked(c, value_maps)]


def _map_lookup(text: pd.Series, value_map: Mapping[str, str] | None) -> pd.Series:
    """The canonical value of each cleaned text its value map matches; missing elsewhere."""
    if not value_map:
        return pd.Series(pd.NA, index=text.index, dtype="string")
    keys = {datasets.value_map_key(theirs): canonical for theirs, canonical in value_map.items()}
    found = {value: keys.get(datasets.value_map_key(value)) for value in text.dropna().unique()}
    return text.map(found, na_action="ignore").astype("string")


def settle_values(values: pd.Series, column: schema.Column, value_map: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Map, spell and check one categorical column (the rule of the module notes).

    Parameters
    ----------
    values : Series
        Raw values as read.
    column : schema.Column
        Its contract: ``values`` (the vocabulary; ``None``: open codes).
    value_map : mapping, optional
        The dataset's ``{their_value: canonical_value}`` for this column.

    Returns
    -------
    DataFrame
        Same index; ``value`` (string: the canonical value, or the spelled code of an unknown one)
        and ``reason`` (``unknown_value``, ``too_long`` or empty; missing input is empty).
    """
    cleaned = st.standardise_text(values)
    text = cleaned["value"]
    mapped = _map_lookup(text, value_map)
    if column.name == "gender":
        spelled = st.standardise_gender(text)
        recognised = spelled.ne("unknown") | text.str.lower().eq("unknown")
    else:
        spelled = st.standardise_code(text)
        recognised = spelled.isin(column.values) if column.values is not None else pd.Series(True, index=text.index)
    unknown = (text.notna() & mapped.isna() & ~recognised.fillna(False)).astype(bool)
    reason = cleaned["reason"].mask(unknown, UNKNOWN_VALUE).fillna("").astype("string")
    return pd.DataFrame({"value": mapped.fillna(spelled).astype("string"), "reason": reason})


# ------------------------------------------------------------------------------- mappings applied


def applied_maps(counts: pd.Series, value_map: Mapping[str, str] | None) -> pd.DataFrame:
    """The rows each entry of a value map matched: ``source_value`` (the key as written), ``canonical_value``, ``n_rows``.

    ``counts`` holds rows per distinct raw value (index: the value, as a ``value_counts``).
    """
    columns = ["source_value", "canonical_value", "n_rows"]
    if not value_map or counts.empty:
        return pd.DataFrame({c: pd.Series([], dtype="int64" if c == "n_rows" else "string") for c in columns})
    by_key = {datasets.value_map_key(theirs): theirs for theirs in value_map}
    text = st.clean_texts(pd.Series(counts.index, dtype="object"))
    matched = text.map(lambda value: by_key.get(datasets.value_map_key(value)) if pd.notna(value) else None)
    frame = pd.DataFrame({"source_value": matched.to_numpy(), "n_rows": counts.to_numpy("int64")}).dropna(subset=["source_value"])
    out = frame.groupby("source_value", sort=True, as_index=False)["n_rows"].sum()
    out.insert(1, "canonical_value", out["source_value"].map(value_map))
    return out.astype({"source_value": "string", "canonical_value": "string", "n_rows": "int64"})[columns]


def mapping_counts(raw: pd.DataFrame, table_name: str, value_maps: Mapping[str, Mapping[str, str]] | None) -> pd.DataFrame:
    """Every value-map entry applied to the rows of ``raw`` (one source, canonical names): ``column_name``,
    ``source_value``, ``canonical_value``, ``n_rows``."""
    parts = []
    for column, value_map in (value_maps or {}).items():
        if column in raw.columns:
            counts = raw[column].astype("string").value_counts(dropna=True)
            parts.append(applied_maps(counts, value_map).assign(column_name=column))
    if not parts:
        return empty_mapping_counts().drop(columns=["source", "table_name"])
    return pd.concat(parts, ignore_index=True)[["column_name", "source_value", "canonical_value", "n_rows"]].astype({"column_name": "string"})


def empty_mapping_counts() -> pd.DataFrame:
    """An empty ``VALUE_MAP_COLUMNS`` frame with its types."""
    return pd.DataFrame({c: pd.Series([], dtype="int64" if c == "n_rows" else "string") for c in VALUE_MAP_COLUMNS})


def label_mapping_counts(counts: pd.DataFrame, *, source: str, table_name: str) -> pd.DataFrame:
    """``mapping_counts`` of one source with its ``source`` and ``table_name`` (``VALUE_MAP_COLUMNS``), summed over chunks."""
    if counts is None or counts.empty:
        return empty_mapping_counts()
    summed = counts.groupby(["column_name", "source_value", "canonical_value"], sort=True, as_index=False)["n_rows"].sum()
    return summed.assign(source=source, table_name=table_name)[VALUE_MAP_COLUMNS].astype(
        {c: "string" for c in VALUE_MAP_COLUMNS if c != "n_rows"})


# ------------------------------------------------------------------------------ the build's check


def unknown_values(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Unknown values of the quarantine: ``source``, ``table_name``, ``column_name``, ``value`` (as written, its most
    frequent spelling), ``n_rows``; one row per value as matched by a value map (case and spaces ignored)."""
    entries = quarantine.loc[quarantine["reason"] == UNKNOWN_VALUE, ["source", "table_name", "column_name", "raw_value"]].copy()
    columns = ["source", "table_name", "column_name", "value", "n_rows"]
    if entries.empty:
        return pd.DataFrame(columns=columns)
    entries["value"] = st.clean_texts(entries["raw_value"]).fillna("")
    entries["key"] = entries["value"].map(datasets.value_map_key)
    keys = ["source", "table_name", "column_name", "key"]
    spelled = entries.groupby([*keys, "value"], sort=False).size().rename("n").reset_index().sort_values("n", ascending=False, kind="stable")
    out = spelled.groupby(keys, sort=False).agg(value=("value", "first"), n_rows=("n", "sum")).reset_index()
    return out.sort_values(["source", "column_name", "n_rows"], ascending=[True, True, False], ignore_index=True)[columns]


def _affected_rows(quarantine: pd.DataFrame) -> pd.Series:
    """Distinct rows per source with an ``unknown_value`` entry (a row being its file and row number)."""
    rows = quarantine.loc[quarantine["reason"] == UNKNOWN_VALUE, ["source", "source_file", "source_row"]].drop_duplicates()
    return rows.groupby("source").size()


def tolerated_sources(quarantine: pd.DataFrame, row_counts: pd.DataFrame) -> tuple[list[str], list[str]]:
    """``(tolerated, failing)`` sources holding unknown values: tolerated when at most ``MAX_UNKNOWN_DISTINCT``
    distinct values touch at most ``MAX_UNKNOWN_SHARE`` of the source's rows (``row_counts``: ``source``, ``rows_in``)."""
    found = unknown_values(quarantine)
    affected = _affected_rows(quarantine)
    rows_in = row_counts.set_index("source")["rows_in"]
    tolerated, failing = [], []
    for source, group in found.groupby("source", sort=True):
        small = affected.get(source, 0) <= MAX_UNKNOWN_SHARE * float(rows_in.get(source, 0))
        (tolerated if small and len(group) <= MAX_UNKNOWN_DISTINCT else failing).append(str(source))
    return tolerated, failing


def value_maps_line(found: pd.DataFrame) -> str:
    """The ``value_maps`` line to add to a dataset file for the unknown values ``found`` (targets left ``TODO``)."""
    nested: dict[str, dict[str, dict[str, str]]] = {}
    for row in found.itertuples():
        nested.setdefault(str(row.table_name), {}).setdefault(str(row.column_name), {})[str(row.value)] = datasets.TODO
    text = yaml.safe_dump(nested, default_flow_style=True, allow_unicode=True, sort_keys=False, width=float("inf")).strip()
    return f"value_maps: {text}"


def unknown_value_error(quarantine: pd.DataFrame, row_counts: pd.DataFrame, *, dataset_file: object) -> UnknownValueError | None:
    """The error a build raises for unknown values beyond the tolerated few (see the module notes), or None.

    The message names, per table and column, the unknown values with their row counts and the accepted
    values, then the exact ``value_maps`` line to add to ``dataset_file``.
    """
    _, failing = tolerated_sources(quarantine, row_counts)
    if not failing:
        return None
    found = unknown_values(quarantine)
    found = found[found["source"].isin(failing)]
    parts = []
    for (table_name, column_name), group in found.groupby(["table_name", "column_name"], sort=False):
        column = schema.get_table(str(table_name)).column(str(column_name))
        listed = ", ".join(f"{r.value!r} ({r.n_rows:,} rows of source {r.source!r})" for r in group.itertuples())
        accepted = ", ".join(column.values) if column.values is not None else "any code"
        parts.append(f"table {table_name!r}, column {column_name!r}: {listed}; accepted values: {accepted}")
    merged = found.sort_values("n_rows", ascending=False).drop_duplicates(["table_name", "column_name", "value"])
    return UnknownValueError(
        f"{dataset_file}: values neither accepted by their column nor mapped in `value_maps`: {'; '.join(parts)}. "
        f"Map them in the dataset file by adding (or merging into its value_maps) the line "
        f"`{value_maps_line(merged)}` with each {datasets.TODO} replaced by an accepted value, or correct the source. "
        f"(At most {MAX_UNKNOWN_DISTINCT} distinct unknown values in at most {MAX_UNKNOWN_SHARE:.1%} of a source's rows "
        f"would go to the quarantine as `{UNKNOWN_VALUE}` instead.)"
    )

"""The data-quality report: completeness, validity and uniqueness before and after cleansing,
row accounting, quarantine counts, duplicates merged, and entity-resolution accuracy.

Every function returns a tidy DataFrame of aggregates (no personal data), and
every ``plot_*`` function draws one of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crm_analytics import plots
from crm_analytics.frames import require_columns
from crm_analytics.parsing import CONTROL_CHARACTERS
from crm_analytics.sources import ROW_FAULT


def _share(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) * 100.0 if denominator else float("nan")


PROFILE_COUNTS = ["column_name", "stage", "n_rows", "n_present", "n_valid", "n_distinct", "n_control_characters"]


def count_control_characters(values: pd.Series) -> int:
    """Values holding control characters (C0 but tab and line breaks, DEL, C1; NUL included: ``parsing.CONTROL_CHARACTERS``),
    which the standardisers remove from text."""
    if not (pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype)):
        return 0
    return int(values.astype("string").str.contains(CONTROL_CHARACTERS.pattern, regex=True).fillna(False).sum())


def is_text_column(table_name: str | None, column: str) -> bool:
    """Whether ``column`` of canonical table ``table_name`` holds text (unknown table: every column may)."""
    from crm_analytics import schema

    table = schema.TABLES.get(table_name or "")
    return table is None or column not in table.column_names or table.column(column).dtype == "string"


def profile_before_after(raw: pd.DataFrame, reasons: pd.DataFrame, clean: pd.DataFrame, *, source: str, table_name: str) -> pd.DataFrame:
    """Completeness, validity and uniqueness of every canonical column of one source, before and after.

    Parameters
    ----------
    raw : DataFrame
        The source as read (raw values).
    reasons : DataFrame
        Reason codes of the standardisers, one column per canonical column, aligned with ``raw``.
    clean : DataFrame
        The clean rows after standardisation and quarantine.
    source, table_name : str
        Labels for the output.

    Returns
    -------
    DataFrame
        ``source``, ``table_name``, ``column_name``, ``stage`` (``before`` / ``after``), ``n_rows``,
        ``completeness_pct`` (non-missing share), ``validity_pct`` (share of non-missing values
        that are readable and on their canonical list) and ``uniqueness_pct`` (distinct values
        per non-missing value), all in percent; ``n_control_characters``: values of a text column
        that held control characters (NUL, escape...), removed by cleansing (``before``; 0 ``after``).
    """
    return profile_from_counts(profile_counts(raw, reasons, clean, table_name=table_name), source=source, table_name=table_name)


def present_text(values: pd.Series) -> pd.Series:
    """Raw values as text, stripped, with empty text as missing: what "present" means before cleansing."""
    return values.astype("string").str.strip().replace("", pd.NA)


def profile_counts(raw: pd.DataFrame, reasons: pd.DataFrame, clean: pd.DataFrame, *, distinct: bool = True,
                   table_name: str | None = None) -> pd.DataFrame:
    """The counts behind ``profile_before_after``: ``PROFILE_COUNTS`` per column and stage.

    ``n_present``: non-missing values; ``n_valid``: present values that are readable (before)
    or on the canonical list (after: regions on the list, categorical values of ``table_name`` among the
    accepted values of their column (``schema.Column.values``), all other present values); ``n_distinct``:
    distinct present values (missing unless ``distinct``); ``n_control_characters``: values of a text
    column holding control characters (``count_control_characters``; 0 after, as cleansing removed them).
    Columns absent from ``clean`` get no ``after`` row. A source validated in chunks adds up its counts, except ``n_distinct``,
    which it counts over all chunks at once.
    """
    if ROW_FAULT in raw.columns:  # a row that could not be read has no values to profile (its fault is in the quarantine)
        readable = raw[ROW_FAULT].isna().to_numpy(dtype=bool)
        raw, reasons = raw[readable], reasons[readable]
    rows = []
    for column in reasons.columns:
        before = present_text(raw[column])
        present = before.notna()
        invalid = present & reasons[column].fillna("").ne("").to_numpy()
        n_distinct = before[present].nunique() if distinct else pd.NA
        n_control = count_control_characters(raw[column]) if is_text_column(table_name, column) else 0
        rows.append((column, "before", len(raw), int(present.sum()), int(present.sum() - invalid.sum()), n_distinct, n_control))
        if column in clean.columns:
            after = clean[column]
            kept = after.notna()
            rows.append((column, "after", len(clean), int(kept.sum()), _after_valid(after[kept], column, table_name=table_name),
                         after[kept].nunique(), 0))
    return pd.DataFrame(rows, columns=PROFILE_COUNTS)


def profile_from_counts(counts: pd.DataFrame, *, source: str, table_name: str) -> pd.DataFrame:
    """Turn ``PROFILE_COUNTS`` into the profile of ``profile_before_after`` (same rows, in the same order)."""
    rows = [
        (r.column_name, r.stage, int(r.n_rows), _share(r.n_present, r.n_rows), _share(r.n_valid, r.n_present), _share(r.n_distinct, r.n_present),
         int(r.n_control_characters))
        for r in counts.itertuples()
    ]
    out = pd.DataFrame(rows, columns=["column_name", "stage", "n_rows", "completeness_pct", "validity_pct", "uniqueness_pct",
                                      "n_control_characters"])
    out.insert(0, "table_name", table_name)
    out.insert(0, "source", source)
    return out


def _after_valid(values: pd.Series, column: str, *, table_name: str | None = None) -> int:
    """Present values after cleansing that count as valid: all, except regions not on the canonical list and
    categorical values outside their column's vocabulary (when ``table_name`` is given)."""
    accepted = accepted_values(table_name, column)
    if accepted is not None:
        return int(values.astype("string").isin(accepted).sum())
    if column not in ("province", "city") or values.empty:
        return len(values)
    distinct = pd.unique(values.astype(str))
    known = set(distinct[known_regions(pd.Series(distinct), column).to_numpy()])
    return int(values.astype(str).isin(known).sum())


def accepted_values(table_name: str | None, column: str) -> tuple[str, ...] | None:
    """The vocabulary of ``column`` of canonical table ``table_name`` (``None``: open, unknown table or column)."""
    from crm_analytics import schema

    table = schema.TABLES.get(table_name or "")
    return table.column(column).values if table is not None and column in table.column_names else None


def known_regions(values: pd.Series, column: str) -> pd.Series:
    """Whether each region name (``province`` or ``city`` per ``column``) is on the canonical list."""
    from crm_analytics import regions

    lookup = regions.lookup_province if column == "province" else regions.lookup_city
    return values.map(lambda v: lookup(v) is not None).astype(bool)


def row_accounting(counts: pd.DataFrame) -> pd.DataFrame:
    """Add the invariant check to per-source row counts.

    Parameters
    ----------
    counts : DataFrame
        ``source``, ``table_name``, ``rows_in``, ``rows_clean``, ``rows_quarantined``.

    Returns
    -------
    DataFrame
        The same plus ``quarantined_pct`` and ``is_balanced`` (rows in = clean + quarantined).
    """
    require_columns(counts, ["source", "table_name", "rows_in", "rows_clean", "rows_quarantined"], context="row_accounting(counts)")
    out = counts.copy()
    out["quarantined_pct"] = np.where(out["rows_in"] > 0, out["rows_quarantined"] / out["rows_in"].clip(lower=1) * 100.0, 0.0)
    out["is_balanced"] = out["rows_in"] == out["rows_clean"] + out["rows_quarantined"]
    return out


COLUMN_NOTE_COLUMNS = ["source", "table_name", "column_name", "source_column", "problem", "n_rows", "is_required", "message"]
EMPTY_COLUMN, UNREADABLE_COLUMN = "empty", "unreadable"
_READ_TYPES = ("timestamp", "date", "float64", "int64", "bool")  # types whose values are parsed: all can fail to read
_READ_COLUMNS = ("email", "phone")  # text columns whose values are checked as addresses and numbers


def column_notes(profile: pd.DataFrame, source_map, *, quarantine: pd.DataFrame | None = None) -> pd.DataFrame:
    """Columns a source maps that arrived entirely empty, or with not one readable value.

    Parameters
    ----------
    profile : DataFrame
        ``profile_before_after`` of every source (its ``before`` rows are read: ``n_rows``,
        ``completeness_pct``, ``validity_pct`` per source and column).
    source_map : mapping
        ``{source: spec}``; a source's ``constants`` are not read from its file and are skipped,
        its ``columns`` name each column in the file, its ``date_formats`` go into the message.
    quarantine : DataFrame, optional
        Quarantine entries (masked for display); up to three raw values of an unreadable column
        are quoted from it.

    Returns
    -------
    DataFrame
        ``COLUMN_NOTE_COLUMNS``: one row per such column of a source with at least one row;
        ``problem`` is ``empty`` (no value at all) or ``unreadable`` (values present, none readable:
        dates, numbers, flags, e-mail addresses, phone numbers); ``is_required`` says whether the
        table's contract requires the column; ``message`` says it in one line, naming the source,
        the column as the file calls it and, for dates, the source's ``date_formats``.
    """
    from crm_analytics import schema

    rows = []
    before = profile[(profile["stage"] == "before") & (profile["n_rows"] > 0)]
    for r in before.itertuples():
        spec = source_map.get(r.source) or {}
        if r.column_name in (spec.get("constants") or {}) or r.table_name not in schema.TABLES:
            continue
        table = schema.get_table(r.table_name)
        if r.column_name not in table.column_names:
            continue
        column = table.column(r.column_name)
        readable = column.dtype in _READ_TYPES or column.name in _READ_COLUMNS
        if r.completeness_pct == 0:
            problem = EMPTY_COLUMN
        elif readable and r.validity_pct == 0:
            problem = UNREADABLE_COLUMN
        else:
            continue
        source_column = (spec.get("columns") or {}).get(r.column_name, r.column_name)
        required = column.name in table.required_columns
        rows.append((r.source, r.table_name, r.column_name, source_column, problem, int(r.n_rows), required,
                     _column_note(r.source, column, source_column, problem, int(r.n_rows), spec, quarantine)))
    return pd.DataFrame(rows, columns=COLUMN_NOTE_COLUMNS).astype({"n_rows": "int64", "is_required": "bool"})


UNREAD_SHEET = "unread_sheet"


def unread_sheet_notes(source_map, dataset_dir) -> pd.DataFrame:
    """Sheets of the Excel files a dataset reads that no source or input reads, with their rows: never silently ignored.

    Parameters
    ----------
    source_map : mapping
        ``{source: spec}``; an Excel source is checked, and so is every Excel input a derived source may read.
    dataset_dir : path
        The folder the files are relative to.

    Returns
    -------
    DataFrame
        ``COLUMN_NOTE_COLUMNS``: one row per sheet left unread that holds rows; ``problem`` is ``unread_sheet``,
        ``source_column`` the sheet, ``n_rows`` its data rows, ``column_name`` empty, ``is_required`` false,
        and ``message`` names the file, the sheet, its rows and the source, and how to read them.
    """
    from crm_analytics import sources

    rows, seen = [], set()
    for name, spec in source_map.items():
        candidates = [(name, spec.get("table", ""), spec)]
        candidates += [(f"{name} (input {n})", spec.get("table", ""), s) for n, s in (spec.get("inputs") or {}).items()]
        for label, table_name, entry in candidates:
            key = (str(entry.get("path")), str(entry.get("sheet", 0)))
            if entry.get("format") != "excel" or key in seen:
                continue
            seen.add(key)
            read = entry.get("sheet", "the first sheet")
            for sheet, n_rows in sources.unread_sheets(entry, dataset_dir).items():
                message = (f"{entry['path']}: sheet {sheet!r} holds {n_rows:,} rows that source {label} does not read (it reads "
                           f"sheet {read!r}); to load them, declare `sheet: [{read}, {sheet}]` (sheets sharing one header) "
                           "or `sheet: all`, or give the sheet a source of its own")
                rows.append((name, table_name, "", sheet, UNREAD_SHEET, n_rows, False, message))
    return pd.DataFrame(rows, columns=COLUMN_NOTE_COLUMNS).astype({"n_rows": "int64", "is_required": "bool"})


def _column_note(source: str, column, source_column: str, problem: str, n_rows: int, spec, quarantine: pd.DataFrame | None) -> str:
    """One line saying which column of which source arrived empty or unreadable, and what to check."""
    named = f"column {source_column!r} of source {source!r} (for {column.name!r})"
    if problem == EMPTY_COLUMN:
        return f"{named} is empty in all {n_rows:,} rows; check that the file fills it, or leave it out of the source's `columns:`"
    examples = ""
    if quarantine is not None and not quarantine.empty:
        mine = quarantine[(quarantine["source"] == source) & (quarantine["column_name"] == column.name)]["raw_value"].dropna()
        if len(mine):
            examples = " (e.g. " + ", ".join(repr(v) for v in mine.drop_duplicates().head(3)) + ")"
    if column.dtype in ("timestamp", "date"):
        formats = spec.get("date_formats") or ["iso8601"]
        hint = f"none matches the source's key `date_formats` {list(formats)}; correct it"
    elif column.dtype in ("float64", "int64"):
        hint = "none is a number"
    elif column.dtype == "bool":
        hint = "none is a yes/no flag"
    else:
        hint = f"none is a valid {'e-mail address' if column.name == 'email' else 'phone number'}; check that the mapping names the right column"
    return f"{named} has values in its rows but not one is readable{examples}: {hint}"


def quarantine_by_reason(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Count quarantine entries by ``source``, ``table_name``, ``column_name``, ``reason`` and ``action`` (``n_entries``)."""
    require_columns(quarantine, ["source", "table_name", "column_name", "reason", "action"], context="quarantine_by_reason(quarantine)")
    keys = ["source", "table_name", "column_name", "reason", "action"]
    if quarantine.empty:
        return pd.DataFrame(columns=keys + ["n_entries"])
    return quarantine.groupby(keys, dropna=False).size().rename("n_entries").reset_index().sort_values("n_entries", ascending=False, ignore_index=True)


def duplicates_summary(lineage: pd.DataFrame) -> pd.DataFrame:
    """Summarise the merge of source records into customers.

    Parameters
    ----------
    lineage : DataFrame
        ``source``, ``customer_key``, ``match_rule``.

    Returns
    -------
    DataFrame
        One row per ``match_rule`` and ``source``: ``n_records``; plus totals rows
        (``source`` = ``all``) with ``n_records``, ``n_customers`` and
        ``n_records_merged`` (records beyond the first of their customer).
    """
    require_columns(lineage, ["source", "customer_key", "match_rule"], context="duplicates_summary(lineage)")
    by_rule = lineage.groupby(["match_rule", "source"]).size().rename("n_records").reset_index()
    n_customers = lineage["customer_key"].nunique()
    totals = pd.DataFrame(
        {"match_rule": ["all"], "source": ["all"], "n_records": [len(lineage)], "n_customers": [n_customers],
         "n_records_merged": [len(lineage) - n_customers]}
    )
    return pd.concat([by_rule, totals], ignore_index=True)


# ------------------------------------------------------------------------------------- accuracy


def _pairs(n: pd.Series) -> pd.Series:
    return n * (n - 1) // 2


def _pair_counts(frame: pd.DataFrame, group: list[str]) -> pd.DataFrame:
    """Pairs of records within each group, split by the two records' sources (``source_a`` <= ``source_b``)."""
    sizes = frame.groupby(group + ["source"]).size().rename("n").reset_index()
    same = sizes.assign(source_a=sizes["source"], source_b=sizes["source"], n_pairs=_pairs(sizes["n"]))
    cross = sizes.merge(sizes, on=group, suffixes=("_a", "_b"))
    cross = cross[cross["source_a"] < cross["source_b"]]
    cross = cross.assign(n_pairs=cross["n_a"] * cross["n_b"])
    both = pd.concat([same[["source_a", "source_b", "n_pairs"]], cross[["source_a", "source_b", "n_pairs"]]], ignore_index=True)
    return both.groupby(["source_a", "source_b"])["n_pairs"].sum()


def pairwise_accuracy(predicted: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Pairwise precision, recall and F1 of a clustering against the true persons, overall and per source pair.

    Parameters
    ----------
    predicted : DataFrame
        ``source``, ``source_customer_id``, ``customer_key`` (one row per clean source record).
    truth : DataFrame
        ``source``, ``source_record_id``, ``person_id``. Only records present in
        ``predicted`` are scored (quarantined records are not resolved).

    Returns
    -------
    DataFrame
        ``source_a``, ``source_b`` (``all`` / ``all`` for the overall row), ``n_true_pairs``,
        ``n_predicted_pairs``, ``n_correct_pairs``, ``precision``, ``recall``, ``f1`` (0-1).
    """
    require_columns(predicted, ["source", "source_customer_id", "customer_key"], context="pairwise_accuracy(predicted)")
    require_columns(truth, ["source", "source_record_id", "person_id"], context="pairwise_accuracy(truth)")
    joined = predicted.merge(
        truth.rename(columns={"source_record_id": "source_customer_id"}).astype({"source_customer_id": "string", "source": "string"}),
        on=["source", "source_customer_id"],
        how="inner",
    )
    counts = pd.DataFrame(
        {
            "n_true_pairs": _pair_counts(joined, ["person_id"]),
            "n_predicted_pairs": _pair_counts(joined, ["customer_key"]),
            "n_correct_pairs": _pair_counts(joined, ["customer_key", "person_id"]),
        }
    ).fillna(0).astype("int64").reset_index()
    overall = counts[["n_true_pairs", "n_predicted_pairs", "n_correct_pairs"]].sum().to_frame().T
    overall.insert(0, "source_b", "all")
    overall.insert(0, "source_a", "all")
    out = pd.concat([overall, counts], ignore_index=True)
    out["precision"] = out["n_correct_pairs"] / out["n_predicted_pairs"].where(out["n_predicted_pairs"] > 0)
    out["recall"] = out["n_correct_pairs"] / out["n_true_pairs"].where(out["n_true_pairs"] > 0)
    out["f1"] = 2 * out["precision"] * out["recall"] / (out["precision"] + out["recall"])
    return out


# ----------------------------------------------------------------------------------------- plots


def plot_before_after(profile: pd.DataFrame, *, metric: str = "completeness_pct", table_name: str = "customers", ax=None):
    """Horizontal bars of a quality metric per column of one table, before vs after (mean over its sources)."""
    import seaborn as sns

    plots.set_style()
    ax = plots.new_axes(ax, figsize=(8, 5))
    data = profile[profile["table_name"] == table_name].groupby(["column_name", "stage"], as_index=False)[metric].mean()
    sns.barplot(data=data, y="column_name", x=metric, hue="stage", hue_order=["before", "after"], ax=ax,
                palette=plots.category_colours(["before", "after"]))
    label = metric.replace("_pct", "")
    ax.set(ylabel="", xlabel=f"{label} (%)", xlim=(0, 105), title=f"{table_name}: {label} before and after cleansing")
    ax.legend(title="stage", bbox_to_anchor=(1.01, 1.0), loc="upper left")
    return ax


def plot_quarantine_reasons(by_reason: pd.DataFrame, *, ax=None):
    """Horizontal bars: quarantine entries per reason code, split by action (row / value)."""
    import seaborn as sns

    plots.set_style()
    ax = plots.new_axes(ax)
    data = by_reason.groupby(["reason", "action"], as_index=False)["n_entries"].sum().sort_values("n_entries", ascending=False)
    if data.empty:
        ax.set_title("Quarantine: no entries")
        return ax
    sns.barplot(data=data, y="reason", x="n_entries", hue="action", ax=ax, palette=plots.category_colours(data["action"]))
    ax.set(xlabel="quarantine entries (count)", ylabel="", title="Quarantine entries by reason")
    return ax


def plot_duplicates(summary: pd.DataFrame, *, ax=None):
    """Bars: source records per match rule (how each record joined its customer)."""
    import seaborn as sns

    plots.set_style()
    ax = plots.new_axes(ax)
    data = summary[summary["match_rule"] != "all"]
    sns.barplot(data=data, y="match_rule", x="n_records", hue="source", ax=ax, palette=plots.category_colours(data["source"]))
    total = summary[summary["match_rule"] == "all"].iloc[0]
    ax.set(xlabel="source records (count)", ylabel="",
           title=f"{int(total['n_records']):,} records -> {int(total['n_customers']):,} customers ({int(total['n_records_merged']):,} merged)")
    return ax

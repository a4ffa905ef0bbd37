"""Shared helpers for analysis inputs: column checks and table conversion.

Analysis functions accept either an Ibis table (from the warehouse) or a pandas
DataFrame, check the columns they need at the top, and return pandas.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Union

import pandas as pd

# Ibis loads on first use, not on import: stakeholder pages check columns of persisted tables only.
TableLike = Union[pd.DataFrame, "ibis.expr.types.Table"]


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
        return ibis.memtable(table)
    if isinstance(table, ir.Table):
        return table
    raise TypeError(f"expected a pandas DataFrame or an Ibis table, got {type(table).__name__}")


def to_pandas(table: TableLike) -> pd.DataFrame:
    """Return ``table`` as a pandas DataFrame (an Ibis table is executed; a DataFrame is returned as is)."""
    import ibis.expr.types as ir

    if isinstance(table, pd.DataFrame):
        return table
    if isinstance(table, ir.Table):
        return table.to_pandas()
    raise TypeError(f"expected a pandas DataFrame or an Ibis table, got {type(table).__name__}")


def as_timestamp(value: str | pd.Timestamp) -> pd.Timestamp:
    """Parse an ISO date or timestamp (as notebooks receive it from YAML) into a naive ``pd.Timestamp``."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        raise ValueError(f"expected a naive local time in the business time zone, got {value!r}")
    return stamp

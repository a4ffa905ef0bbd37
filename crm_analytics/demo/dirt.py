"""The planted-defect log and the dirty spellings shared by several exports.

Every defect the generator plants is logged with the export (source name of
``parameters/sources.yaml``), the 0-based data row in that file (-1 when the
defect concerns a whole file or column), the record id on that row, the
canonical column, a kind and the raw value written. The log becomes
``ground_truth/planted_dirt.parquet``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crm_analytics.demo import calendar, text

FULL_WIDTH = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)} | {" ": "\u3000"}
_FULL_WIDTH_TABLE = str.maketrans(FULL_WIDTH)


class DirtLog:
    """Collects planted defects; ``table()`` returns them as one Arrow table."""

    SCHEMA = pa.schema([("source", pa.string()), ("row", pa.int64()), ("source_record_id", pa.string()),
                        ("column", pa.string()), ("kind", pa.string()), ("value", pa.string())])

    def __init__(self) -> None:
        self._parts: list[dict] = []

    def add(self, source: str, rows: np.ndarray, kind: str, *, column: str | None = None,
            record_ids: pa.Array | None = None, values: pa.Array | None = None) -> None:
        """Log ``kind`` on ``rows`` (0-based data rows) of export ``source``; ``record_ids``/``values`` per row."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows):
            self._parts.append({"source": source, "column": column, "kind": kind, "rows": rows,
                                "record_ids": record_ids, "values": values})

    def add_file(self, source: str, kind: str, *, column: str | None = None, value: str | None = None) -> None:
        """Log a defect of a whole file (``column`` None) or a whole column: row -1."""
        self.add(source, np.array([-1]), kind, column=column, values=pa.array([value], pa.string()))

    def rename_columns(self, source: str, mapping: dict[str, str]) -> None:
        """Replace canonical column names by the export's own names for ``source``."""
        for part in self._parts:
            if part["source"] == source and part["column"] is not None:
                part["column"] = mapping.get(part["column"], part["column"])

    def table(self) -> pa.Table:
        """All logged defects, in logging order."""
        tables = []
        for part in self._parts:
            n = len(part["rows"])
            nulls = pa.nulls(n, pa.string())
            tables.append(pa.table({
                "source": nulls.fill_null(part["source"]),
                "row": pa.array(part["rows"]),
                "source_record_id": nulls if part["record_ids"] is None else part["record_ids"].cast(pa.string()),
                "column": nulls if part["column"] is None else nulls.fill_null(part["column"]),
                "kind": nulls.fill_null(part["kind"]),
                "value": nulls if part["values"] is None else pc.cast(part["values"], pa.string()),
            }, schema=self.SCHEMA))
        return pa.concat_tables(tables) if tables else self.SCHEMA.empty_table()


def full_width(values: pa.Array) -> pa.Array:
    """Full-width forms of ASCII characters (small subsets only: formats row by row)."""
    return pa.array([None if v is None else v.translate(_FULL_WIDTH_TABLE) for v in values.to_pylist()], pa.string())


def pick(rng: np.random.Generator, n: int, share: float, *, minimum: int = 0, eligible: np.ndarray | None = None) -> np.ndarray:
    """Sorted random rows: about ``share`` of ``n`` (at least ``minimum``), only from ``eligible`` when given."""
    pool = np.arange(n) if eligible is None else np.flatnonzero(eligible)
    k = min(len(pool), max(minimum, int(rng.binomial(len(pool), share)) if len(pool) else 0))
    return np.sort(rng.choice(pool, size=k, replace=False)) if k else np.array([], dtype=np.int64)


def blank(values: pa.Array, rows: np.ndarray) -> pa.Array:
    """``values`` with ``rows`` set to null."""
    mask = np.zeros(len(values), dtype=bool)
    mask[rows] = True
    return pc.if_else(pa.array(mask), pa.nulls(len(values), values.type), values)


def replace_rows(values: pa.Array, rows: np.ndarray, replacement: pa.Array) -> pa.Array:
    """``values`` with ``rows`` (sorted) replaced by ``replacement`` (one value per row)."""
    mask = np.zeros(len(values), dtype=bool)
    mask[rows] = True
    return pc.replace_with_mask(values, pa.array(mask), replacement.cast(values.type))


def plant_missing(rng: np.random.Generator, log: DirtLog, source: str, column: str, values: pa.Array, share: float,
                  record_ids: pa.Array | None = None) -> pa.Array:
    """Blank about ``share`` of ``values`` and log them as ``missing_value``."""
    rows = pick(rng, len(values), share)
    log.add(source, rows, "missing_value", column=column, record_ids=None if record_ids is None else record_ids.take(pa.array(rows)))
    return blank(values, rows)


def amount_text(rng: np.random.Generator, amount: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Store-till spellings of amounts: ``¥1,234.50``, ``RMB 1,234.50``, ``1,234元``, full-width digits; refunds ``（123.00）``.

    Returns the text and the variant code per row (6 = refund in parentheses, 7 = refund with minus sign).
    """
    negative = amount < 0
    variant = text.choose(rng, len(amount), [0.4, 0.25, 0.1, 0.15, 0.05, 0.05])
    variant = np.where(negative, np.where(rng.random(len(amount)) < 0.7, 6, 7), variant).astype(np.int8)
    whole = np.round(np.abs(amount) * 100) % 100 == 0
    builders: list[Callable[[np.ndarray], pa.Array]] = [
        lambda r: text.money(amount[r]),
        lambda r: pc.binary_join_element_wise("¥", text.money(amount[r], thousands=True), ""),
        lambda r: pc.binary_join_element_wise("RMB ", text.money(amount[r], thousands=True), ""),
        lambda r: pc.binary_join_element_wise(
            pc.if_else(pa.array(whole[r]), text.money(amount[r], thousands=True, decimals=False), text.money(amount[r], thousands=True)), "元", ""),
        lambda r: text.full_width_digits(text.money(amount[r])),
        lambda r: text.money(amount[r], thousands=True),
        lambda r: pc.binary_join_element_wise("（", text.money(amount[r]), "）", ""),
        lambda r: pc.binary_join_element_wise("-", text.money(amount[r]), ""),
    ]
    return text.assemble(len(amount), variant, builders), variant


def future_times(rng: np.random.Generator, period: calendar.Period, n: int) -> np.ndarray:
    """UTC seconds after the export date: days to a year later (typos and clock errors)."""
    return period.end + (rng.uniform(1, 400, n) * calendar.DAY).astype(np.int64)

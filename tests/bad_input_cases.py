"""The bad-input corpus as one table: every case, how it is run, and what must come out.

Two kinds of case:

- ``source``: a file of ``tests/data/bad_inputs/`` read as one of the demo's sources with the real reader
  (``sources.read_source``) and validated (``validate.validate_source``);
- ``build``: a tiny dataset (customers, orders, order lines as CSV, a dataset file) with one fault planted,
  built whole with ``build_clean_warehouse``; the counts are those of the source holding the fault.

For every case either the expected error (its type and a pattern its message matches) or the row counts
(rows in, clean, quarantined: in = clean + quarantined) and the quarantine reasons of that source.
``tests/test_probes.py`` runs each as a test; ``python -m tests.bad_input_cases`` prints the outcome table
as markdown.
"""

from __future__ import annotations

import copy
import csv
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

CORPUS = Path(__file__).resolve().parent / "data" / "bad_inputs"
AS_OF = "2024-12-31"


@dataclass(frozen=True)
class Outcome:
    """What a case produced: the counts of its source and its quarantine reasons, or the error it raised.

    ``reasons``: ``{reason: entries}`` of the source's quarantine (``row`` and ``value`` entries alike);
    ``details``: facts a case checks beyond the counts (a stored value, a count in the quality report).
    """

    rows_in: int | None = None
    rows_clean: int | None = None
    rows_quarantined: int | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None
    details: dict[str, object] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The outcome in a few words: the error's type and message, or the reasons with their counts."""
        if self.error is not None:
            text = " ".join(str(self.error).split())
            return f"error {type(self.error).__name__}: {text[:160]}{'…' if len(text) > 160 else ''}"
        shown = ", ".join(f"{reason} ×{n}" for reason, n in sorted(self.reasons.items())) or "all clean"
        extra = "; ".join(f"{key} {value!r}" for key, value in self.details.items())
        return f"{shown}; {extra}" if extra else shown


@dataclass(frozen=True)
class Case:
    """One bad input: ``run(folder)`` plants and runs it in an empty folder; the rest is what must come out.

    ``error``: ``(exception type name, regex on its message)`` when the input must be refused; otherwise
    ``counts`` (rows in, clean, quarantined) and ``reasons`` (the exact set of quarantine reasons), and
    ``details`` that must equal the outcome's.
    """

    name: str
    kind: str
    what: str
    run: Callable[[Path], Outcome]
    counts: tuple[int, int, int] | None = None
    reasons: frozenset[str] = frozenset()
    error: tuple[str, str] | None = None
    details: dict[str, object] = field(default_factory=dict)


def run_case(case: Case, folder: Path) -> Outcome:
    """Run one case in ``folder``; an exception of the input becomes the outcome's ``error``."""
    from crm_analytics import sources

    try:
        return case.run(folder)
    except sources.SourceError as exc:  # every refusal of an input is one (EmptySourceError, UnknownValueError, ...)
        return Outcome(error=exc)


def problems(case: Case, outcome: Outcome) -> list[str]:
    """How ``outcome`` differs from what ``case`` expects; empty when it matches."""
    if case.error is not None:
        type_name, pattern = case.error
        if outcome.error is None:
            return [f"expected {type_name} matching {pattern!r}, got {outcome.summary}"]
        found = [klass.__name__ for klass in type(outcome.error).__mro__]
        wrong = [] if type_name in found else [f"expected {type_name}, got {type(outcome.error).__name__}"]
        return wrong + ([] if re.search(pattern, str(outcome.error)) else [f"message does not match {pattern!r}: {outcome.error}"])
    if outcome.error is not None:
        return [f"expected counts {case.counts}, got {outcome.summary}"]
    found = []
    counts = (outcome.rows_in, outcome.rows_clean, outcome.rows_quarantined)
    if outcome.rows_in != outcome.rows_clean + outcome.rows_quarantined:
        found.append(f"rows in {outcome.rows_in} != clean {outcome.rows_clean} + quarantined {outcome.rows_quarantined}")
    if counts != case.counts:
        found.append(f"counts (in, clean, quarantined) {counts}, expected {case.counts}")
    if set(outcome.reasons) != set(case.reasons):
        found.append(f"reasons {sorted(outcome.reasons)}, expected {sorted(case.reasons)}")
    found += [f"{key}: {outcome.details.get(key)!r}, expected {value!r}" for key, value in case.details.items() if outcome.details.get(key) != value]
    return found


# ------------------------------------------------------------------------------ corpus files, one source


def _corpus_file(source: str, file: str) -> Callable[[Path], Outcome]:
    """Read ``tests/data/bad_inputs/<file>`` as the demo's ``source`` and validate it."""

    def run(folder: Path) -> Outcome:
        from crm_analytics import sources
        from crm_analytics.cleansing import validate

        spec = copy.deepcopy(sources.load_source_map()[source]) | {"path": file}
        raw = sources.read_source(source, spec, CORPUS)
        result = validate.validate_source(source, raw, spec, as_of=pd.Timestamp("2025-01-01"))
        return Outcome(rows_in=result.n_rows_in, rows_clean=len(result.clean), rows_quarantined=result.n_rows_quarantined,
                       reasons=result.quarantine["reason"].value_counts().to_dict())

    return run


# ------------------------------------------------------------------------- a tiny dataset, built whole

CUSTOMERS = ["id,nome,email,telefone,desde", "C1,Ana,ana@example.com,+351912345678,2023-01-05",
             "C2,Rui,rui@example.com,+351912345679,2023-06-30", "C3,Eva,eva@example.com,,2023-07-01"]
ORDERS = ["pedido,cliente,data,valor", "P1,C1,2024-02-13 10:00,10", "P2,C2,2024-02-15 11:00,20", "P3,C1,2024-02-28 12:00,30",
          "P4,C3,2024-03-01 09:00,40"]
LINES = ["pedido,linha,produto,qtd,preco", "P1,1,SKU1,1,10", "P2,1,SKU2,2,10", "P3,1,SKU1,3,10", "P4,1,SKU3,1,40"]


def _dataset_document(folder: Path) -> dict:
    return {
        "data_dir": str(folder), "time_zone": "Europe/Lisbon", "currency": "EUR", "country": "PT",
        "sources": {
            "clientes": {"table": "customers", "path": "clientes.csv", "format": "csv", "date_formats": ["%Y-%m-%d"],
                         "columns": {"customer_id": "id", "full_name": "nome", "email": "email", "phone": "telefone", "signup_time": "desde"},
                         "constants": {"source": "loja", "acquisition_channel": "store"}},
            "pedidos": {"table": "orders", "path": "pedidos.csv", "format": "csv", "date_formats": ["%Y-%m-%d %H:%M"],
                        "columns": {"order_id": "pedido", "customer_id": "cliente", "order_time": "data", "order_amount": "valor"},
                        "constants": {"channel": "store", "source": "loja"}},
            "itens": {"table": "order_items", "path": "itens.csv", "format": "csv",
                      "columns": {"order_id": "pedido", "line_number": "linha", "product_id": "produto", "quantity": "qtd",
                                  "unit_price_amount": "preco"}},
        },
    }


def _lines(rows: list[str]) -> bytes:
    return ("\n".join(rows) + "\n").encode("utf-8")


def _build_case(source: str, *, files: dict[str, bytes] | None = None, change: Callable[[dict], None] | None = None,
                details: Callable[[object, Path], dict] | None = None) -> Callable[[Path], Outcome]:
    """A run that writes the tiny dataset with ``files`` replaced (``{file name: bytes}``), applies ``change`` to the
    dataset document, builds it (any share may be quarantined) and returns the counts of ``source``."""

    def run(folder: Path) -> Outcome:
        from crm_analytics.cleansing import build_clean_warehouse

        folder.mkdir(parents=True, exist_ok=True)
        written = {"clientes.csv": _lines(CUSTOMERS), "pedidos.csv": _lines(ORDERS), "itens.csv": _lines(LINES)} | (files or {})
        for name, content in written.items():
            (folder / name).write_bytes(content)
        document = _dataset_document(folder)
        if change is not None:
            change(document)
        dataset = folder / "loja.yaml"
        dataset.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
        result = build_clean_warehouse(dataset=dataset, as_of=AS_OF, warehouse_path=folder / "loja.duckdb", quarantine_threshold=1.0,
                                       output_dir=folder / "run")
        counts = result.row_counts.set_index("source").loc[source]
        quarantine = result.quarantine[result.quarantine["source"] == source]
        return Outcome(rows_in=int(counts["rows_in"]), rows_clean=int(counts["rows_clean"]), rows_quarantined=int(counts["rows_quarantined"]),
                       reasons=quarantine["reason"].value_counts().to_dict(), details=details(result, folder) if details else {})

    return run


def _warehouse_values(table: str, column: str, key: str):
    """``details`` of a build: ``{table.column: {key: value}}`` as stored in the warehouse."""

    def read(result, folder: Path) -> dict:
        import duckdb

        with duckdb.connect(str(result.warehouse_path), read_only=True) as con:
            frame = con.execute(f'SELECT "{key}", CAST("{column}" AS VARCHAR) FROM "{table}" ORDER BY 1').fetchall()
        return {f"{table}.{column}": dict(frame)}

    return read


def _rename_mapped(source: str, canonical: str, name: str) -> Callable[[dict], None]:
    def change(document: dict) -> None:
        document["sources"][source]["columns"][canonical] = name

    return change


def _excel_with_a_second_sheet(folder: Path) -> Callable[[dict], None]:
    """Orders as a workbook: sheet ``pedidos`` (read) and sheet ``mais`` (two more orders the source does not read)."""

    def change(document: dict) -> None:
        read = [row.split(",") for row in ORDERS]
        more = [read[0], ["P5", "C2", "2024-04-01 10:00", "50"], ["P6", "C3", "2024-04-02 10:00", "60"]]
        with pd.ExcelWriter(folder / "pedidos.xlsx") as writer:
            pd.DataFrame(read[1:], columns=read[0]).to_excel(writer, sheet_name="pedidos", index=False)
            pd.DataFrame(more[1:], columns=more[0]).to_excel(writer, sheet_name="mais", index=False)
        document["sources"]["pedidos"] |= {"path": "pedidos.xlsx", "format": "excel", "sheet": "pedidos"}

    return change


def _second_sheet_case(folder: Path) -> Outcome:
    return _build_case("pedidos", change=_excel_with_a_second_sheet(folder), details=_unread_rows)(folder)


def _unread_rows(result, folder: Path) -> dict:
    """Rows of sheets the source does not read, as the quality report's column notes count them (``unread_sheet``)."""
    from crm_analytics.cleansing import quality

    notes = result.column_notes
    unread = notes[notes["problem"] == quality.UNREAD_SHEET]
    return {"rows unread": int(unread["n_rows"].sum()) if len(unread) else None}


def _formula_payloads_published(result, folder: Path) -> dict:
    """The payloads as the warehouse keeps them and as a published CSV shows them (``results.write_csv``)."""
    import duckdb

    from crm_analytics import results

    with duckdb.connect(str(result.warehouse_path), read_only=True) as con:
        names = con.execute("SELECT full_name FROM customers ORDER BY full_name").df()
        products = con.execute("SELECT DISTINCT product_id FROM order_items ORDER BY 1").df()
    published = results.write_csv(names.merge(products, how="cross"), folder / "published.csv")
    with open(published, newline="", encoding="utf-8") as handle:
        cells = [cell for row in list(csv.reader(handle))[1:] for cell in row]
    stored = set(names["full_name"]) | set(products["product_id"])
    return {"formula-like values kept in the warehouse": sum(value[:1] in FORMULA_STARTS for value in stored),
            "unquoted formula cells in CSV": sorted({cell for cell in cells if cell[:1] in FORMULA_STARTS})}


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run (OWASP "CSV Injection")
HYPERLINK = '=HYPERLINK("http://x","y")'
FORMULA_CUSTOMERS = [CUSTOMERS[0], f'C1,"{HYPERLINK.replace(chr(34), chr(34) * 2)}",ana@example.com,,2023-01-05',
                     "C2,@SUM(1+1),rui@example.com,,2023-06-30", "C3,Eva,eva@example.com,,2023-07-01"]
FORMULA_LINES = [LINES[0], "P1,1,+cmd|' /C calc'!A0,1,10", "P2,1,-2+3,2,10", "P3,1,SKU1,3,10", "P4,1,SKU3,1,40"]

CASES: list[Case] = [
    # the corpus files of tests/data/bad_inputs/, each read as one of the demo's sources
    Case("amounts.csv", "source", "amount spellings: ¥1,234.50, （123.00）, full-width digits, refunds, text",
         _corpus_file("web_orders", "amounts.csv"), counts=(6, 5, 1), reasons=frozenset({"not_a_number"})),
    Case("duplicate_ids.csv", "source", "an order id twice", _corpus_file("web_orders", "duplicate_ids.csv"),
         counts=(3, 2, 1), reasons=frozenset({"duplicate_key"})),
    Case("empty.csv", "source", "a file of zero bytes", _corpus_file("web_signups", "empty.csv"), error=("SourceError", r"empty\.csv.*empty input")),
    Case("excel_serial.xlsx", "source", "Excel day numbers as dates, phones as floats", _corpus_file("call_centre_contacts", "excel_serial.xlsx"),
         counts=(3, 2, 1), reasons=frozenset({"unparsed_date"})),
    Case("extra_columns.csv", "source", "columns the mapping does not name", _corpus_file("web_signups", "extra_columns.csv"), counts=(1, 1, 0)),
    Case("future_dates.csv", "source", "an order after the export date", _corpus_file("web_orders", "future_dates.csv"),
         counts=(2, 1, 1), reasons=frozenset({"future_date"})),
    Case("gb18030.csv", "source", "GB18030 encoding, Chinese headers and date spellings", _corpus_file("store_members", "gb18030.csv"), counts=(2, 2, 0)),
    Case("header_only.csv", "source", "a customer export with a header and no rows", _corpus_file("web_signups", "header_only.csv"), counts=(0, 0, 0)),
    Case("long_strings.csv", "source", "10,000-character values in optional columns", _corpus_file("web_signups", "long_strings.csv"),
         counts=(1, 1, 0), reasons=frozenset({"too_long"})),
    Case("mangled_phones.csv", "source", "a phone turned into 1.38001E+10 by Excel", _corpus_file("web_signups", "mangled_phones.csv"),
         counts=(2, 2, 0), reasons=frozenset({"excel_mangled"})),
    Case("missing_column.csv", "source", "a required column absent", _corpus_file("web_signups", "missing_column.csv"),
         error=("SourceError", r"missing_column\.csv.*signup_time")),
    Case("mixed_time_zones.csv", "source", "one instant written with four offsets", _corpus_file("web_orders", "mixed_time_zones.csv"), counts=(4, 4, 0)),
    Case("semicolon.csv", "source", "semicolons as delimiter", _corpus_file("web_signups", "semicolon.csv"), counts=(2, 2, 0)),
    Case("utf8_bom.csv", "source", "UTF-8 with a byte-order mark", _corpus_file("web_signups", "utf8_bom.csv"), counts=(2, 2, 0)),
    # the cases of issue 17, each planted in a tiny dataset and built whole
    Case("duplicate header", "build", "the phone column renamed `email`: two columns called email",
         _build_case("clientes", files={"clientes.csv": _lines([CUSTOMERS[0].replace("telefone", "email"), *CUSTOMERS[1:]])}),
         error=("SourceError", r"clientes\.csv: source 'clientes': the header names 'email' \(mapped to 'email'\) more than once")),
    Case("mapping typo", "build", "`email: emial` in the dataset file", _build_case("clientes", change=_rename_mapped("clientes", "email", "emial")),
         error=("SourceError", r"clientes\.csv: missing mapped column 'emial' \(for 'email'\) \(did you mean 'email'\?\) in source 'clientes'")),
    Case("header-only fact file", "build", "the orders export holds its header only", _build_case("pedidos", files={"pedidos.csv": _lines(ORDERS[:1])}),
         error=("EmptySourceError", r"pedidos\.csv.*source 'pedidos'.*may_be_empty: true")),
    Case("orphan order lines", "build", "order lines of an order no export holds",
         _build_case("itens", files={"itens.csv": _lines([*LINES, "P9,1,SKU2,1,5"])}), counts=(5, 4, 1), reasons=frozenset({"unknown_order"})),
    Case("1e308 and friends", "build", "amounts 1e308, -1e308, 9999999999999",
         _build_case("pedidos", files={"pedidos.csv": _lines([*ORDERS, "P5,C1,2024-03-02 10:00,1e308", "P6,C2,2024-03-02 10:00,-1e308",
                                                                "P7,C3,2024-03-02 10:00,9999999999999"])}),
         counts=(7, 4, 3), reasons=frozenset({"out_of_range"})),
    Case("1,2,3", "build", "a thousands separator in no valid grouping",
         _build_case("pedidos", files={"pedidos.csv": _lines([*ORDERS, 'P5,C1,2024-03-02 10:00,"1,2,3"', 'P6,C2,2024-03-02 10:00,"1,234"'])},
                     details=_warehouse_values("orders", "order_amount", "order_id")),
         counts=(6, 5, 1), reasons=frozenset({"not_a_number"}),
         details={"orders.order_amount": {"P1": "10.0", "P2": "20.0", "P3": "30.0", "P4": "40.0", "P6": "1234.0"}}),
    Case("1900 dates", "build", "an order on 1900-01-01",
         _build_case("pedidos", files={"pedidos.csv": _lines([*ORDERS, "P5,C1,1900-01-01 00:00,5"])}), counts=(5, 4, 1), reasons=frozenset({"out_of_range"})),
    Case("NUL bytes", "build", "a NUL byte and an escape inside a name",
         _build_case("clientes", files={"clientes.csv": _lines([CUSTOMERS[0], "C1,A\x00na\x1b,ana@example.com,,2023-01-05", *CUSTOMERS[2:]])},
                     details=_warehouse_values("customers", "full_name", "email")),
         counts=(3, 3, 0), details={"customers.full_name": {"ana@example.com": "Ana", "eva@example.com": "Eva", "rui@example.com": "Rui"}}),
    Case("one Latin-1 byte", "build", "`José` written in Latin-1 inside a UTF-8 file",
         _build_case("clientes", files={"clientes.csv": _lines(CUSTOMERS[:3]) + "C3,Jos\xe9,eva@example.com,,2023-07-01\n".encode("latin-1")}),
         counts=(3, 2, 1), reasons=frozenset({"undecodable_bytes"})),
    Case("ragged row", "build", "one order row with an extra field",
         _build_case("pedidos", files={"pedidos.csv": _lines([*ORDERS, "P5,C1,2024-03-02 10:00,5,oops"])}), counts=(5, 4, 1),
         reasons=frozenset({"ragged_row"})),
    Case("second Excel sheet", "build", "orders in a workbook whose second sheet the source does not read", _second_sheet_case,
         counts=(4, 4, 0), details={"rows unread": 2}),
    Case("formula payloads", "build", "names and product ids starting with =, @, +, -",
         _build_case("clientes", files={"clientes.csv": _lines(FORMULA_CUSTOMERS), "itens.csv": _lines(FORMULA_LINES)},
                     details=_formula_payloads_published),
         counts=(3, 3, 0), details={"formula-like values kept in the warehouse": 4, "unquoted formula cells in CSV": []}),
    Case("DST-gap times", "build", "an order at 01:30 on the night Lisbon skips from 01:00 to 02:00",
         _build_case("pedidos", files={"pedidos.csv": _lines([*ORDERS, "P5,C1,2024-03-31 01:30,5"])},
                     details=_warehouse_values("orders", "order_time", "order_id")),
         counts=(5, 5, 0), details={"orders.order_time": {"P1": "2024-02-13 10:00:00", "P2": "2024-02-15 11:00:00", "P3": "2024-02-28 12:00:00",
                                                          "P4": "2024-03-01 09:00:00", "P5": "2024-03-31 02:30:00"}}),
]


def markdown_table(outcomes: list[tuple[Case, Outcome]]) -> str:
    """The outcome table: case, kind, rows in, clean, quarantined, outcome, and whether it is the expected one."""
    lines = ["| case | kind | rows in | clean | quarantined | outcome | as expected |", "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for case, outcome in outcomes:
        cells = [case.name, case.kind, *("" if n is None else f"{n:,}" for n in (outcome.rows_in, outcome.rows_clean, outcome.rows_quarantined)),
                 outcome.summary.replace("|", "\\|"), "yes" if not problems(case, outcome) else "**no**"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    """Run every case in a temporary folder and print the outcome table; exit 1 when one is not as expected."""
    import os

    outcomes = []
    with tempfile.TemporaryDirectory(prefix="bad_inputs_") as folder:
        os.environ.setdefault("CRM_ANALYTICS_HOME", folder)  # nothing is written into the project
        for index, case in enumerate(CASES):
            outcomes.append((case, run_case(case, Path(folder) / f"case{index}")))
    print(f"{len(CASES)} cases\n")
    print(markdown_table(outcomes))
    return 0 if all(not problems(case, outcome) for case, outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

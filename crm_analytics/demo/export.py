"""Deterministic writers: CSV (UTF-8, UTF-8 with BOM, GB18030), Parquet, a minimal .xlsx, JSON.

The same inputs give byte-identical files: Parquet carries no timestamps, the
workbook's document properties and zip entries have fixed dates, JSON keys
are sorted.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

CSV_CHUNK_ROWS = 500_000
FIXED_ZIP_TIME = (2000, 1, 1, 0, 0, 0)
FIXED_DOC_TIME = "2000-01-01T00:00:00Z"


def write_csv(path: Path, columns: dict[str, pa.Array], *, encoding: str = "utf-8", bom: bool = False) -> int:
    """Write a CSV with an unquoted header; text values are quoted, numbers not. Returns the row count."""
    table = pa.table(columns)
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    with open(path, "wb") as handle:
        if bom:
            handle.write("\ufeff".encode("utf-8"))
        handle.write((",".join(table.column_names) + "\n").encode(encoding))
        for start in range(0, table.num_rows, CSV_CHUNK_ROWS):
            buffer = io.BytesIO()
            pa_csv.write_csv(table.slice(start, CSV_CHUNK_ROWS), buffer, options)
            data = buffer.getvalue()
            handle.write(data if encoding == "utf-8" else data.decode("utf-8").encode(encoding))
    return table.num_rows


def write_parquet(path: Path, tables: pa.Table | Iterable[pa.Table], *, unique_columns: Iterable[str] = ()) -> int:
    """Write one table, or an iterable of tables with the same schema as row groups. Returns the row count.

    ``unique_columns`` (identifiers) are stored without dictionary encoding, which would not pay off.
    """
    unique = set(unique_columns)
    if isinstance(tables, pa.Table):
        tables = [tables]
    writer, rows = None, 0
    try:
        for table in tables:
            if writer is None:
                dictionary = [c for c in table.column_names if c not in unique]
                writer = pq.ParquetWriter(path, table.schema, compression="snappy", use_dictionary=dictionary, store_schema=False)
            writer.write_table(table, row_group_size=1_000_000)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return rows


def _xml_text(values: pa.Array) -> pa.Array:
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        values = pc.replace_substring(values, char, entity)
    return values


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _cells(letter: str, row_numbers: pa.Array, values: pa.Array | tuple[pa.Array, np.ndarray]) -> pa.Array:
    """XML of one column's cells: inline strings, numbers where a number is given, nothing for nulls."""
    if isinstance(values, tuple):
        text, numbers = values
    else:
        text, numbers = values, np.full(len(values), np.nan)
    reference = pc.binary_join_element_wise(letter, row_numbers, "")
    as_text = pc.binary_join_element_wise('<c r="', reference, '" t="inlineStr"><is><t xml:space="preserve">',
                                          _xml_text(text.cast(pa.string())), "</t></is></c>", "")
    number_text = pc.cast(pa.array(np.nan_to_num(numbers)), pa.string())
    as_number = pc.binary_join_element_wise('<c r="', reference, '"><v>', number_text, "</v></c>", "")
    cells = pc.if_else(pa.array(~np.isnan(numbers)), as_number, as_text)
    return cells.fill_null("")


_CONTENT_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/><Override PartName="/docProps/core.xml" ContentType="application/vnd.openxmlformats-package.core-properties+xml"/><Override PartName="/docProps/app.xml" ContentType="application/vnd.openxmlformats-officedocument.extended-properties+xml"/></Types>"""
_ROOT_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties" Target="docProps/core.xml"/><Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/extended-properties" Target="docProps/app.xml"/></Relationships>"""
_WORKBOOK = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="{sheet}" sheetId="1" r:id="rId1"/></sheets></workbook>"""
_WORKBOOK_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>"""
_STYLES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts><fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills><borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders><cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs><cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs><cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>"""
_CORE = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><dc:creator>crm-analytics demo</dc:creator><dcterms:created xsi:type="dcterms:W3CDTF">{FIXED_DOC_TIME}</dcterms:created><dcterms:modified xsi:type="dcterms:W3CDTF">{FIXED_DOC_TIME}</dcterms:modified></cp:coreProperties>"""
_APP = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties"><Application>crm-analytics</Application></Properties>"""


def write_xlsx(path: Path, sheet: str, columns: dict[str, pa.Array | tuple[pa.Array, np.ndarray]]) -> int:
    """Write a one-sheet workbook with a header row; returns the data row count.

    A column is text, or a (text, numbers) pair whose non-NaN numbers are
    written as numeric cells (e.g. Excel serial dates) and the rest as text.
    """
    names = list(columns)
    first = next(iter(columns.values()))
    n = len(first[0] if isinstance(first, tuple) else first)
    row_numbers = pc.cast(pa.array(np.arange(2, n + 2)), pa.string())
    header = "".join(
        f'<c r="{_column_letter(i)}1" t="inlineStr"><is><t>{name}</t></is></c>' for i, name in enumerate(names)
    )
    cells = [_cells(_column_letter(i), row_numbers, columns[name]) for i, name in enumerate(names)]
    rows = pc.binary_join_element_wise('<row r="', row_numbers, '">', *cells, "</row>", "")
    body = io.BytesIO()
    body.write(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>')
    body.write(f'<row r="1">{header}</row>'.encode("utf-8"))
    for chunk in rows.cast(pa.large_string()).chunks if isinstance(rows, pa.ChunkedArray) else [rows.cast(pa.large_string())]:
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[chunk.offset: chunk.offset + len(chunk) + 1]
        body.write(memoryview(chunk.buffers()[2])[offsets[0]: offsets[-1]])
    body.write(b"</sheetData></worksheet>")
    parts = {
        "[Content_Types].xml": _CONTENT_TYPES.encode(),
        "_rels/.rels": _ROOT_RELS.encode(),
        "docProps/app.xml": _APP.encode(),
        "docProps/core.xml": _CORE.encode(),
        "xl/workbook.xml": _WORKBOOK.format(sheet=sheet).encode(),
        "xl/_rels/workbook.xml.rels": _WORKBOOK_RELS.encode(),
        "xl/styles.xml": _STYLES.encode(),
        "xl/worksheets/sheet1.xml": body.getvalue(),
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return n


def write_json(path: Path, document: object) -> None:
    """Pretty, key-sorted, UTF-8 JSON."""
    path.write_text(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

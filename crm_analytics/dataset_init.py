"""Start a dataset from its files: read a sample of each, propose a mapping, write a dataset file to confirm.

``crm-analytics init-dataset NAME --from PATH...`` calls :func:`init_dataset`. For each file it reads
the header and a sample of rows (CSV with the encoding and delimiter detection of
:mod:`crm_analytics.sources`, every sheet of an Excel workbook, Parquet), then

1. profiles every column's values (:func:`profile_column`): dates and their ``strftime`` format,
   integers, amounts with a decimal point or a decimal comma, e-mails, phones, identifiers, text;
2. gives columns a role (invoice, customer, product, quantity, unit price, date, ...) from their
   names, in English, Portuguese and Chinese (:data:`ROLE_SYNONYMS`), checked against the value shape;
   e-mails, phones and dates are also recognised by their values alone;
3. proposes how the canonical tables derive from the file (:func:`propose`): a line-level sales sheet
   (invoice, product, quantity, price, customer, date) gives orders, order_items, customers and
   products; an order list gives orders (and customers); a customer list gives customers; a product
   list gives products. Every table is a ``query:`` source over the file registered as an input.

The file is written with comments saying what was found and what to check (:func:`render_dataset_file`).
The time zone, currency and country are never guessed: unless given, they are written ``TODO`` and the
dataset loader refuses the file until they are set.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd

from crm_analytics import datasets, paths, sources

SAMPLE_ROWS = 2_000
MIN_SHARE = 0.9  # share of non-empty sample values that must fit a shape for a column to have it
LINES_INPUT = "lines"

# Role -> column-name synonyms (compared after lower-casing, removing accents and punctuation).
ROLE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "invoice": ("invoice", "invoice no", "invoice number", "invoice id", "order", "order id", "order no", "order number",
                "receipt", "transaction id", "pedido", "id pedido", "numero pedido", "nota fiscal", "fatura",
                "订单", "订单号", "订单编号", "单号", "发票号"),
    "customer": ("customer", "customer id", "customer no", "customer number", "customer unique id", "client", "client id",
                 "member", "member id", "user id", "buyer", "buyer id", "cliente", "id cliente", "codigo cliente",
                 "comprador", "会员", "会员id", "会员号", "客户", "客户id", "客户编号", "用户id", "买家"),
    "product": ("product", "product id", "product code", "stockcode", "stock code", "sku", "item", "item id", "item code",
                "article", "produto", "id produto", "codigo produto", "商品", "商品id", "商品编号", "产品", "产品编号", "货号"),
    "description": ("description", "product name", "item name", "item description", "title", "descricao",
                    "nome produto", "nome do produto", "商品名称", "产品名称", "品名", "描述"),
    "quantity": ("quantity", "qty", "units", "quantidade", "qtd", "qtde", "数量", "件数"),
    "unit_price": ("price", "unit price", "unitprice", "price each", "preco", "preco unitario", "valor unitario",
                   "价格", "单价"),
    "amount": ("amount", "total", "order amount", "order total", "total amount", "revenue", "sales", "value", "payment value",
               "valor", "valor total", "total pedido", "valor pedido", "金额", "总额", "总金额", "订单金额", "实付金额", "支付金额"),
    "date": ("date", "invoice date", "invoicedate", "order date", "order time", "purchase date", "datetime", "timestamp",
             "created at", "data", "data pedido", "data compra", "data da compra", "日期", "时间", "下单时间", "订单日期",
             "购买时间", "支付时间"),
    "signup": ("signup", "signup date", "signup time", "registration date", "registered at", "member since",
               "data cadastro", "data de cadastro", "注册时间", "注册日期"),
    "country": ("country", "pais", "国家"),
    "province": ("state", "province", "region", "estado", "uf", "省", "省份"),
    "city": ("city", "cidade", "城市"),
    "email": ("email", "e mail", "mail", "email address", "邮箱", "电子邮件"),
    "phone": ("phone", "telephone", "mobile", "phone number", "telefone", "celular", "电话", "手机", "手机号"),
    "name": ("name", "customer name", "full name", "nome", "nome cliente", "姓名", "客户姓名"),
    "category": ("category", "product category", "categoria", "类别", "品类", "分类"),
    "channel": ("channel", "sales channel", "canal", "渠道"),
}
# What each role's values must look like (a name match with the wrong shape is not taken).
ROLE_SHAPES: dict[str, tuple[str, ...]] = {
    "invoice": ("id", "integer", "text"),
    "customer": ("id", "integer", "text", "email"),
    "product": ("id", "integer", "text"),
    "description": ("text", "id"),
    "quantity": ("integer",),
    "unit_price": ("decimal", "integer"),
    "amount": ("decimal", "integer"),
    "date": ("date",),
    "signup": ("date",),
    "country": ("text", "id"),
    "province": ("text", "id"),
    "city": ("text", "id"),
    "email": ("email",),
    "phone": ("phone", "integer", "id"),
    "name": ("text",),
    "category": ("text", "id"),
    "channel": ("text", "id"),
}
SHAPE_ONLY_ROLES = {"email": "email", "phone": "phone", "date": "date"}  # roles found from values when no name matches

# strftime formats tried on date-like text, most specific first; the first that reads the sample wins.
DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
    "%Y/%m/%d", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y",
    "%d.%m.%Y %H:%M", "%d.%m.%Y", "%d-%m-%Y %H:%M", "%d-%m-%Y", "%Y%m%d",
)
ISO_FORMATS = {"%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"}

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_PHONE = re.compile(r"^\+?[\d\s\-().]{7,20}$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL_POINT = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?$")
_DECIMAL_COMMA = re.compile(r"^[+-]?(\d{1,3}(\.\d{3})+|\d+)(,\d+)?$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-./]*$")


class InitError(ValueError):
    """A file cannot be read or the dataset file cannot be written; the message names the file."""


@dataclasses.dataclass(frozen=True)
class ColumnProfile:
    """What the sample of one column looks like.

    Attributes
    ----------
    name : str
        The column as the file names it.
    shape : str
        ``date``, ``integer``, ``decimal``, ``email``, ``phone``, ``id``, ``text`` or ``empty``.
    non_empty : int
        Non-empty values in the sample.
    date_format : str or None
        ``strftime`` format of a ``date`` column; ``None`` when its values are typed dates.
    day_first_ambiguous : bool
        Both day-first and month-first formats read every value (no day above 12 in the sample).
    decimal_comma : bool
        A ``decimal`` column writes its decimals after a comma (``12,50``).
    example : str
        One value of the sample (for the comments of the dataset file).
    """

    name: str
    shape: str
    non_empty: int
    date_format: str | None = None
    day_first_ambiguous: bool = False
    decimal_comma: bool = False
    example: str = ""


@dataclasses.dataclass(frozen=True)
class InputSample:
    """The sample of one input: a CSV or Parquet file, or one sheet (or all same-header sheets) of a workbook."""

    name: str
    path: Path
    format: str
    columns: tuple[ColumnProfile, ...]
    rows: int
    sheet: str | None = None
    encoding: str | None = None
    delimiter: str | None = None

    def column(self, name: str) -> ColumnProfile:
        """Return the profile of the column ``name``."""
        return next(c for c in self.columns if c.name == name)


@dataclasses.dataclass(frozen=True)
class Proposal:
    """The proposed ``inputs:`` and ``sources:`` of a dataset, with the notes written above them."""

    inputs: dict[str, dict]
    sources: dict[str, dict]
    roles: dict[str, dict[str, str]]  # input -> role -> column
    notes: list[str]


# ----------------------------------------------------------------------------- names and values


def normalise_header(header: str) -> str:
    """Lower-case, accents removed, punctuation and ``_`` as single spaces (Chinese characters kept)."""
    text = "".join(c for c in unicodedata.normalize("NFKD", str(header)) if not unicodedata.combining(c))
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)  # CustomerID -> Customer ID
    return " ".join(re.sub(r"[^\w]+|_", " ", text.lower()).split())


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in str(text))


def role_score(header: str, role: str) -> float:
    """How well a column name says ``role``: 1 an exact synonym, 0.8 a synonym as whole words, 0 none."""
    name = normalise_header(header)
    compact = name.replace(" ", "")
    best = 0.0
    for synonym in ROLE_SYNONYMS[role]:
        if name == synonym or compact == synonym.replace(" ", ""):
            return 1.0
        if _has_cjk(synonym) and synonym in compact:
            best = max(best, 0.8)
        elif re.search(rf"(^| ){re.escape(synonym)}( |$)", name):
            best = max(best, 0.8 if " " in synonym or len(name.split()) <= 2 else 0.6)
    return best


def _texts(values: Iterable) -> list[str]:
    return [str(v).strip() for v in values if v is not None and not (isinstance(v, float) and pd.isna(v)) and str(v).strip() not in ("", "nan", "NaN", "<NA>", "None")]


def _share(texts: Sequence[str], test) -> float:
    return sum(1 for t in texts if test(t)) / len(texts) if texts else 0.0


def date_format_of(texts: Sequence[str]) -> tuple[str | None, bool]:
    """Return ``(format, day_first_ambiguous)``: the first of :data:`DATE_FORMATS` that reads the values."""
    def reads(fmt: str) -> float:
        def ok(text: str) -> bool:
            try:
                datetime.strptime(text, fmt)
            except ValueError:
                return False
            return True

        return _share(texts, ok)

    for fmt in DATE_FORMATS:
        if reads(fmt) >= MIN_SHARE:
            swapped = fmt.replace("%d/%m", "%m/%d") if "%d/%m" in fmt else fmt.replace("%m/%d", "%d/%m")
            ambiguous = swapped != fmt and reads(swapped) >= MIN_SHARE
            return fmt, ambiguous
    return None, False


def profile_column(name: str, values: pd.Series) -> ColumnProfile:
    """Profile one column of a sample (typed values from Parquet, text from CSV and Excel)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return ColumnProfile(name, "date", int(values.notna().sum()), example=str(values.dropna().iloc[0]) if values.notna().any() else "")
    texts = _texts(values.tolist())
    if not texts:
        return ColumnProfile(name, "empty", 0)
    example = texts[0]
    common = {"name": name, "non_empty": len(texts), "example": example}
    if pd.api.types.is_integer_dtype(values.dtype) or _share(texts, _INTEGER.match) >= MIN_SHARE:
        if _share(texts, lambda t: len(t) == 8) >= MIN_SHARE and date_format_of(texts)[0] == "%Y%m%d":
            return ColumnProfile(shape="date", date_format="%Y%m%d", **common)
        if _share(texts, lambda t: t.startswith(("+", "0")) and len(t) >= 8) < MIN_SHARE:
            return ColumnProfile(shape="integer", **common)
    fmt, ambiguous = date_format_of(texts)
    if fmt:
        return ColumnProfile(shape="date", date_format=fmt, day_first_ambiguous=ambiguous, **common)
    if pd.api.types.is_float_dtype(values.dtype):
        return ColumnProfile(shape="decimal", **common)
    point, comma = _share(texts, _DECIMAL_POINT.match), _share(texts, _DECIMAL_COMMA.match)
    if max(point, comma) >= MIN_SHARE:
        with_comma = sum(1 for t in texts if "," in t and _DECIMAL_COMMA.match(t) and not _DECIMAL_POINT.match(t))
        with_point = sum(1 for t in texts if "." in t and _DECIMAL_POINT.match(t) and not _DECIMAL_COMMA.match(t))
        return ColumnProfile(shape="decimal", decimal_comma=with_comma > with_point, **common)
    if _share(texts, _EMAIL.match) >= MIN_SHARE:
        return ColumnProfile(shape="email", **common)
    if _share(texts, _PHONE.match) >= MIN_SHARE and _share(texts, lambda t: sum(c.isdigit() for c in t) >= 7) >= MIN_SHARE:
        return ColumnProfile(shape="phone", **common)
    if _share(texts, lambda t: bool(_ID.match(t)) and len(t) <= 40) >= MIN_SHARE:
        return ColumnProfile(shape="id", **common)
    return ColumnProfile(shape="text", **common)


def assign_roles(columns: Sequence[ColumnProfile]) -> dict[str, str]:
    """Return ``{role: column}``: for each role the best-named column whose values fit, each column used once.

    Roles are taken in order of the strength of their best name match; e-mails, phones and dates
    are also recognised from their values when no column is named for them.
    """
    candidates = []
    for role in ROLE_SYNONYMS:
        for column in columns:
            score = role_score(column.name, role)
            if score > 0 and column.shape in ROLE_SHAPES[role]:
                candidates.append((score, role, column.name))
    taken: dict[str, str] = {}
    used: set[str] = set()
    for score, role, column in sorted(candidates, key=lambda c: (-c[0], list(ROLE_SYNONYMS).index(c[1]))):
        if role not in taken and column not in used:
            taken[role] = column
            used.add(column)
    for role, shape in SHAPE_ONLY_ROLES.items():
        if role not in taken:
            match = next((c.name for c in columns if c.shape == shape and c.name not in used), None)
            if match:
                taken[role] = match
                used.add(match)
    return taken


# ----------------------------------------------------------------------------- reading samples


def _input_name(path: Path, sheet: str | None = None) -> str:
    stem = path.stem if sheet is None else f"{path.stem}_{sheet}"
    name = re.sub(r"[^A-Za-z0-9_]+", "_", unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()).strip("_").lower()
    return name if name and not name[0].isdigit() else f"input_{name}"


def _profiles(frame: pd.DataFrame) -> tuple[ColumnProfile, ...]:
    return tuple(profile_column(str(c), frame[c]) for c in frame.columns)


def read_samples(path: str | Path, *, rows: int = SAMPLE_ROWS) -> list[InputSample]:
    """Read the header and the first ``rows`` rows of one file: one sample per CSV or Parquet file, per
    workbook sheet (sheets sharing one header become one sample with ``sheet="all"``).

    Raises :class:`InitError` for a missing file or a format that is not CSV, Excel or Parquet.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise InitError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        return [_csv_sample(path, rows)]
    if suffix in (".xlsx", ".xlsm", ".xls", ".ods"):
        return _excel_samples(path, rows)
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        frame = pq.ParquetFile(path).iter_batches(batch_size=rows).__next__().to_pandas()
        return [InputSample(_input_name(path), path, "parquet", _profiles(frame), len(frame))]
    raise InitError(f"{path}: unknown file type {suffix!r}; give CSV (.csv, .txt, .tsv), Excel (.xlsx, .xls) or Parquet (.parquet)")


def _csv_sample(path: Path, rows: int) -> InputSample:
    try:
        encoding = sources.detect_encoding(path)
    except sources.SourceError as error:
        raise InitError(str(error)) from None
    with open(path, encoding=encoding, newline="") as handle:
        head = [handle.readline() for _ in range(20)]
    if not head[0].strip():
        raise InitError(f"{path}: empty file (no header line)")
    try:
        delimiter = csv.Sniffer().sniff("".join(head), delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = sources._sniff_delimiter(head[0].rstrip("\r\n"), [])
    frame = pd.read_csv(path, encoding=encoding, sep=delimiter, dtype=str, keep_default_na=False, nrows=rows)
    frame.columns = [str(c).strip() for c in frame.columns]
    return InputSample(_input_name(path), path, "csv", _profiles(frame), len(frame), encoding=encoding, delimiter=delimiter)


def _excel_samples(path: Path, rows: int) -> list[InputSample]:
    try:
        sheets = pd.read_excel(path, sheet_name=None, nrows=rows, dtype=object, engine="calamine")
    except Exception as error:  # noqa: BLE001 - any reader failure is the user's file
        raise InitError(f"{path}: cannot read as a workbook: {error}") from None
    texts = {str(name): sources._excel_text(frame) for name, frame in sheets.items() if not frame.empty}
    if not texts:
        raise InitError(f"{path}: every sheet is empty")
    headers = {name: tuple(frame.columns) for name, frame in texts.items()}
    if len(texts) > 1 and len(set(headers.values())) == 1:
        stacked = pd.concat(list(texts.values()), ignore_index=True)
        return [InputSample(_input_name(path), path, "excel", _profiles(stacked), len(stacked), sheet=sources.ALL_SHEETS)]
    return [
        InputSample(_input_name(path, name if len(texts) > 1 else None), path, "excel", _profiles(frame), len(frame), sheet=name)
        for name, frame in texts.items()
    ]


# ----------------------------------------------------------------------------- the proposal


def kind_of(roles: Mapping[str, str]) -> str:
    """What an input holds, from its roles: ``sales_lines``, ``orders``, ``customers``, ``products`` or ``unknown``."""
    has = set(roles)
    if {"invoice", "product", "quantity", "customer", "date"} <= has and has & {"unit_price", "amount"}:
        return "sales_lines"
    if {"customer", "date", "amount"} <= has:
        return "orders"
    if "customer" in has and has & {"email", "phone", "name", "signup", "city", "province", "country"}:
        return "customers"
    if "product" in has and has & {"description", "category", "unit_price"}:
        return "products"
    return "unknown"


def _q(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _number_sql(profile: ColumnProfile, *, as_text: bool) -> str:
    """SQL reading an amount column: a decimal comma becomes a point; ``as_text`` leaves it for the cleansing to parse."""
    column = _q(profile.name)
    if profile.shape == "decimal" and profile.decimal_comma:
        column = f"replace(replace({column}, '.', ''), ',', '.')"
    return column if as_text else f"TRY_CAST({column} AS DOUBLE)"


def _time_sql(profile: ColumnProfile) -> str:
    """SQL turning a date column into a TIMESTAMP (typed dates as they are, text through its format).

    ``TRY_`` forms: a value that does not read becomes missing, so its order is quarantined as a row
    (with its file and row) instead of failing the whole query.
    """
    column = _q(profile.name)
    if profile.date_format is None or profile.date_format in ISO_FORMATS:
        return f"TRY_CAST({column} AS TIMESTAMP)"
    return f"try_strptime({column}, '{profile.date_format}')"


_LINEAGE_FIRST = ("arg_min(_source_file, (_source_file, _source_row)) AS _source_file, "
                  "arg_min(_source_row, (_source_file, _source_row)) AS _source_row")


def _sales_lines(sample: InputSample, roles: Mapping[str, str], dataset: str) -> tuple[dict, dict]:
    """Inputs and sources deriving orders, order_items, customers and products from invoice lines."""
    col = sample.column
    price = (f"{_number_sql(col(roles['unit_price']), as_text=False)} AS unit_price" if "unit_price" in roles
             else f"{_number_sql(col(roles['amount']), as_text=False)} / nullif(TRY_CAST({_q(roles['quantity'])} AS DOUBLE), 0) AS unit_price")
    selected = [
        f"CAST({_q(roles['invoice'])} AS VARCHAR) AS invoice",
        f"CAST({_q(roles['product'])} AS VARCHAR) AS product",
        f"{_q(roles['description'])} AS description" if "description" in roles else "NULL AS description",
        f"TRY_CAST({_q(roles['quantity'])} AS BIGINT) AS quantity",
        price,
        f"CAST({_q(roles['customer'])} AS VARCHAR) AS customer",
        f"{_time_sql(col(roles['date']))} AS line_time",
        *([f"{_q(roles['country'])} AS country"] if "country" in roles else []),
        "_source_file", "_source_row",
    ]
    inputs = {LINES_INPUT: {"format": "query", "query": "SELECT " + ",\n       ".join(selected) + f"\nFROM {sample.name}\n"}}
    country = ",\n       arg_min(country, (line_time, _source_file, _source_row)) AS country" if "country" in roles else ""
    sources_ = {
        "customers": {
            "table": "customers",
            "query": ("SELECT customer AS customer_id, customer AS person_key, min(line_time) AS signup_time"
                      f"{country},\n       {_LINEAGE_FIRST}\nFROM {LINES_INPUT}\nWHERE customer IS NOT NULL\nGROUP BY customer\n"),
            "constants": {"source": dataset, "acquisition_channel": "unknown"},
        },
        "orders": {
            "table": "orders",
            "query": ("SELECT invoice AS order_id, any_value(customer) AS customer_id, min(line_time) AS order_time,\n"
                      "       round(sum(quantity * unit_price), 2) AS order_amount, bool_and(quantity < 0) AS is_refund,\n"
                      f"       {_LINEAGE_FIRST}\nFROM {LINES_INPUT}\nGROUP BY invoice\n"),
            "constants": {"channel": "unknown", "source": dataset},
        },
        "order_items": {
            "table": "order_items",
            "query": ("SELECT invoice AS order_id, row_number() OVER (PARTITION BY invoice ORDER BY _source_file, _source_row) AS line_number,\n"
                      "       product AS product_id, quantity, unit_price AS unit_price_amount, _source_file, _source_row\n"
                      f"FROM {LINES_INPUT}\nWHERE quantity > 0\n"),  # lines of orders without a customer stay (anonymous orders)
        },
        "products": {
            "table": "products",
            "query": ("SELECT product AS product_id, coalesce(mode(description), product) AS product_name, 'unknown' AS category,\n"
                      "       coalesce(mode(unit_price) FILTER (WHERE unit_price > 0), 0) AS list_price_amount,\n"
                      f"       {_LINEAGE_FIRST}\nFROM {LINES_INPUT}\nGROUP BY product\n"),
        },
    }
    return inputs, sources_


# canonical column -> role, per table mapped row by row (an order list, a customer list, a product list)
_MAPPED_COLUMNS = {
    "orders": {"order_id": "invoice", "customer_id": "customer", "order_time": "date", "order_amount": "amount", "channel": "channel"},
    "customers": {"customer_id": "customer", "full_name": "name", "email": "email", "phone": "phone", "city": "city",
                  "province": "province", "country": "country", "signup_time": "signup"},
    "products": {"product_id": "product", "product_name": "description", "category": "category", "list_price_amount": "unit_price"},
}
_CONSTANTS = {"orders": {"channel": "unknown"}, "customers": {"acquisition_channel": "unknown"}, "products": {"category": "unknown"}}


def _mapped_table(table: str, sample: InputSample, roles: Mapping[str, str], dataset: str) -> tuple[dict, list[str]]:
    """A source selecting the columns of ``sample`` onto ``table``; notes name the required columns not found."""
    from crm_analytics import schema

    contract = schema.get_table(table)
    selected, formats, notes = [], set(), []
    for canonical, role in _MAPPED_COLUMNS[table].items():
        if role not in roles:
            continue
        profile = sample.column(roles[role])
        if canonical.endswith("_amount"):
            selected.append(f"{_number_sql(profile, as_text=True)} AS {canonical}")
        else:
            selected.append(f"{_q(profile.name)} AS {canonical}")
            if profile.date_format:
                formats.add(profile.date_format)
    mapped = {item.rsplit(" AS ", 1)[1] for item in selected}
    constants = {k: v for k, v in _CONSTANTS.get(table, {}).items() if k not in mapped}
    if "source" in contract.column_names:
        constants["source"] = dataset
    have = mapped | set(constants)
    if table == "orders" and "order_id" not in have:
        selected.insert(0, "CAST(_source_row AS VARCHAR) AS order_id")
        notes.append(f"{sample.name}: no order number found; order_id is the row number (check)")
        have.add("order_id")
    if table == "customers" and "signup_time" not in have and "date" in roles:
        selected.append(f"{_q(roles['date'])} AS signup_time")
        formats.update({sample.column(roles["date"]).date_format} - {None})
        have.add("signup_time")
    for missing in [c for c in contract.required_columns if c not in have]:
        notes.append(f"TODO {table}: no column found for the required `{missing}`; add it to the query of `{table}`")
    spec = {"table": table, "query": f"SELECT {', '.join(selected)}, _source_file, _source_row\nFROM {sample.name}\n"}
    if formats:
        spec["date_formats"] = sorted(formats)
    if constants:
        spec["constants"] = constants
    return spec, notes


def _input_spec(sample: InputSample, data_dir: Path) -> dict:
    spec: dict = {"path": _relative(sample.path, data_dir), "format": sample.format}
    if sample.sheet is not None:
        spec["sheet"] = sample.sheet
    if sample.format == "csv":
        spec["encoding"] = sample.encoding
        spec["delimiter"] = sample.delimiter
    return spec


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def propose(samples: Sequence[InputSample], *, dataset: str, data_dir: Path) -> Proposal:
    """Propose the ``inputs:`` and ``sources:`` of a dataset from the samples of its files.

    A canonical table already derived from an earlier file is not proposed again (a note says so).
    """
    inputs: dict[str, dict] = {}
    found: dict[str, dict] = {}
    roles_by_input: dict[str, dict[str, str]] = {}
    notes: list[str] = []
    for sample in samples:
        inputs[sample.name] = _input_spec(sample, data_dir)
        roles = assign_roles(sample.columns)
        roles_by_input[sample.name] = roles
        kind = kind_of(roles)
        proposed: dict[str, dict] = {}
        if kind == "sales_lines":
            extra_inputs, proposed = _sales_lines(sample, roles, dataset)
            inputs.update(extra_inputs)
            if sample.sheet == sources.ALL_SHEETS:
                notes.append(f"{sample.name}: the workbook's sheets share one header and are read as one table; if they overlap "
                             "(yearly exports often repeat days), drop the repeated lines in `lines` "
                             "(see parameters/datasets/online_retail_ii.yaml)")
        elif kind == "orders":
            proposed["orders"], more = _mapped_table("orders", sample, roles, dataset)
            notes += more
        elif kind in ("customers", "products"):
            proposed[kind], more = _mapped_table(kind, sample, roles, dataset)
            notes += more
        else:
            notes.append(f"{sample.name}: not recognised as sales lines, orders, customers or products; map it by hand")
        for table, spec in proposed.items():
            if table in found:
                notes.append(f"{sample.name}: `{table}` is already derived from an earlier file; not proposed again")
            else:
                found[table] = spec
        for column in sample.columns:
            if column.day_first_ambiguous:
                notes.append(f"{sample.name}.{column.name}: dates such as {column.example!r} read day-first and month-first; "
                             f"{column.date_format!r} was taken, check it")
    return Proposal(inputs=inputs, sources=found, roles=roles_by_input, notes=notes)


# ----------------------------------------------------------------------------- writing the file


def _scalar(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)


def _block(spec: Mapping, indent: int) -> list[str]:
    pad = " " * indent
    lines = []
    for key, value in spec.items():
        if key == "query":
            lines.append(f"{pad}query: |")
            lines += [f"{pad}  {line}" if line else "" for line in str(value).rstrip("\n").splitlines()]
        elif isinstance(value, Mapping):
            lines.append(f"{pad}{key}:")
            lines += _block(value, indent + 2)
        elif isinstance(value, (list, tuple)):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def _describe_sample(sample: InputSample, roles: Mapping[str, str]) -> list[str]:
    where = f"{sample.path.name}" + (f", sheet {sample.sheet}" if sample.sheet else "")
    read = f"; encoding {sample.encoding}, delimiter {sample.delimiter!r}" if sample.format == "csv" else ""
    lines = [f"# {sample.name}: {where} ({sample.rows:,} sample rows{read}); read as {kind_of(roles).replace('_', ' ')}"]
    by_column = {column: role for role, column in roles.items()}
    for column in sample.columns:
        shape = column.shape + (f" {column.date_format}" if column.date_format else "") + (" (decimal comma)" if column.decimal_comma else "")
        role = by_column.get(column.name, "not used")
        lines.append(f"#   {column.name!r:<28} {shape:<26} -> {role}   e.g. {column.example[:30]!r}")
    return lines


def locale_for(country: str) -> str:
    """A Babel locale for ``country``: ``en_<country>`` when Babel has it, else the country's first official language."""
    import babel
    from babel.languages import get_official_languages

    for language in ("en", *get_official_languages(country, de_facto=True)):
        try:
            babel.Locale.parse(f"{language}_{country}")
        except (ValueError, babel.UnknownLocaleError):
            continue
        return f"{language}_{country}"
    return "en"


def render_dataset_file(
    name: str,
    samples: Sequence[InputSample],
    proposal: Proposal,
    *,
    data_dir: str,
    time_zone: str | None = None,
    currency: str | None = None,
    country: str | None = None,
) -> str:
    """Return the text of ``parameters/datasets/<name>.yaml``: keys, the proposed inputs and sources, comments."""
    todo = datasets.TODO
    lines = [
        f"# Dataset {name!r}, proposed by `crm-analytics init-dataset` from {', '.join(sorted({s.path.name for s in samples}))}.",
        "# Check every line, then run `crm-analytics check-dataset " + name + "` and `crm-analytics build-warehouse --dataset " + name + "`.",
        "# Keys: see crm_analytics/datasets.py; sources and queries: see crm_analytics/sources.py.",
        "#",
        "# What the sample showed (column, shape, role):",
    ]
    for sample in samples:
        lines += _describe_sample(sample, proposal.roles.get(sample.name, {}))
    if proposal.notes:
        lines += ["#", "# To check:"] + [f"#   - {note}" for note in proposal.notes]
    lines += [
        "",
        f"description: {_scalar(f'{name} (proposed from its files; describe it here)')}",
        f"data_dir: {_scalar(data_dir)}",
        f"time_zone: {time_zone or todo}" + ("" if time_zone else "            # the business time zone, an IANA name such as Europe/London"),
        f"currency: {currency or todo}" + ("" if currency else "             # ISO 4217 code of the amounts, such as GBP, BRL, USD"),
        f"country: {country or todo}" + ("" if country else "              # ISO 3166 alpha-2 code of the business (phones, holidays), such as GB"),
        *([f"locale: {locale_for(country)}              # how numbers and money are written for people"] if country else []),
        "languages: [en]                # languages of the free text (descriptions, comments)",
        "calendar_events: {}            # yearly days that move sales, e.g. {black_friday: 11-29}",
        "non_merchandise_codes: []      # product ids that are not merchandise (postage, fees, discounts)",
        "",
        "# Inputs: the files, each registered under its name for the queries below.",
        "inputs:",
    ]
    for input_name, spec in proposal.inputs.items():
        lines.append(f"  {input_name}:")
        lines += _block(spec, 4)
    lines += ["", "# Sources: one query per canonical table over the inputs (DuckDB SQL); keep _source_file and _source_row.", "sources:"]
    if not proposal.sources:
        lines.append("  {}  # TODO: no canonical table was recognised; map the files by hand")
    for source_name, spec in proposal.sources.items():
        lines.append(f"  {source_name}:")
        lines += _block(spec, 4)
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def init_dataset(
    name: str,
    files: Sequence[str | Path],
    *,
    time_zone: str | None = None,
    currency: str | None = None,
    country: str | None = None,
    force: bool = False,
    datasets_dir: str | Path | None = None,
    sample_rows: int = SAMPLE_ROWS,
) -> Path:
    """Write ``<datasets_dir>/<name>.yaml`` proposed from ``files`` and return its path.

    Parameters
    ----------
    name : str
        The dataset name (lower-case letters, digits, ``_``, ``-``).
    files : sequence of path
        The exports (CSV, Excel, Parquet).
    time_zone, currency, country : str, optional
        Checked when given; written ``TODO`` otherwise (the loader then refuses the file until set).
    force : bool
        Replace an existing dataset file.
    datasets_dir : path, optional
        Default ``parameters/datasets/``.
    sample_rows : int
        Rows read from each file (and sheet).

    Raises
    ------
    InitError
        For an existing file without ``force``, a bad name, or an unreadable file.
    crm_analytics.datasets.DatasetError
        For a time zone, currency or country that does not exist (with close matches).
    """
    if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", name):
        raise InitError(f"dataset name {name!r} must be lower-case letters, digits, '_' or '-' (it names files and folders)")
    if not files:
        raise InitError("give the dataset's files with --from PATH (one or more)")
    target = Path(datasets_dir or paths.datasets_dir()) / f"{name}.yaml"
    if target.exists() and not force:
        raise InitError(f"{target} already exists; give --force to replace it")
    zone = datasets.check_time_zone(time_zone, where="--time-zone") if time_zone else None
    code = datasets.check_currency(currency, where="--currency") if currency else None
    region = datasets.check_country(country, where="--country") if country else None
    samples = [sample for path in files for sample in read_samples(path, rows=sample_rows)]
    folder = _common_folder([s.path for s in samples])
    data_dir = _relative(folder, paths.project_root())
    proposal = propose(samples, dataset=name, data_dir=folder)
    text = render_dataset_file(name, samples, proposal, data_dir=data_dir, time_zone=zone, currency=code, country=region)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def _common_folder(files: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(f.parent) for f in files]))

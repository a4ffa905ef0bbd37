"""The canonical tables of the warehouse and their column contracts.

Every source of a dataset is mapped onto these names (see the ``sources:`` block of
``parameters/datasets/<name>.yaml``) and every analysis reads them. Conventions:
identifiers end in ``_id`` and are strings; timestamps end in ``_time`` and are
naive local times in the dataset's business time zone (``Dataset.time_zone``);
calendar days end in ``_date``; money ends in ``_amount`` and is in the dataset's
currency (``Dataset.currency``); booleans start with ``is_``; scores end in ``_score``.

Types are logical: ``string``, ``int64``, ``float64``, ``bool``, ``timestamp``,
``date``. ``duckdb_type`` and ``pandas_dtype`` translate them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_DUCKDB_TYPES = {
    "string": "VARCHAR",
    "int64": "BIGINT",
    "float64": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
}
_PANDAS_DTYPES = {
    "string": "string",
    "int64": "Int64",
    "float64": "Float64",
    "bool": "boolean",
    "timestamp": "datetime64[us]",
    "date": "datetime64[us]",
}


@dataclass(frozen=True)
class Column:
    """One column of a canonical table.

    ``key`` marks the primary key (unique, required); ``required`` columns must
    be present in every source mapped onto the table and must not be null.

    ``values`` is the vocabulary of a categorical column: the only values it may hold
    in the warehouse (a dataset maps its own spellings onto them with ``value_maps``;
    any other value is ``unknown_value``, see ``crm_analytics.cleansing.vocabulary``).
    ``categorical`` marks a coded column whose values are open (a product category, a
    lead source): spelled one way and mappable, but any value is accepted.

    ``required_when`` makes an optional column required on some rows only: ``("status", ("won", "lost"))``
    means the value must be present where ``status`` is ``won`` or ``lost`` (a missing one quarantines the
    row as ``missing_required``) and may be missing elsewhere (an open deal without an amount).
    """

    name: str
    dtype: str
    description: str
    required: bool = False
    key: bool = False
    values: tuple[str, ...] | None = None
    categorical: bool = False
    required_when: tuple[str, tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in _DUCKDB_TYPES:
            raise ValueError(f"column {self.name!r}: unknown type {self.dtype!r}; use one of {sorted(_DUCKDB_TYPES)}")
        if self.values is not None and (self.dtype != "string" or not self.values):
            raise ValueError(f"column {self.name!r}: a vocabulary (values) needs a non-empty tuple on a string column")

    @property
    def is_categorical(self) -> bool:
        """Whether the column holds codes (a closed vocabulary or an open list), so a dataset may map its values."""
        return self.categorical or self.values is not None

    @property
    def duckdb_type(self) -> str:
        """The DuckDB SQL type of this column."""
        return _DUCKDB_TYPES[self.dtype]

    @property
    def pandas_dtype(self) -> str:
        """The pandas dtype this column is coerced to."""
        return _PANDAS_DTYPES[self.dtype]


@dataclass(frozen=True)
class Table:
    """The contract of one canonical table: its name, meaning and columns."""

    name: str
    description: str
    columns: tuple[Column, ...] = field(default_factory=tuple)

    @property
    def column_names(self) -> list[str]:
        """All column names, in contract order."""
        return [c.name for c in self.columns]

    @property
    def required_columns(self) -> list[str]:
        """Columns every source of this table must provide (keys included)."""
        return [c.name for c in self.columns if c.required or c.key]

    @property
    def key_columns(self) -> list[str]:
        """The primary-key columns."""
        return [c.name for c in self.columns if c.key]

    @property
    def categorical_columns(self) -> list[str]:
        """Columns holding codes (closed vocabularies and open lists), which a dataset's ``value_maps`` may map."""
        return [c.name for c in self.columns if c.is_categorical]

    def column(self, name: str) -> Column:
        """Return one column by name; ``KeyError`` names the table and its columns."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}; it has {self.column_names}")


def _c(name: str, dtype: str, description: str, *, required: bool = False, key: bool = False,
       values: tuple[str, ...] | None = None, categorical: bool = False,
       required_when: tuple[str, tuple[str, ...]] | None = None) -> Column:
    return Column(name, dtype, description, required=required, key=key, values=values, categorical=categorical,
                  required_when=required_when)


# Vocabularies shared by several columns. "other" lets a dataset map a value no listed one fits; "unknown"
# stands for an export that does not say (an order list without a channel column).
ORDER_CHANNELS = ("web", "app", "mini_program", "store", "call_centre", "marketplace", "wholesale", "other", "unknown")
MARKETING_CHANNELS = ("email", "sms", "wechat", "push", "paid_search", "social", "display", "affiliate", "direct_mail", "other")
TRAFFIC_CHANNELS = ("direct", "organic_search", "paid_search", "social", "email", "sms", "display", "affiliate", "referral", "other")
ACQUISITION_CHANNELS = ("organic_search", "paid_search", "social", "email", "display", "affiliate", "referral", "direct",
                        "store", "call_centre", "other", "unknown")
OPPORTUNITY_STAGES = ("lead", "qualified", "proposal", "negotiation", "won", "lost")


CUSTOMERS = Table(
    "customers",
    "One row per customer: who they are, where they live, how they were acquired.",
    (
        _c("customer_id", "string", "Customer identifier (after cleansing: the resolved person's key)", key=True),
        _c("full_name", "string", "Name as given (Chinese or Latin script); personal data"),
        _c("email", "string", "E-mail address; personal data"),
        _c("phone", "string", "Phone number; personal data"),
        _c("gender", "string", "Gender", values=("F", "M", "unknown")),
        _c("birth_date", "date", "Date of birth"),
        _c("province", "string", "Province or state (canonical English name, e.g. Guangdong)"),
        _c("city", "string", "City (canonical English name, e.g. Shenzhen)"),
        _c("country", "string", "Country as the source writes it (e.g. France, EIRE); never a province"),
        _c("person_key", "string", "A person identifier known to the source (e.g. a customer number shared by several exports): "
           "records sharing it are one customer, whatever their other fields"),
        _c("acquisition_channel", "string", "Channel that brought the customer", values=ACQUISITION_CHANNELS),
        _c("signup_time", "timestamp", "When the customer record was created", required=True),
        _c("source", "string", "Source system the record came from (web, store, call_centre)", required=True),
    ),
)

PRODUCTS = Table(
    "products",
    "The product catalogue.",
    (
        _c("product_id", "string", "Product identifier", key=True),
        _c("product_name", "string", "Product name", required=True),
        _c("category", "string", "Product category (open: the dataset's own categories)", required=True, categorical=True),
        _c("list_price_amount", "float64", "List price, in the dataset's currency", required=True),
    ),
)

ORDERS = Table(
    "orders",
    "One row per order or refund. Refunds are negative amounts with is_refund true.",
    (
        _c("order_id", "string", "Order identifier", key=True),
        _c("customer_id", "string", "Buyer; missing for an anonymous order (no customer known: kept by default, see the dataset key `anonymous_orders`)"),
        _c("order_time", "timestamp", "When the order was placed", required=True),
        _c("order_amount", "float64", "Amount paid after discount, in currency; negative for refunds", required=True),
        _c("currency", "string", "ISO 4217 currency code (the dataset's currency)"),
        _c("discount_amount", "float64", "Discount granted on the order, in currency"),
        _c("channel", "string", "Sales channel", required=True, values=ORDER_CHANNELS),
        _c("is_refund", "bool", "True for a refund row"),
        _c("source", "string", "Source system (web, store)", required=True),
    ),
)

ORDER_ITEMS = Table(
    "order_items",
    "One row per product line of an order.",
    (
        _c("order_id", "string", "Order the line belongs to", required=True),
        _c("line_number", "int64", "Line number within the order, from 1", required=True),
        _c("product_id", "string", "Product bought", required=True),
        _c("quantity", "int64", "Units bought", required=True),
        _c("unit_price_amount", "float64", "Price per unit before order-level discount, in the dataset's currency", required=True),
    ),
)

WEB_EVENTS = Table(
    "web_events",
    "Clickstream events of identified customers on web, app and mini program.",
    (
        _c("event_id", "string", "Event identifier", key=True),
        _c("customer_id", "string", "Customer", required=True),
        _c("session_id", "string", "Session the event belongs to", required=True),
        _c("event_time", "timestamp", "When the event happened", required=True),
        _c("event_name", "string", "What happened (a funnel step, or another event)", required=True,
           values=("visit", "page_view", "search", "product_view", "add_to_cart", "remove_from_cart", "checkout", "purchase", "other")),
        _c("platform", "string", "Where the event happened", required=True, values=("web", "app", "mini_program", "other")),
        _c("traffic_channel", "string", "Where the session came from", values=TRAFFIC_CHANNELS),
        _c("product_id", "string", "Product concerned, for product events"),
    ),
)

_CLOSED = ("status", ("won", "lost"))
_WON = ("status", ("won",))

OPPORTUNITIES = Table(
    "opportunities",
    "B2B sales opportunities (corporate gifting and bulk accounts).",
    (
        _c("opportunity_id", "string", "Opportunity identifier", key=True),
        # an open deal may still lack an account, a source, a start date or an amount; a closed one needs what
        # its figures use: win rates and the lead score (source, start), cycles (start), won value (amount, account)
        _c("customer_id", "string", "Account the opportunity is with", required_when=_WON),
        _c("lead_source", "string", "Where the lead came from (open: e.g. web_form, trade_show, referral, outbound, partner)",
           categorical=True, required_when=_CLOSED),
        _c("owner", "string", "Sales representative", required=True),
        _c("created_time", "timestamp", "When the lead was created", required_when=_CLOSED),
        _c("expected_amount", "float64", "Expected deal value, in the dataset's currency", required_when=_WON),
        _c("status", "string", "Where the opportunity stands", required=True, values=("open", "won", "lost")),
        _c("closed_time", "timestamp", "When it was won or lost; empty while open"),
        _c("stage", "string", "Current stage (optional): stage conversion reads it when there is no stage history",
           values=OPPORTUNITY_STAGES),
        # optional breakdown dimensions, known when the lead is created (see OPPORTUNITY_DIMENSIONS)
        _c("product", "string", "Product or product line the deal is about (open: the dataset's own names)", categorical=True),
        _c("team", "string", "Sales team of the owner (open: the dataset's own names)", categorical=True),
        _c("manager", "string", "The owner's manager; personal data"),
        _c("region", "string", "Sales region or regional office (open: the dataset's own names)", categorical=True),
    ),
)

# Columns of `opportunities` the pipeline may break win rates, cycles and pipeline value down by (one a run).
OPPORTUNITY_DIMENSIONS = ("lead_source", "owner", "product", "team", "manager", "region")

OPPORTUNITY_STAGE_HISTORY = Table(
    "opportunity_stage_history",
    "Every stage an opportunity entered, in order.",
    (
        _c("opportunity_id", "string", "Opportunity", required=True),
        _c("stage", "string", "The stage entered", required=True, values=OPPORTUNITY_STAGES),
        _c("entered_time", "timestamp", "When the opportunity entered the stage", required=True),
    ),
)

CAMPAIGNS = Table(
    "campaigns",
    "Marketing campaigns and what they cost.",
    (
        _c("campaign_id", "string", "Campaign identifier", key=True),
        _c("campaign_name", "string", "Campaign name", required=True),
        _c("channel", "string", "Marketing channel", required=True, values=MARKETING_CHANNELS),
        _c("start_date", "date", "First day", required=True),
        _c("end_date", "date", "Last day", required=True),
        _c("spend_amount", "float64", "Total spend, in the dataset's currency", required=True),
    ),
)

TOUCHPOINTS = Table(
    "touchpoints",
    "Marketing contacts: one row per customer reached by a campaign on a channel.",
    (
        _c("touchpoint_id", "string", "Touchpoint identifier", key=True),
        _c("customer_id", "string", "Customer reached", required=True),
        _c("campaign_id", "string", "Campaign", required=True),
        _c("channel", "string", "Marketing channel", required=True, values=MARKETING_CHANNELS),
        _c("touch_time", "timestamp", "When the contact happened", required=True),
    ),
)

SURVEYS = Table(
    "surveys",
    "Satisfaction survey responses.",
    (
        _c("survey_id", "string", "Response identifier", key=True),
        _c("customer_id", "string", "Respondent", required=True),
        _c("survey_time", "timestamp", "When the survey was answered", required=True),
        _c("nps_score", "int64", "Likelihood to recommend, 0-10"),
        _c("csat_score", "int64", "Satisfaction, 1-5"),
        _c("comment", "string", "Free-text comment (Chinese or English); personal data"),
    ),
)

SUPPORT_TICKETS = Table(
    "support_tickets",
    "Customer-service tickets.",
    (
        _c("ticket_id", "string", "Ticket identifier", key=True),
        _c("customer_id", "string", "Customer", required=True),
        _c("opened_time", "timestamp", "When the ticket was opened", required=True),
        _c("first_response_time", "timestamp", "First reply by an agent"),
        _c("resolved_time", "timestamp", "When it was resolved; empty while open"),
        _c("category", "string", "What the ticket is about", required=True, values=("delivery", "product_quality", "refund", "account", "other")),
        _c("contact_channel", "string", "How the customer got in touch", values=("phone", "chat", "email", "wechat", "social", "store", "other")),
        _c("n_contacts", "int64", "Contacts needed until resolution (1 = first-contact resolution)"),
        _c("is_escalated", "bool", "Escalated to a second-level team"),
    ),
)

EXPERIMENT_ASSIGNMENTS = Table(
    "experiment_assignments",
    "Who was assigned to which variant of an A/B test, and what they did.",
    (
        _c("experiment_id", "string", "Experiment identifier", required=True),
        _c("customer_id", "string", "Customer", required=True),
        _c("variant", "string", "Arm of the test (open: e.g. control, treatment; the analysis names the two it compares)", required=True,
           categorical=True),
        _c("assigned_time", "timestamp", "When the customer was assigned", required=True),
        _c("is_converted", "bool", "Whether the customer converted within the experiment window", required=True),
        _c("revenue_amount", "float64", "Revenue from the customer within the window, in the dataset's currency", required=True),
    ),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        CUSTOMERS,
        PRODUCTS,
        ORDERS,
        ORDER_ITEMS,
        WEB_EVENTS,
        OPPORTUNITIES,
        OPPORTUNITY_STAGE_HISTORY,
        CAMPAIGNS,
        TOUCHPOINTS,
        SURVEYS,
        SUPPORT_TICKETS,
        EXPERIMENT_ASSIGNMENTS,
    )
}

# Columns that hold personal data: masked or pseudonymised before a stakeholder sees them.
PERSONAL_DATA_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("full_name", "email", "phone", "birth_date"),
    "surveys": ("comment",),
    "opportunities": ("owner", "manager"),  # the sales representative's and their manager's names
}


def get_table(name: str) -> Table:
    """Return the contract of a canonical table; ``KeyError`` lists the known tables."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; the canonical tables are {sorted(TABLES)}") from None


def create_table_sql(table: Table, *, name: str | None = None) -> str:
    """Return a DuckDB ``CREATE TABLE`` statement for a contract (columns in contract order)."""
    columns = ",\n  ".join(f'"{c.name}" {c.duckdb_type}' for c in table.columns)
    return f'CREATE OR REPLACE TABLE "{name or table.name}" (\n  {columns}\n)'


def markdown_table(table: Table) -> str:
    """Return the contract as a Markdown table, for the documentation."""
    lines = [f"### `{table.name}`", "", table.description, "", "| column | type | required | meaning |", "| --- | --- | --- | --- |"]
    for c in table.columns:
        flag = "key" if c.key else ("yes" if c.required else _required_when_note(c))
        lines.append(f"| `{c.name}` | {c.dtype} | {flag} | {c.description}{_values_note(c)} |")
    return "\n".join(lines)


def _required_when_note(column: Column) -> str:
    """``when status is won or lost`` for a column required on some rows only; empty otherwise."""
    if column.required_when is None:
        return ""
    on, values = column.required_when
    return f"when {on} is {' or '.join(values)}"


def _values_note(column: Column) -> str:
    """The accepted values of a column for the documentation (or that its codes are open)."""
    if column.values is not None:
        return ". Accepted values: " + ", ".join(f"`{v}`" for v in column.values)
    return ". Open list of codes (any value; mappable)" if column.categorical else ""


TIME_SECTION = (
    "## Time",
    "",
    "Every timestamp is stored as a naive local time in the dataset's business time zone (`time_zone` of the",
    "dataset file): a day, a month or an hour of the day in an analysis is then the day, month or hour the",
    "business lives in, with no conversion at query time. The zone is recorded beside the tables",
    "(`dataset_info`), so the instant can always be recovered.",
    "",
    "- A value with an offset (`2024-03-01T00:00:00+08:00`, `...Z`) or a time-zone-aware column is converted",
    "  into the business zone.",
    "- A naive value is read in its source's `time_zone` (default: the business zone) and converted when the",
    "  two differ; in the business zone it is kept as written.",
    "- Daylight-saving changes never reject a value. A local time that occurs twice (the repeated hour in",
    "  autumn) is its first occurrence, still in daylight time: Europe/London `2024-10-27 01:30` is",
    "  `00:30` UTC, America/Sao_Paulo `2017-02-18 23:41:47` is `2017-02-19 01:41:47` UTC. A local time that",
    "  never occurs (the skipped hour in spring) is read with the offset before the change, which moves it",
    "  forward by the gap: Europe/London `2024-03-31 01:30` is `01:30` UTC, `02:30` local; America/Sao_Paulo",
    "  `2016-10-16 00:41` is `03:41` UTC, `01:41` local. (This is Python's `fold=0`; see",
    "  `crm_analytics.parsing.localize`.)",
    "- Time-zone-aware data handed to an analysis function is converted to the business zone",
    "  (`frames.use_time_zone`); a column mixing aware and naive values is an error naming the column.",
    "",
)


MONEY_SECTION = (
    "## Money",
    "",
    "Every amount (`*_amount`) is in the dataset's currency (`currency` of the dataset file, an ISO 4217 code).",
    "Cleansing writes it into the `currency` column of `orders`, whatever the source spelled (`RMB`, `人民币`,",
    "`¥` become `CNY`; `£` becomes `GBP`); a currency text that names no currency sends the row to quarantine",
    "(`unknown_currency`).",
    "",
    "- A source holding amounts in another currency is an error naming the currencies and their row counts,",
    "  unless the dataset declares `exchange_rates`: rows of `currency`, `date`, `rate` (units of the dataset",
    "  currency for one unit of `currency`), inline or as a CSV/YAML file under the dataset folder.",
    "- Rate date rule: an amount is converted with the **latest rate of its currency dated on or before the",
    "  day of its row** (the order's calendar day in the business time zone). A rate dated later is never",
    "  used; a row with no rate on or before its day goes to quarantine (`no_exchange_rate`). See",
    "  `crm_analytics.money.convert_amounts`.",
    "- Reports, pages and KPI tiles write money with the dataset's currency and `locale` (`£86,161` in",
    "  `en_GB`, `R$ 86.161` in `pt_BR`); KPIs measured in money have the unit `money`.",
    "",
)


VOCABULARY_SECTION = (
    "## Vocabularies",
    "",
    "A categorical column holds only its accepted values (listed in the tables below). Cleansing spells codes one",
    "way (stripped, lower case, spaces and hyphens as `_`: `Paid Search` is `paid_search`; gender is `F`, `M` or",
    "`unknown`, from `female`, `男`, ...). A dataset whose exports use other words maps them in its dataset file:",
    "",
    "```yaml",
    "value_maps:",
    "  opportunity_stage_history:",
    "    stage: {Prospecting: lead, Engaging: qualified, Won: won, Lost: lost}",
    "```",
    "",
    "A map's values are matched case-insensitively after trimming (and collapsing inner spaces); its targets must be",
    "accepted values of the column. A value neither accepted nor mapped is never counted as valid: the build fails",
    "naming the table, the column, the unknown values with their row counts and the line to add to the dataset file.",
    "Only a few stray values (at most 3 distinct values in at most 0.5% of a source's rows) are tolerated: those",
    "rows (or, in an optional column, those values) go to the quarantine with reason `unknown_value`. The quality",
    "report (`quality_value_maps`) lists every mapping applied with its row count. Columns marked \"open\" accept",
    "any code (the dataset's own product categories, lead sources, experiment arms) and may be mapped too.",
    "",
)


def data_model_markdown() -> str:
    """Return the documentation page of the whole data model (``docs/data_model.md``)."""
    header = [
        "# The data model",
        "",
        "The canonical tables of a dataset's warehouse (`data/warehouse/<dataset>.duckdb`), defined in",
        "`crm_analytics/schema.py`. Timestamps (`*_time`) are naive local times in the dataset's business time",
        "zone; money (`*_amount`) is in the dataset's currency; identifiers (`*_id`) are text. Every source of a",
        "dataset is mapped onto these names in the `sources:` block of `parameters/datasets/<name>.yaml`.",
        "",
        *TIME_SECTION,
        *MONEY_SECTION,
        *VOCABULARY_SECTION,
    ]
    return "\n".join(header + [markdown_table(t) + "\n" for t in TABLES.values()])


if __name__ == "__main__":
    print(data_model_markdown(), end="")

"""E-mailed reports of scheduled runs: the report as an HTML mail with its figures inline and key tables attached.

A job of ``parameters/schedule.yaml`` may name recipients::

    - id: segmentation-weekly
      analysis: segmentation
      cron: "0 6 * * 1"
      recipients: [marketing.lead@example.com, "Head of Sales <sales.head@example.com>"]
      attach_tables: [segment_summary]   # optional: result tables attached as CSV
      on_failure: notice                 # optional: nothing (default) or notice

After a successful run the scheduler sends the run's ``report.html`` (:func:`build_report_message`):

- the body is the report without code, prompts, scripts, stylesheets of other hosts or Python warnings,
  its PNG figures turned from ``data:`` URIs (which mail clients block) into inline MIME parts named by
  ``cid:``; a plain-text part carries the headline numbers;
- the tables named by ``attach_tables`` (``tables/<name>.parquet`` of the run) are attached as CSV, their
  personal-data columns masked as the pages mask them (``privacy.mask_frame``) and written formula-safe
  (``results.write_csv``); the run's ``report.pdf`` is attached when the job prints one (``pdf: true``);
- before anything is sent, the visible text and the attachments are searched for unmasked e-mail addresses
  and phone numbers (:func:`unmasked_contacts`); a report holding any is not sent (``mail_refused``).

A run that failed sends nothing, or with ``on_failure: notice`` a short notice naming the job, the
status and the error class (never the error message, which may quote data).

SMTP settings never come from YAML in git (a schedule holding any is refused at load,
:func:`refuse_smtp_settings`). They are read when a mail is sent, from the environment:

==================================  =====================================================
``CRM_ANALYTICS_SMTP_HOST``          the server (required)
``CRM_ANALYTICS_SMTP_PORT``          default 587 with STARTTLS, else 25; 465 means TLS from the start
``CRM_ANALYTICS_SMTP_USER``          login user (optional)
``CRM_ANALYTICS_SMTP_PASSWORD``      login password (optional)
``CRM_ANALYTICS_SMTP_FROM``          the sender address (required)
``CRM_ANALYTICS_SMTP_STARTTLS``      true (default) or false
``CRM_ANALYTICS_SMTP_ATTEMPTS``      delivery attempts, 1 to 10 (default 3)
``CRM_ANALYTICS_SMTP_RETRY_DELAY_S`` pause before the first retry, doubled after each (default 30, at most 600)
``CRM_ANALYTICS_SMTP_TIMEOUT_S``     seconds a connection may take (default 30)
==================================  =====================================================

or from a secrets file named by ``CRM_ANALYTICS_SMTP_FILE``: a YAML mapping with the same names in lower
case without the prefix (``host``, ``port``, ``user``, ``password``, ``from``, ...), kept outside the
project and readable by its owner only (mode 0600). Environment variables win over the file.

Every attempt is logged by the scheduler in ``outputs/scheduler.log.jsonl``: ``mail_sent``, ``mail_error``
(with ``transient`` and the pause before the next attempt), ``mail_failed`` when every attempt failed,
``mail_refused`` when the report holds personal data. Delivery never changes the run's status.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import secrets
import smtplib
import ssl
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from crm_analytics import paths

ENV_PREFIX = "CRM_ANALYTICS_SMTP_"
SECRETS_FILE_ENV = "CRM_ANALYTICS_SMTP_FILE"
ON_FAILURE_CHOICES = ("nothing", "notice")
MAIL_KEYS = ("recipients", "attach_tables", "on_failure")
DEFAULT_ATTEMPTS = 3
MAX_ATTEMPTS = 10
DEFAULT_RETRY_DELAY_S = 30.0
MAX_RETRY_DELAY_S = 600.0
DEFAULT_TIMEOUT_S = 30.0
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024  # all attachments of one mail together; larger tables are left out and named
REPORT_NAME = "report.html"
PDF_NAME = "report.pdf"
SUBJECT_PREFIX = "[crm-analytics]"
_TABLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")  # as results.save_table names tables
_SETTING_NAMES = ("host", "port", "user", "password", "from", "starttls", "attempts", "retry_delay_s", "timeout_s")
# Keys that would put a mail server or its credentials into schedule.yaml (kept in git).
_SECRET_KEY = re.compile(r"smtp|passw|secret|credential|login|token|^user(name)?$|^host$|^port$|^from$|starttls|^mail_?server$",
                         re.IGNORECASE)
_DECIMAL = re.compile(r"(?<![\d.])\d+\.\d+(?![\d.])")  # one dot: a decimal number (138.0013.8000 keeps its two dots)
_EMAIL_IN_TEXT = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")  # a masked address (z***@example.com) has '*' before '@'


class MailConfigError(ValueError):
    """Mail settings are wrong: a schedule entry (the message names the job) or the SMTP settings."""


# ----------------------------------------------------------------------------- the schedule's mail keys


@dataclass(frozen=True)
class MailOptions:
    """What a schedule job mails: ``recipients`` (addresses as written), ``attach_tables``, ``on_failure``."""

    recipients: tuple[str, ...]
    attach_tables: tuple[str, ...] = ()
    on_failure: str = "nothing"

    def as_kwargs(self) -> dict[str, Any]:
        """A plain mapping for the scheduler's job store (lists and strings only)."""
        return {"recipients": list(self.recipients), "attach_tables": list(self.attach_tables), "on_failure": self.on_failure}

    @classmethod
    def from_kwargs(cls, raw: Mapping[str, Any]) -> MailOptions:
        """The inverse of :meth:`as_kwargs`."""
        return cls(recipients=tuple(raw.get("recipients") or ()), attach_tables=tuple(raw.get("attach_tables") or ()),
                   on_failure=str(raw.get("on_failure") or "nothing"))


def refuse_smtp_settings(raw: Mapping[str, Any], where: str) -> None:
    """Raise :class:`MailConfigError` when a schedule mapping holds SMTP settings or credentials.

    ``schedule.yaml`` is kept in git; the mail server and its login belong in the environment or in the
    secrets file named by ``CRM_ANALYTICS_SMTP_FILE``. ``where`` names the job (or ``schedule``).
    """
    found = sorted(str(key) for key in raw if _SECRET_KEY.search(str(key)))
    if found:
        raise MailConfigError(
            f"{where}: {', '.join(found)}: SMTP settings and credentials do not belong in the schedule, which is kept in git; "
            f"set {ENV_PREFIX}HOST, {ENV_PREFIX}PORT, {ENV_PREFIX}USER, {ENV_PREFIX}PASSWORD, {ENV_PREFIX}FROM and "
            f"{ENV_PREFIX}STARTTLS in the environment, or name a secrets file outside the project with {SECRETS_FILE_ENV}")


def check_address(text: str, where: str) -> str:
    """Return the recipient ``text`` (``ops@example.com`` or ``Name <ops@example.com>``) when its address is valid.

    Raises :class:`MailConfigError` naming ``where`` and the recipient otherwise (syntax only: no DNS look-up).
    """
    from email_validator import EmailNotValidError, validate_email

    parsed = getaddresses([text])
    if len(parsed) != 1 or not parsed[0][1] or "," in text:
        raise MailConfigError(f"{where}: recipient {text!r} is not one e-mail address (write one address per list item)")
    try:
        validate_email(parsed[0][1], check_deliverability=False)
    except EmailNotValidError as exc:
        raise MailConfigError(f"{where}: recipient {text!r} is not a valid e-mail address: {exc}") from None
    return text.strip()


def _string_list(value: Any, key: str, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) and item.strip() for item in items):
        raise MailConfigError(f"{where}: {key} must be a list of non-empty strings, got {value!r}")
    return [item.strip() for item in items]


def parse_mail_options(raw: Mapping[str, Any], where: str) -> MailOptions | None:
    """Return the mail options of one schedule job, or ``None`` when it names no ``recipients``.

    Raises :class:`MailConfigError` naming ``where`` for a malformed address, an ``attach_tables`` or
    ``on_failure`` without recipients, a table name that cannot be a result table, or an unknown ``on_failure``.
    """
    if not raw.get("recipients"):
        stray = [key for key in ("attach_tables", "on_failure") if key in raw]
        if "recipients" in raw or stray:
            raise MailConfigError(f"{where}: {', '.join(stray) or 'recipients'} needs a non-empty recipients list")
        return None
    recipients = [check_address(item, where) for item in _string_list(raw["recipients"], "recipients", where)]
    tables = _string_list(raw.get("attach_tables") or [], "attach_tables", where)
    bad = [name for name in tables if not _TABLE_NAME.match(name)]
    if bad:
        raise MailConfigError(f"{where}: attach_tables {bad}: a table is named as the run's tables/<name>.parquet "
                              f"(lower-case letters, digits, '_' or '-')")
    on_failure = str(raw.get("on_failure", "nothing"))
    if on_failure not in ON_FAILURE_CHOICES:
        raise MailConfigError(f"{where}: on_failure must be one of {', '.join(ON_FAILURE_CHOICES)}, got {on_failure!r}")
    return MailOptions(recipients=tuple(dict.fromkeys(recipients)), attach_tables=tuple(dict.fromkeys(tables)), on_failure=on_failure)


# ----------------------------------------------------------------------------- SMTP settings


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how mail is sent; the password never shows in ``repr``."""

    host: str
    port: int
    sender: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    attempts: int = DEFAULT_ATTEMPTS
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S
    timeout_s: float = DEFAULT_TIMEOUT_S

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (2, 3, ...): ``retry_delay_s`` doubled each time, capped."""
        return min(self.retry_delay_s * 2 ** (attempt - 2), MAX_RETRY_DELAY_S)


def _inside_project(path: Path) -> Path | None:
    for root in {paths.code_root().resolve(), paths.project_root().resolve()}:
        if path == root or root in path.parents:
            return root
    return None


def read_secrets_file(path: str | Path) -> dict[str, str]:
    """Return the settings of an SMTP secrets file (a YAML mapping of :data:`_SETTING_NAMES`), as strings.

    Raises :class:`MailConfigError` when the file is missing, inside the project (it would reach git or
    ``outputs/``), readable by other users, not a mapping, or holds an unknown key.
    """
    path = Path(path).expanduser().resolve()
    root = _inside_project(path)
    if root is not None:
        raise MailConfigError(f"{SECRETS_FILE_ENV}={path} lies inside the project folder {root}; keep SMTP secrets outside the repository")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MailConfigError(f"{SECRETS_FILE_ENV}={path}: no such file") from None
    except yaml.YAMLError as exc:
        raise MailConfigError(f"{SECRETS_FILE_ENV}={path} is not valid YAML: {exc}") from None
    if mode & 0o077:
        raise MailConfigError(f"{SECRETS_FILE_ENV}={path} is readable by others (mode {mode:o}); run chmod 600 on it")
    if not isinstance(raw, Mapping):
        raise MailConfigError(f"{SECRETS_FILE_ENV}={path}: expected a mapping of {', '.join(_SETTING_NAMES)}")
    unknown = sorted(set(map(str, raw)) - set(_SETTING_NAMES))
    if unknown:
        raise MailConfigError(f"{SECRETS_FILE_ENV}={path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(_SETTING_NAMES)}")
    return {str(key): str(value) for key, value in raw.items() if value is not None}


def _flag(text: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
        raise MailConfigError(f"{ENV_PREFIX}{name.upper()}={text!r}: write true or false")
    return lowered in {"1", "true", "yes", "on"}


def _number(text: str, name: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise MailConfigError(f"{ENV_PREFIX}{name.upper()}={text!r}: expected a number from {low:g} to {high:g}")
    return value


def load_settings(environ: Mapping[str, str] | None = None) -> SmtpSettings:
    """Return the SMTP settings: ``CRM_ANALYTICS_SMTP_*`` variables over the secrets file of ``CRM_ANALYTICS_SMTP_FILE``.

    Raises :class:`MailConfigError` naming the variable when the host or sender is missing, a value is
    malformed, or a password would travel unencrypted to another machine.
    """
    environ = os.environ if environ is None else environ
    values = read_secrets_file(environ[SECRETS_FILE_ENV]) if environ.get(SECRETS_FILE_ENV) else {}
    values.update({name: environ[ENV_PREFIX + name.upper()] for name in _SETTING_NAMES if environ.get(ENV_PREFIX + name.upper())})
    missing = [f"{ENV_PREFIX}{name.upper()}" for name in ("host", "from") if not values.get(name)]
    if missing:
        raise MailConfigError(f"cannot send mail: {' and '.join(missing)} not set (environment, or the secrets file of {SECRETS_FILE_ENV})")
    starttls = _flag(values.get("starttls", "true"), "starttls")
    port = int(_number(values.get("port", "587" if starttls else "25"), "port", 1, 65535))
    sender = check_address(values["from"], f"{ENV_PREFIX}FROM")
    password = values.get("password")
    local = values["host"] in {"localhost", "127.0.0.1", "::1"}
    if password and not (starttls or port == 465 or local):
        raise MailConfigError(f"{ENV_PREFIX}STARTTLS is false: the password would travel unencrypted to {values['host']}; "
                              f"enable STARTTLS or use port 465")
    return SmtpSettings(
        host=values["host"], port=port, sender=sender, user=values.get("user"), password=password, starttls=starttls,
        attempts=int(_number(values.get("attempts", str(DEFAULT_ATTEMPTS)), "attempts", 1, MAX_ATTEMPTS)),
        retry_delay_s=_number(values.get("retry_delay_s", str(DEFAULT_RETRY_DELAY_S)), "retry_delay_s", 0, MAX_RETRY_DELAY_S),
        timeout_s=_number(values.get("timeout_s", str(DEFAULT_TIMEOUT_S)), "timeout_s", 1, 600),
    )


# ----------------------------------------------------------------------------- the report as mail HTML


EMAIL_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans CJK SC", sans-serif; color: #1f2328; max-width: 60em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 2px 6px; text-align: right; }
th { background: #f6f8fa; }
img { max-width: 100%; height: auto; }
pre { white-space: pre-wrap; }
.mail-facts { color: #57606a; font-size: 0.9em; }
"""
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_DROPPED_TAGS = {"script", "link", "meta", "noscript", "template", "iframe", "object", "embed", "form", "base", "title", "head"}
# Code, prompts and the turned print copy of wide tables never reach a mail (the report hides code already).
_DROPPED_CLASSES = {"jp-InputArea-editor", "jp-InputPrompt", "jp-OutputPrompt", "anchor-link", "table-print", "jp-Collapser"}
_DROPPED_MIME = {"application/vnd.jupyter.stderr"}  # Python warnings of a succeeded run
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif);base64,(.*)$", re.DOTALL)


@dataclass
class InlineImage:
    """An image of the report as a MIME part: its ``cid`` (without angle brackets), subtype and bytes."""

    cid: str
    subtype: str
    data: bytes


class _MailHtml(HTMLParser):
    """Re-serialises the ``<body>`` of a report for mail: see :func:`mail_html`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.text: list[str] = []
        self.images: dict[str, InlineImage] = {}
        self._in_body = False
        self._skip_depth = 0
        self._raw_text = False

    def _dropped(self, tag: str, attrs: dict[str, str | None]) -> bool:
        classes = set((attrs.get("class") or "").split())
        return (tag in _DROPPED_TAGS or bool(classes & _DROPPED_CLASSES) or attrs.get("data-mime-type") in _DROPPED_MIME
                or (tag == "style" and not self._in_body))

    def _image(self, attrs: dict[str, str | None]) -> str | None:
        """The ``cid:`` of an inline image, or ``None`` for an image from elsewhere (left out)."""
        match = _DATA_IMAGE.match(attrs.get("src") or "")
        if match is None:
            return None
        uri = attrs["src"] or ""
        if uri not in self.images:
            self.images[uri] = InlineImage(cid=f"figure{len(self.images) + 1}.{secrets.token_hex(8)}@crm-analytics.invalid",
                                           subtype=match.group(1), data=base64.b64decode(re.sub(r"\s", "", match.group(2))))
        return f"cid:{self.images[uri].cid}"

    def _start(self, tag: str, attrs_list: list[tuple[str, str | None]], closed: bool) -> None:
        opens = not closed and tag not in _VOID
        if tag == "body":
            self._in_body = True
        elif self._skip_depth:
            self._skip_depth += opens
        elif self._in_body and self._dropped(tag, attrs := dict(attrs_list)):
            self._skip_depth = int(opens)
        elif self._in_body:
            self._keep(tag, attrs, closed)

    def _keep(self, tag: str, attrs: dict[str, str | None], closed: bool) -> None:
        if tag == "img":
            self.text.append(attrs.get("alt") or "")  # alt text is read too: it is searched for personal data
            source = self._image(attrs)
            if source is None:
                self.parts.append(html.escape(attrs.get("alt") or ""))
                return
            attrs["src"] = source
        self._raw_text = tag == "style"
        kept = "".join(f' {name}="{html.escape(value or "", quote=True)}"' for name, value in attrs.items()
                       if not name.startswith("on") and name not in {"tabindex", "srcset"})
        self.parts.append(f"<{tag}{kept}{' /' if closed else ''}>")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=True)

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self._in_body = False
        elif self._skip_depth:
            if tag not in _VOID:
                self._skip_depth -= 1
        elif self._in_body and tag not in _VOID:
            self.parts.append(f"</{tag}>")
            self._raw_text = False

    def handle_data(self, data: str) -> None:
        if not self._in_body or self._skip_depth:
            return
        if self._raw_text:  # a table's own stylesheet: CSS is not text and must not be escaped
            self.parts.append(data)
        else:
            self.parts.append(html.escape(data, quote=False))
            self.text.append(data)


@dataclass
class MailHtml:
    """A report made ready for mail: ``body`` (HTML inside ``<body>``), its visible ``text`` and inline ``images``."""

    body: str
    text: str
    images: list[InlineImage]


def mail_html(report_html: str) -> MailHtml:
    """Turn a run's ``report.html`` into the body of a mail.

    Keeps what is inside ``<body>``; drops scripts, stylesheets of the page head, code editors and prompts
    (should a report ever show code), anchor links, Python warnings (stderr outputs) and the turned print copy
    of wide tables; ``data:`` PNG/JPEG/GIF images become ``cid:`` references to :class:`InlineImage` parts
    (one part per distinct image); an image from anywhere else is replaced by its alt text. Event attributes
    (``on*``) are removed.
    """
    parser = _MailHtml()
    parser.feed(report_html)
    parser.close()
    text = " ".join(" ".join(parser.text).split())
    return MailHtml(body="".join(parser.parts), text=text, images=list(parser.images.values()))


# ----------------------------------------------------------------------------- personal data


def unmasked_contacts(text: str, *, region: str | None = None) -> dict[str, int]:
    """Count unmasked e-mail addresses and phone numbers in ``text`` (``{"email": n, "phone": m}``, zeros left out).

    Masked values (``z***@example.com``, ``138****5678``) do not count. Phone numbers are found by
    ``phonenumbers`` with strict grouping in ``region`` (the dataset's country; ``None``: international
    numbers written with ``+`` only), which leaves amounts and dates alone.
    """
    import phonenumbers

    numbers_left = _DECIMAL.sub(" ", text)  # 1234.869999999999 is an amount, not a phone number
    found = {"email": len(_EMAIL_IN_TEXT.findall(text)),
             "phone": sum(1 for _ in phonenumbers.PhoneNumberMatcher(numbers_left, region, leniency=phonenumbers.Leniency.STRICT_GROUPING))}
    return {kind: count for kind, count in found.items() if count}


def dataset_region(dataset: str | None) -> str | None:
    """The phone region of ``dataset`` (its ``country``), or ``None`` when the dataset cannot be read."""
    from crm_analytics import datasets

    try:
        return datasets.load_dataset(dataset or None).country
    except datasets.DatasetError:
        return None


# ----------------------------------------------------------------------------- building messages


@dataclass
class RunFacts:
    """What a mail says about a run: read from its folder's ``run.json`` and ``headline.json``."""

    analysis: str
    dataset: str | None
    run_id: str | None
    status: str
    started_at: str | None
    period: str
    headlines: list[tuple[str, str]] = field(default_factory=list)  # (label, value)


def _started_day(started_at: str | None) -> str:
    try:
        return datetime.fromisoformat(str(started_at)).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_facts(run_dir: str | Path, *, analysis: str, dataset: str | None = None) -> RunFacts:
    """Read the facts of a run folder; the period is the headlines' period, else ``as of <as_of>``, else the run's day."""
    from crm_analytics import headlines

    folder = Path(run_dir)
    try:
        record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    found = headlines.read_headline(folder)
    periods = [h.period for h in found if h.period]
    as_of = str((record.get("parameters") or {}).get("as_of") or "")
    period = periods[0] if periods else (f"as of {as_of}" if as_of else f"run of {_started_day(record.get('started_at'))}")
    return RunFacts(analysis=str(record.get("analysis") or analysis), dataset=record.get("dataset") or dataset,
                    run_id=record.get("run_id") or folder.name, status=str(record.get("status") or "unknown"),
                    started_at=record.get("started_at"), period=period, headlines=[(h.label, h.value) for h in found])


def report_subject(facts: RunFacts) -> str:
    """``[crm-analytics] segmentation on demo: snapshot 2026-01-01``."""
    on = f" on {facts.dataset}" if facts.dataset else ""
    return f"{SUBJECT_PREFIX} {facts.analysis}{on}: {facts.period}"


def table_csv(run_dir: str | Path, name: str) -> bytes | None:
    """A result table of the run as CSV bytes, personal columns masked, cells formula-safe; ``None`` when absent."""
    from crm_analytics import privacy, results

    source = Path(run_dir) / "tables" / f"{name}.parquet"
    if not source.is_file():
        return None
    masked = privacy.mask_frame(pd.read_parquet(source))
    with tempfile.TemporaryDirectory(prefix="crm-mail-") as folder:
        return results.write_csv(masked, Path(folder) / f"{name}.csv").read_bytes()


@dataclass
class Attachments:
    """Files for a mail: ``files`` (name, MIME type, bytes) and the names ``left_out`` with the reason."""

    files: list[tuple[str, str, bytes]] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, mime: str, data: bytes) -> None:
        if sum(len(f[2]) for f in self.files) + len(data) > MAX_ATTACHMENT_BYTES:
            self.left_out.append((name, f"too large to mail ({len(data) / 1e6:.1f} MB; at most {MAX_ATTACHMENT_BYTES / 1e6:.0f} MB together)"))
        else:
            self.files.append((name, mime, data))


def collect_attachments(run_dir: str | Path, tables: Iterable[str]) -> Attachments:
    """The declared tables as masked CSV, then the run's ``report.pdf`` when there is one, within :data:`MAX_ATTACHMENT_BYTES`."""
    found = Attachments()
    for name in tables:
        data = table_csv(run_dir, name)
        if data is None:
            found.left_out.append((f"{name}.csv", "this run wrote no such table"))
        else:
            found.add(f"{name}.csv", "text/csv", data)
    pdf = Path(run_dir) / PDF_NAME
    if pdf.is_file():
        found.add(PDF_NAME, "application/pdf", pdf.read_bytes())
    return found


def _new_message(subject: str, sender: str, recipients: Iterable[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False)
    domain = sender.rpartition("@")[2].rstrip(">") or "crm-analytics.invalid"
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to a report
    return message


def _facts_line(facts: RunFacts) -> str:
    return " · ".join(part for part in (f"dataset {facts.dataset}" if facts.dataset else "", facts.period,
                                        f"run {facts.run_id}" if facts.run_id else "") if part)


def _plain_text(facts: RunFacts, attachments: Attachments) -> str:
    lines = [f"{facts.analysis}: {_facts_line(facts)}", ""]
    lines += [f"- {label}: {value}" for label, value in facts.headlines]
    if attachments.files:
        lines += ["", "Attached: " + ", ".join(name for name, _, _ in attachments.files)]
    lines += [f"Not attached: {name} ({reason})" for name, reason in attachments.left_out]
    lines += ["", "The full report with its figures is the HTML part of this mail."]
    return "\n".join(lines) + "\n"


def _html_document(facts: RunFacts, body: str, attachments: Attachments) -> str:
    notes = "".join(f"<li>{html.escape(name)} not attached: {html.escape(reason)}</li>" for name, reason in attachments.left_out)
    attached = ", ".join(html.escape(name) for name, _, _ in attachments.files)
    footer = (f"<p class=\"mail-facts\">Attached: {attached}</p>" if attached else "") + (f"<ul class=\"mail-facts\">{notes}</ul>" if notes else "")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(report_subject(facts))}</title>"
            f"<style>{EMAIL_CSS}</style></head><body>\n<p class=\"mail-facts\">{html.escape(_facts_line(facts))}</p>\n"
            f"{body}\n{footer}</body></html>\n")


@dataclass
class ReportMail:
    """A report ready to send: the ``message`` and the unmasked contacts found in it (empty: safe to send)."""

    message: EmailMessage
    unmasked: dict[str, int]
    attachments: Attachments


def build_report_message(run_dir: str | Path, options: MailOptions, *, sender: str, analysis: str,
                         dataset: str | None = None) -> ReportMail:
    """Build the mail of a successful run (see the module's docstring); nothing is sent.

    Parameters
    ----------
    run_dir : str or Path
        The run folder, holding ``report.html``, ``run.json`` and ``tables/``.
    options : MailOptions
        Recipients and the tables to attach.
    sender : str
        The ``From`` address.
    analysis, dataset : str
        Used when the run record cannot be read.

    Returns
    -------
    ReportMail
        The message (multipart: text and HTML alternatives, the HTML with its figures as related parts,
        then the attachments) and the counts of unmasked contacts found in its text and attachments.
    """
    folder = Path(run_dir)
    facts = run_facts(folder, analysis=analysis, dataset=dataset)
    report = mail_html((folder / REPORT_NAME).read_text(encoding="utf-8"))
    attachments = collect_attachments(folder, options.attach_tables)
    message = _new_message(report_subject(facts), sender, options.recipients)
    message.set_content(_plain_text(facts, attachments))
    message.add_alternative(_html_document(facts, report.body, attachments), subtype="html")
    html_part = message.get_payload()[1]
    for image in report.images:
        html_part.add_related(image.data, maintype="image", subtype=image.subtype, cid=f"<{image.cid}>", disposition="inline")
    for name, mime, data in attachments.files:
        maintype, subtype = mime.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    searched = "\n".join([report.text, *(data.decode("utf-8", "replace") for _, mime, data in attachments.files if mime == "text/csv")])
    return ReportMail(message=message, unmasked=unmasked_contacts(searched, region=dataset_region(facts.dataset)), attachments=attachments)


def build_failure_notice(*, job_id: str, analysis: str, dataset: str | None, status: str, run_id: str | None,
                         error_name: str | None, recipients: Iterable[str], sender: str) -> EmailMessage:
    """A short plain-text notice that a scheduled run did not succeed (no error message: it may quote data)."""
    on = f" on {dataset}" if dataset else ""
    message = _new_message(f"{SUBJECT_PREFIX} {analysis}{on}: run {status}", sender, recipients)
    facts = [f"Run: {run_id}" if run_id else None, f"Error: {error_name}" if error_name else None,
             f"Time: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"]
    lines = [f"The scheduled job {job_id!r} ran {analysis}{on} and the run ended with status {status}.",
             *(fact for fact in facts if fact), "", "No report is sent for this run; the run record and the scheduler log say more."]
    message.set_content("\n".join(lines) + "\n")
    return message


# ----------------------------------------------------------------------------- sending


def _transient(exc: Exception) -> bool:
    """True for a failure worth another attempt: no connection, a timeout, or a 4xx reply."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return any(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return False
    return isinstance(exc, OSError)


def send_once(message: EmailMessage, settings: SmtpSettings) -> dict[str, tuple[int, bytes]]:
    """Send ``message`` over one SMTP connection; return the recipients the server refused (usually none)."""
    context = ssl.create_default_context()
    if settings.port == 465:
        connection: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout_s, context=context)
    else:
        connection = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
    with connection as smtp:
        if settings.starttls and settings.port != 465:
            smtp.starttls(context=context)
        if settings.user:
            smtp.login(settings.user, settings.password or "")
        return smtp.send_message(message)


def _masked_addresses(addresses: Iterable[str]) -> list[str]:
    from crm_analytics import privacy

    return privacy.mask_email(pd.Series(list(addresses), dtype="object")).astype(str).tolist()


def send_with_retries(message: EmailMessage, settings: SmtpSettings, log: Callable[..., Any], *,
                      sleep: Callable[[float], None] = time.sleep, **fields: Any) -> bool:
    """Send ``message``, retrying transient failures up to ``settings.attempts`` times with doubling pauses.

    Every attempt is logged through ``log(event, **fields)``: ``mail_sent`` or ``mail_error``, then
    ``mail_failed`` when no attempt succeeded. Recipients appear in the log masked. Returns whether it was sent.
    """
    fields = {**fields, "message_id": message["Message-ID"]}
    for attempt in range(1, settings.attempts + 1):
        try:
            refused = send_once(message, settings)
        except Exception as exc:  # noqa: BLE001 - every failure is logged; delivery never fails the run
            transient = _transient(exc)
            last = attempt >= settings.attempts or not transient
            delay = None if last else settings.delay_before(attempt + 1)
            log("mail_error", attempt=attempt, error=f"{type(exc).__name__}: {exc}", transient=transient, retry_in_s=delay, **fields)
            if last:
                log("mail_failed", attempts=attempt, **fields)
                return False
            sleep(delay)
            continue
        log("mail_sent", attempt=attempt, recipients=len(getaddresses([message["To"]])), refused=_masked_addresses(refused), **fields)
        return True
    return False


def deliver(log: Callable[..., Any], options: MailOptions | Mapping[str, Any], *, status: str, run_dir: str | Path | None,
            job_id: str, analysis: str, dataset: str | None = None, run_id: str | None = None, error_name: str | None = None,
            environ: Mapping[str, str] | None = None, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Mail what a finished scheduled run calls for; log every step through ``log``; never raise.

    A ``succeeded`` run with a report sends the report; a run that ended otherwise (and is not
    ``not_applicable``) sends the failure notice when ``on_failure`` is ``notice``, else nothing.
    Returns whether a mail was sent.
    """
    options = options if isinstance(options, MailOptions) else MailOptions.from_kwargs(options)
    fields = {"job_id": job_id, "analysis": analysis, "dataset": dataset, "run_id": run_id}
    succeeded = status == "succeeded"
    if succeeded and (run_dir is None or not (Path(run_dir) / REPORT_NAME).is_file()):
        log("mail_error", kind="report", attempt=0, error=f"the run left no {REPORT_NAME} to mail", transient=False, retry_in_s=None, **fields)
        return False
    if not succeeded and (status == "not_applicable" or options.on_failure != "notice"):
        return False
    kind = "report" if succeeded else "failure_notice"
    try:
        settings = load_settings(environ)
        if succeeded:
            mail = build_report_message(run_dir, options, sender=settings.sender, analysis=analysis, dataset=dataset)
            if mail.unmasked:
                log("mail_refused", kind=kind, unmasked=mail.unmasked,
                    reason="the report shows unmasked contact data; mask it in the notebook (privacy.mask_frame)", **fields)
                return False
            if mail.attachments.left_out:
                log("mail_note", kind=kind, left_out=[f"{name}: {reason}" for name, reason in mail.attachments.left_out], **fields)
            message = mail.message
        else:
            message = build_failure_notice(job_id=job_id, analysis=analysis, dataset=dataset, status=status, run_id=run_id,
                                           error_name=error_name, recipients=options.recipients, sender=settings.sender)
    except Exception as exc:  # noqa: BLE001 - a mail that cannot be built is logged; the run's status stands
        log("mail_error", kind=kind, attempt=0, error=f"{type(exc).__name__}: {exc}", transient=False, retry_in_s=None, **fields)
        return False
    return send_with_retries(message, settings, log, sleep=sleep, kind=kind, **fields)

"""Who sees which rows on the stakeholder pages: viewer groups and their row filters (``parameters/access.yaml``,
or the ``access:`` block of the served dataset's file).

The file declares viewer groups. Each group lists its viewers, by the identity the reverse proxy in front of
``crm-analytics serve`` sends (``--viewer-header``), and one row filter::

    groups:
      east_sales:
        viewers: [alice@example.org, bob@example.org]
        rows: {province: [Shanghai, Jiangsu]}    # rows whose province is one of these
      sales_reps:
        viewers: [Zhang Wei, Li Na]
        rows: {owner: $viewer}                    # rows whose owner is the viewer's own identity
      leadership:
        viewers: [ceo@example.org]
        rows: all                                 # every row

A viewer belongs to at most one group; a viewer in no group is refused. Values are compared as text, exactly
(identities too). The file is read only when the server takes identities from a proxy; without that every
visitor sees every row, as before.

A dataset file (``parameters/datasets/<name>.yaml``) may hold the same content under ``access:``, so that a
project serving two markets gives each its own viewer groups::

    access:
      groups:
        uk_sales: {viewers: [amy@shop.example], rows: {country: [United Kingdom]}}

Which groups a server uses (``serving_access``), decided once when it starts:

1. ``--access-file`` (or ``$CRM_ANALYTICS_ACCESS_FILE``): an explicit choice of the operator wins;
2. else the served dataset's ``access:`` block, when the file has that key (even with no groups: then every
   viewer is refused);
3. else ``parameters/access.yaml``.

The chosen source is used whole: groups are never merged from two places, because a viewer's rows must depend on
one file and a viewer listed in both would have two filters. A server whose source shadows another that declares
groups (the dataset block over ``parameters/access.yaml``, ``--access-file`` over the dataset block) still starts:
refusing would forbid the plain layout where one dataset has its own groups and the others share
``parameters/access.yaml``. Its start-up log says which groups it uses and warns, naming the file, that the
others are not used, so that an edit there (a viewer removed, say) is not believed to apply. The server re-reads the chosen source on every request, so edits take
effect at once; a source that becomes invalid (the block removed, a typo) refuses every viewer until fixed.
Page kernels read the same source: the server passes the file in ``ACCESS_FILE_ENV`` and, for a dataset
block, the key ``access`` in ``ACCESS_KEY_ENV`` (``AccessSource.environment``), never the group list itself.
Errors name the file and the key path, e.g. ``uk.yaml: access.groups.uk_sales.rows: ...``.

This module holds the pure parts: reading and checking the file or block (``load_access``, errors name the
file, the key path and close matches), which one a server uses (``serving_access``, ``AccessSource``), the group of a viewer (``viewer_group``), the identity of a proxied request
(``identify_viewer``), the variables that carry the viewer to a page kernel (``viewer_environment``,
``current_viewer``) and the filtering of a table (``filter_rows``, ``filter_by_lookup``). Which tables a page
filters, and how, is ``crm_analytics.pages``'s business.
"""

from __future__ import annotations

import difflib
import hmac
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from crm_analytics import paths

ACCESS_FILE_NAME = "access.yaml"  # under parameters/
ACCESS_FILE_ENV = "CRM_ANALYTICS_ACCESS_FILE"  # another access file (the server passes its own to page kernels)
ACCESS_KEY_ENV = "CRM_ANALYTICS_ACCESS_KEY"  # DATASET_ACCESS_KEY: ACCESS_FILE_ENV is a dataset file, groups in its block
DATASET_ACCESS_KEY = "access"  # the key of a dataset file holding the dataset's own viewer groups
VIEWER_ENV = "CRM_ANALYTICS_VIEWER"  # the viewer's identity, in a page kernel's environment
GROUP_ENV = "CRM_ANALYTICS_VIEWER_GROUP"  # the viewer's group, in a page kernel's environment
REQUIRED_ENV = "CRM_ANALYTICS_VIEWER_REQUIRED"  # "1": a page kernel without a viewer group shows nothing
VIEWER_PLACEHOLDER = "$viewer"  # a row filter value meaning "the viewer's own identity"
ALL_ROWS = "all"  # a group's rows: every row
DEFAULT_SECRET_HEADER = "X-Proxy-Secret"
GROUP_KEYS = ("viewers", "rows", "description")


class AccessError(ValueError):
    """The access file is missing or malformed, or a page kernel's viewer does not match it."""


class ViewerRefused(PermissionError):
    """A proxied request whose viewer cannot be let in; the message says why (never the secret)."""


@dataclass(frozen=True)
class RowFilter:
    """One group's rows: those whose ``column`` holds one of ``values``, or the viewer's identity when
    ``is_viewer``; every row when ``column`` is ``None``."""

    column: str | None = None
    values: tuple[str, ...] = ()
    is_viewer: bool = False

    @property
    def sees_all_rows(self) -> bool:
        return self.column is None

    def allowed_values(self, viewer: str) -> tuple[str, ...]:
        """The values of ``column`` a row needs for ``viewer`` to see it."""
        return (viewer,) if self.is_viewer else self.values


@dataclass(frozen=True)
class ViewerGroup:
    """A group of viewers (identities as the proxy sends them) sharing one row filter."""

    name: str
    viewers: tuple[str, ...]
    rows: RowFilter
    description: str = ""


@dataclass(frozen=True)
class AccessPolicy:
    """The viewer groups of one access file or dataset block (``source`` names the file in messages, ``key_path``
    the block: ``""`` for a whole access file, ``"access"`` for a dataset file's block)."""

    groups: tuple[ViewerGroup, ...]
    source: str = ACCESS_FILE_NAME
    key_path: str = ""

    def where(self, *keys: str) -> str:
        """``source: key.path`` for messages, e.g. ``uk.yaml: access.groups.east`` (just ``source`` without keys)."""
        return _where(self.source, self.key_path, *keys)

    def group_named(self, name: str) -> ViewerGroup:
        """The group called ``name``; ``AccessError`` naming the file, the key path and close matches otherwise."""
        for group in self.groups:
            if group.name == name:
                return group
        raise AccessError(f"{self.where('groups')}: no viewer group {name!r}{_close(name, [g.name for g in self.groups])}")


@dataclass(frozen=True)
class Viewer:
    """The person a page is drawn for: ``identity`` and ``group``."""

    identity: str
    group: ViewerGroup

    @property
    def sees_all_rows(self) -> bool:
        return self.group.rows.sees_all_rows

    def allowed_values(self) -> tuple[str, ...]:
        return self.group.rows.allowed_values(self.identity)


def _close(word: str, candidates: Iterable[str]) -> str:
    matches = difflib.get_close_matches(str(word), list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""


def _where(source: str, *keys: str) -> str:
    """``source: a.b.c`` from the non-empty ``keys``; just ``source`` when there are none."""
    path = ".".join(str(k) for k in keys if k)
    return f"{source}: {path}" if path else source


# --------------------------------------------------------------------------------------------------
# the file


def access_file(environ: Mapping[str, str] = os.environ) -> Path:
    """The access file: ``$CRM_ANALYTICS_ACCESS_FILE`` when set, else ``parameters/access.yaml``."""
    configured = environ.get(ACCESS_FILE_ENV, "").strip()
    return Path(configured).expanduser() if configured else paths.parameters_dir() / ACCESS_FILE_NAME


def _text_list(value, *, where: str) -> tuple[str, ...]:
    """A YAML scalar or list of scalars as a tuple of stripped texts; ``AccessError`` for anything else."""
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(v, (dict, list)) or v is None or str(v).strip() == "" for v in items):
        raise AccessError(f"{where}: expected a value or a list of values, got {value!r}")
    return tuple(str(v).strip() for v in items)


def parse_row_filter(value, *, where: str) -> RowFilter:
    """Read a group's ``rows``: ``all``, ``{column: [values]}``, ``{column: value}`` or ``{column: $viewer}``."""
    if isinstance(value, str) and value.strip().lower() == ALL_ROWS:
        return RowFilter()
    if not isinstance(value, dict) or len(value) != 1:
        raise AccessError(f"{where}: expected 'all' or one column with its values, e.g. {{region: [East, North]}} or {{owner: {VIEWER_PLACEHOLDER}}}; got {value!r}")
    (column, values), = value.items()
    if not isinstance(column, str) or not column.strip():
        raise AccessError(f"{where}: the column name must be text, got {column!r}")
    if isinstance(values, str) and values.strip() == VIEWER_PLACEHOLDER:
        return RowFilter(column.strip(), (), is_viewer=True)
    allowed = _text_list(values, where=f"{where}.{column}")
    if VIEWER_PLACEHOLDER in allowed:
        raise AccessError(f"{where}.{column}: {VIEWER_PLACEHOLDER} stands alone ({column}: {VIEWER_PLACEHOLDER}), not in a list")
    return RowFilter(column.strip(), allowed)


def parse_access(document, *, source: str = ACCESS_FILE_NAME, key_path: str = "") -> AccessPolicy:
    """Check a loaded access document and return its ``AccessPolicy``.

    ``document`` is ``{"groups": {name: {"viewers": [...], "rows": ...}}}`` (see the module); ``key_path`` is
    where it sits in ``source`` (``"access"`` for a dataset file's block, ``""`` for an access file). Raises
    ``AccessError`` naming ``source`` and the key path (``access.groups.east.rows``): an unknown key (with close
    matches), no viewers, a malformed row filter, or a viewer listed in two groups.
    """
    holder = f"the {key_path} block" if key_path else "the file"
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise AccessError(f"{_where(source, key_path)}: expected a mapping with a 'groups' key, got {type(document).__name__}")
    unknown = [k for k in document if k != "groups"]
    if unknown:
        raise AccessError(f"{_where(source, key_path)}: unknown key {unknown[0]!r}{_close(unknown[0], ['groups'])}; {holder} holds 'groups'")
    raw_groups = document.get("groups") or {}
    if not isinstance(raw_groups, dict):
        raise AccessError(
            f"{_where(source, key_path, 'groups')}: must map group names to their viewers and rows, got {type(raw_groups).__name__}"
        )
    groups, member_of = [], {}
    for name, body in raw_groups.items():
        where = _where(source, key_path, "groups", str(name))
        if not isinstance(body, dict):
            raise AccessError(f"{where}: expected the keys {', '.join(GROUP_KEYS[:2])}, got {body!r}")
        for key in body:
            if key not in GROUP_KEYS:
                raise AccessError(f"{where}: unknown key {key!r}{_close(str(key), GROUP_KEYS)}; a group has {', '.join(GROUP_KEYS)}")
        for key in GROUP_KEYS[:2]:
            if key not in body:
                raise AccessError(f"{where}: missing key {key!r}")
        viewers = _text_list(body["viewers"], where=f"{where}.viewers")
        for viewer in viewers:
            if viewer in member_of:
                raise AccessError(f"{where}.viewers: {viewer!r} is already in group {member_of[viewer]!r}; a viewer belongs to one group")
            member_of[viewer] = str(name)
        rows = parse_row_filter(body["rows"], where=f"{where}.rows")
        groups.append(ViewerGroup(str(name), viewers, rows, str(body.get("description") or "")))
    return AccessPolicy(tuple(groups), source, key_path)


def _read_yaml(file: Path):
    """The parsed YAML of ``file``; ``AccessError`` naming it when it is missing or not valid YAML."""
    if not file.is_file():
        raise AccessError(f"access file not found: {file} (it declares the viewer groups and their rows; see {ACCESS_FILE_NAME} in parameters/)")
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise AccessError(f"{file}: not valid YAML ({error})") from None


def has_dataset_access(dataset_file: str | os.PathLike) -> bool:
    """Whether the dataset file declares its own viewer groups (holds the key ``access``, whatever its value).

    Raises ``AccessError`` naming the file when it is missing or not valid YAML.
    """
    document = _read_yaml(Path(dataset_file).expanduser())
    return isinstance(document, dict) and DATASET_ACCESS_KEY in document


def load_access(path: str | os.PathLike | None = None, *, key: str = "") -> AccessPolicy:
    """Read and check the viewer groups of an access file, or of a dataset file's ``access`` block (``key="access"``).

    Without ``path``, the source page kernels are given (``access_source()``: ``$CRM_ANALYTICS_ACCESS_FILE`` and
    ``$CRM_ANALYTICS_ACCESS_KEY``, else ``parameters/access.yaml``). Raises ``AccessError`` for a missing file,
    invalid YAML, a dataset file without the block, or invalid content (see ``parse_access``), naming the file
    and the key path.
    """
    if path is None:
        source = access_source()
        path, key = source.file, source.key
    file = Path(path).expanduser()
    document = _read_yaml(file)
    if not key:
        return parse_access(document, source=str(file))
    if key != DATASET_ACCESS_KEY:
        raise AccessError(f"{file}: viewer groups are read from a whole access file or a dataset's {DATASET_ACCESS_KEY!r} block, not {key!r}")
    if not isinstance(document, dict) or key not in document:
        raise AccessError(f"{file}: no {key!r} block (the viewer groups of this dataset are read there)")
    return parse_access(document[key], source=str(file), key_path=key)


@dataclass(frozen=True)
class AccessSource:
    """Where a server's viewer groups are read: an access file (``key`` empty) or a dataset file's ``access`` block
    (``key="access"``). ``file`` is absolute when the server chose it."""

    file: Path
    key: str = ""

    @property
    def is_dataset_block(self) -> bool:
        return self.key == DATASET_ACCESS_KEY

    def load(self) -> AccessPolicy:
        """The groups, read afresh (see ``load_access``)."""
        return load_access(self.file, key=self.key)

    def environment(self) -> dict[str, str]:
        """The variables that make a page kernel read this source (``access_source`` reads them back)."""
        return {ACCESS_FILE_ENV: str(self.file), ACCESS_KEY_ENV: self.key}

    def describe(self) -> str:
        """For people, e.g. ``the access block of dataset file /p/parameters/datasets/uk.yaml``."""
        return f"the {self.key} block of dataset file {self.file}" if self.is_dataset_block else f"access file {self.file}"


def access_source(environ: Mapping[str, str] = os.environ) -> AccessSource:
    """The source a page kernel reads: ``$CRM_ANALYTICS_ACCESS_FILE`` with ``$CRM_ANALYTICS_ACCESS_KEY`` (set by the
    server, ``AccessSource.environment``), else ``parameters/access.yaml``. ``AccessError`` for a key without a
    file or a key other than ``access``."""
    key = environ.get(ACCESS_KEY_ENV, "").strip()
    if key and key != DATASET_ACCESS_KEY:
        raise AccessError(f"{ACCESS_KEY_ENV}={key!r}: expected {DATASET_ACCESS_KEY!r} or nothing")
    if key and not environ.get(ACCESS_FILE_ENV, "").strip():
        raise AccessError(f"{ACCESS_KEY_ENV} names a dataset block but {ACCESS_FILE_ENV} names no dataset file")
    return AccessSource(access_file(environ), key)


@dataclass(frozen=True)
class AccessChoice:
    """The viewer groups a server uses (``source``) and another source declaring groups it does not use (``unused``,
    with ``unused_groups`` of them): the dataset block beside ``--access-file``, ``parameters/access.yaml`` beside
    the dataset block."""

    source: AccessSource
    unused: AccessSource | None = None
    unused_groups: int = 0

    def log_lines(self, policy: AccessPolicy) -> list[tuple[int, str]]:
        """``(logging level, message)`` for the server's start-up log: which groups (``policy``, read from
        ``source``), and a warning naming the access file whose groups are shadowed."""
        lines = [(logging.INFO, f"rows per viewer: {len(policy.groups)} viewer group(s) from {self.source.describe()}")]
        if self.unused is not None:
            lines.append((
                logging.WARNING,
                f"rows per viewer: the {self.unused_groups} group(s) of {self.unused.describe()} are NOT used by this server; "
                f"{self.source.describe()} takes precedence",
            ))
        return lines


def _declared_group_count(source: AccessSource) -> int:
    """How many groups ``source`` declares, without checking them (0 for a missing or unreadable file: it is not used)."""
    try:
        document = _read_yaml(source.file)
    except AccessError:
        return 0
    if source.key:
        document = document.get(source.key) if isinstance(document, dict) else None
    groups = document.get("groups") if isinstance(document, dict) else None
    return len(groups) if isinstance(groups, dict) else 0


def _choice(source: AccessSource, other: AccessSource | None) -> AccessChoice:
    """``source`` chosen; ``other`` reported as unused when it declares groups."""
    count = _declared_group_count(other) if other is not None else 0
    return AccessChoice(source, other if count else None, count)


def serving_access(
    access_file_option: str | os.PathLike | None,
    *,
    dataset_file: str | os.PathLike,
    environ: Mapping[str, str] = os.environ,
    default_file: str | os.PathLike | None = None,
) -> AccessChoice:
    """Which viewer groups a server of the dataset declared in ``dataset_file`` uses (the rules of the module).

    Parameters
    ----------
    access_file_option : path, optional
        ``--access-file``; ``$CRM_ANALYTICS_ACCESS_FILE`` in ``environ`` stands for it when absent.
    dataset_file : path
        The served dataset's file (``parameters/datasets/<name>.yaml``).
    environ : mapping
        The server's environment.
    default_file : path, optional
        The project's access file (default ``parameters/access.yaml``).

    Returns
    -------
    AccessChoice
        The source (absolute paths) and the source it shadows when that one declares groups. Nothing is checked
        beyond reading the dataset file (``AccessError`` when it is missing or not YAML): call
        ``AccessChoice.source.load()`` to validate the groups.
    """
    dataset_file = Path(dataset_file).expanduser().resolve()
    block = AccessSource(dataset_file, DATASET_ACCESS_KEY) if has_dataset_access(dataset_file) else None
    explicit = access_file_option or environ.get(ACCESS_FILE_ENV, "").strip()
    if explicit:
        return _choice(AccessSource(Path(explicit).expanduser().resolve()), block)
    default = AccessSource(Path(default_file or paths.parameters_dir() / ACCESS_FILE_NAME).expanduser().resolve())
    return _choice(block, default) if block is not None else _choice(default, None)


def viewer_group(policy: AccessPolicy, identity: str | None) -> ViewerGroup | None:
    """The group listing ``identity`` (exact text, surrounding spaces ignored), or ``None`` for an unknown viewer."""
    wanted = (identity or "").strip()
    if not wanted:
        return None
    return next((g for g in policy.groups if wanted in g.viewers), None)


# --------------------------------------------------------------------------------------------------
# identity from a trusted reverse proxy


@dataclass(frozen=True)
class ProxySettings:
    """How the server trusts a reverse proxy: the header carrying the viewer's identity, and either a shared
    ``secret`` the proxy sends in ``secret_header`` or the addresses the proxy connects from (``trusted_proxies``);
    both when both are given."""

    viewer_header: str
    secret: str | None = None
    secret_header: str = DEFAULT_SECRET_HEADER
    trusted_proxies: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.viewer_header.strip():
            raise ValueError("the viewer header name is empty")
        if not self.secret and not self.trusted_proxies:
            raise ValueError(
                f"taking viewers from the header {self.viewer_header!r} needs a proof that the request came through the proxy: "
                "a shared secret file (--proxy-secret-file) or the proxy's address (--trusted-proxy)"
            )


def _header_values(headers, name: str) -> list[str]:
    """Every value of header ``name`` (case-insensitive) in a tornado ``HTTPHeaders`` or a plain mapping."""
    if hasattr(headers, "get_list"):
        return list(headers.get_list(name))
    return [v for k, v in headers.items() if k.lower() == name.lower()]


def identify_viewer(headers, remote_ip: str, *, proxy: ProxySettings, policy: AccessPolicy) -> Viewer:
    """The viewer of a request that came through the trusted proxy.

    Parameters
    ----------
    headers : mapping of str to str (or tornado ``HTTPHeaders``)
        The request's headers.
    remote_ip : str
        The address the request came from (the proxy's).
    proxy : ProxySettings
        The header names, the shared secret and the trusted addresses.
    policy : AccessPolicy
        The viewer groups.

    Returns
    -------
    Viewer

    Raises ``ViewerRefused`` for a request from an untrusted address, with a missing or wrong secret, without
    the identity header (or with it twice), or from a viewer in no group.
    """
    if proxy.trusted_proxies and remote_ip not in proxy.trusted_proxies:
        raise ViewerRefused(f"request from {remote_ip}, which is not a trusted proxy")
    if proxy.secret:
        sent = _header_values(headers, proxy.secret_header)
        if len(sent) != 1 or not hmac.compare_digest(sent[0].strip().encode("utf-8"), proxy.secret.encode("utf-8")):
            raise ViewerRefused(f"missing or wrong proxy secret ({proxy.secret_header})")
    identities = [v.strip() for v in _header_values(headers, proxy.viewer_header)]
    if len(identities) != 1 or not identities[0]:
        raise ViewerRefused(f"no single viewer identity in {proxy.viewer_header}")
    group = viewer_group(policy, identities[0])
    if group is None:
        raise ViewerRefused(f"viewer {identities[0]!r} is in no viewer group")
    return Viewer(identities[0], group)


def viewer_environment(viewer: Viewer) -> dict[str, str]:
    """The variables that carry ``viewer`` to the page kernel drawn for them."""
    return {VIEWER_ENV: viewer.identity, GROUP_ENV: viewer.group.name}


def current_viewer(environ: Mapping[str, str] = os.environ, *, policy: AccessPolicy | None = None) -> Viewer | None:
    """The viewer this page kernel draws for, from ``viewer_environment``'s variables; ``None`` when the server
    takes no identities (every row shown).

    Raises ``AccessError`` when the server requires a viewer (``REQUIRED_ENV``) and none is set, or the group is
    not among the groups the server uses (default ``access_source(environ)``), or the viewer is not among its viewers: a page
    then shows nothing rather than every row.
    """
    group_name = environ.get(GROUP_ENV, "").strip()
    if not group_name:
        if environ.get(REQUIRED_ENV) == "1":
            raise AccessError("this page server shows rows per viewer, but no viewer reached this page")
        return None
    policy = policy if policy is not None else access_source(environ).load()
    group = policy.group_named(group_name)
    identity = environ.get(VIEWER_ENV, "").strip()
    if identity not in group.viewers:
        raise AccessError(f"{policy.where('groups', group_name, 'viewers')}: viewer {identity!r} is not in group {group_name!r}")
    return Viewer(identity, group)


# --------------------------------------------------------------------------------------------------
# filtering


def filter_rows(table: pd.DataFrame, viewer: Viewer) -> pd.DataFrame:
    """The rows of ``table`` ``viewer`` may see (all of them for an unrestricted group).

    ``table`` must hold the group's filter column (``KeyError`` naming it and the columns there otherwise);
    values are compared as text, missing values never match. Returns a copy with a fresh index.
    """
    rows = viewer.group.rows
    if rows.sees_all_rows:
        return table.copy()
    if rows.column not in table.columns:
        raise KeyError(f"filter_rows(table): no column {rows.column!r} to filter on; the table has {list(table.columns)}")
    values = table[rows.column]
    keep = values.notna() & values.astype("string").str.strip().isin(viewer.allowed_values())
    return table[keep.fillna(False).astype(bool)].reset_index(drop=True)


def filter_by_lookup(table: pd.DataFrame, lookup: pd.DataFrame, viewer: Viewer, *, key_col: str) -> pd.DataFrame:
    """The rows of ``table`` whose ``key_col`` is, in ``lookup``, a key ``viewer`` may see.

    ``lookup`` has one row per key with ``key_col`` and the group's filter column (per-customer attributes,
    say): a table without the column itself is filtered through it. Keys absent from ``lookup`` are not
    shown. Returns the kept rows of ``table`` (same columns), with a fresh index.
    """
    rows = viewer.group.rows
    if rows.sees_all_rows:
        return table.copy()
    for frame, what in ((table, "table"), (lookup, "lookup")):
        if key_col not in frame.columns:
            raise KeyError(f"filter_by_lookup({what}): no column {key_col!r}; it has {list(frame.columns)}")
    allowed_keys = filter_rows(lookup[[key_col, rows.column]], viewer)[key_col]
    return table[table[key_col].isin(allowed_keys)].reset_index(drop=True)

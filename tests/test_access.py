"""Viewer groups and their row filters (``crm_analytics.access``): the access file, proxied identities, filtering."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml

from crm_analytics import access, audience_pages, serve

DOCUMENT = {
    "groups": {
        "south": {"viewers": ["alice@example.org", "bob@example.org"], "rows": {"province": ["Guangdong", "Fujian"]}},
        "reps": {"viewers": ["Zhang Wei"], "rows": {"owner": "$viewer"}},
        "leadership": {"viewers": "ceo@example.org", "rows": "all", "description": "the board"},
    }
}
POLICY = access.parse_access(DOCUMENT, source="access.yaml")
PROXY = access.ProxySettings("X-Forwarded-User", secret="s3cret-value", trusted_proxies=frozenset({"127.0.0.1"}))


def viewer(identity: str) -> access.Viewer:
    return access.Viewer(identity, access.viewer_group(POLICY, identity))


# --------------------------------------------------------------------------------------------------
# the file


def test_a_valid_file_gives_each_group_its_viewers_and_rows():
    south, reps, leadership = POLICY.groups
    assert south.viewers == ("alice@example.org", "bob@example.org")
    assert south.rows == access.RowFilter("province", ("Guangdong", "Fujian"))
    assert reps.rows.is_viewer and reps.rows.allowed_values("Zhang Wei") == ("Zhang Wei",)
    assert leadership.viewers == ("ceo@example.org",) and leadership.rows.sees_all_rows and leadership.description == "the board"


def test_the_shipped_file_is_valid():
    assert isinstance(access.load_access(access.access_file({})), access.AccessPolicy)


def test_the_file_is_read_from_disk_and_errors_name_it(tmp_path):
    path = tmp_path / "access.yaml"
    path.write_text("groups:\n  south:\n    viewers: [alice]\n    rowz: all\n", encoding="utf-8")
    with pytest.raises(access.AccessError, match=r"access.yaml: groups.south: unknown key 'rowz' \(did you mean 'rows'\?\)"):
        access.load_access(path)
    with pytest.raises(access.AccessError, match="access file not found"):
        access.load_access(tmp_path / "missing.yaml")
    path.write_text("groups: [unclosed\n", encoding="utf-8")
    with pytest.raises(access.AccessError, match="not valid YAML"):
        access.load_access(path)


MALFORMED = [  # (document, the key path the message names, what it says)
    ({"grups": {}}, "", r"unknown key 'grups' \(did you mean 'groups'\?\)"),
    ({"groups": ["a"]}, "groups", r"must map group names"),
    ({"groups": {"a": {"rows": "all"}}}, "groups.a", r"missing key 'viewers'"),
    ({"groups": {"a": {"viewers": [], "rows": "all"}}}, "groups.a.viewers", r"expected a value or a list"),
    ({"groups": {"a": {"viewers": ["x"], "rows": "some"}}}, "groups.a.rows", r"expected 'all' or one column"),
    ({"groups": {"a": {"viewers": ["x"], "rows": {"region": ["East"], "owner": "$viewer"}}}}, "groups.a.rows", r"expected 'all' or one column"),
    ({"groups": {"a": {"viewers": ["x"], "rows": {"region": [None]}}}}, "groups.a.rows.region", r"expected a value"),
    ({"groups": {"a": {"viewers": ["x"], "rows": {"owner": ["$viewer", "y"]}}}}, "groups.a.rows.owner", r"\$viewer stands alone"),
    ({"groups": {"a": {"viewers": ["x"], "rows": "all"}, "b": {"viewers": ["x"], "rows": "all"}}}, "groups.b.viewers", r"'x' is already in group 'a'"),
]


def key_path_message(source: str, *keys: str) -> str:
    """The start of an error message naming ``source`` and the dotted key path of the non-empty ``keys``."""
    path = ".".join(k for k in keys if k)
    return re.escape(f"{source}: {path}: " if path else f"{source}: ")


@pytest.mark.parametrize(("document", "key_path", "message"), MALFORMED)
def test_a_malformed_file_names_the_group_and_key(document, key_path, message):
    with pytest.raises(access.AccessError, match="^" + key_path_message("access.yaml", key_path) + message):
        access.parse_access(document, source="access.yaml")


def test_a_viewer_is_found_in_their_group_and_an_unknown_one_in_none():
    assert access.viewer_group(POLICY, " bob@example.org ").name == "south"
    assert access.viewer_group(POLICY, "mallory@example.org") is None
    assert access.viewer_group(POLICY, "") is None
    assert access.viewer_group(POLICY, "Bob@example.org") is None  # identities are compared exactly
    with pytest.raises(access.AccessError, match=r"no viewer group 'sout' \(did you mean 'south'\?\)"):
        POLICY.group_named("sout")


# --------------------------------------------------------------------------------------------------
# identity from the proxy


def test_a_proxied_request_gives_its_viewer():
    headers = {"x-forwarded-user": "alice@example.org", "X-Proxy-Secret": "s3cret-value"}
    assert access.identify_viewer(headers, "127.0.0.1", proxy=PROXY, policy=POLICY) == viewer("alice@example.org")


@pytest.mark.parametrize(
    ("headers", "remote", "reason"),
    [
        ({"X-Forwarded-User": "alice@example.org", "X-Proxy-Secret": "s3cret-value"}, "10.0.0.9", "not a trusted proxy"),
        ({"X-Forwarded-User": "alice@example.org", "X-Proxy-Secret": "wrong"}, "127.0.0.1", "wrong proxy secret"),
        ({"X-Forwarded-User": "alice@example.org"}, "127.0.0.1", "wrong proxy secret"),
        ({"X-Proxy-Secret": "s3cret-value"}, "127.0.0.1", "no single viewer identity"),
        ({"X-Forwarded-User": " ", "X-Proxy-Secret": "s3cret-value"}, "127.0.0.1", "no single viewer identity"),
        ({"X-Forwarded-User": "mallory@example.org", "X-Proxy-Secret": "s3cret-value"}, "127.0.0.1", "in no viewer group"),
    ],
)
def test_a_request_not_from_the_proxy_or_from_an_unknown_viewer_is_refused(headers, remote, reason):
    with pytest.raises(access.ViewerRefused, match=reason):
        access.identify_viewer(headers, remote, proxy=PROXY, policy=POLICY)


def test_a_viewer_header_sent_twice_is_refused():
    from tornado.httputil import HTTPHeaders

    headers = HTTPHeaders({"X-Proxy-Secret": "s3cret-value"})
    headers.add("X-Forwarded-User", "mallory@example.org")
    headers.add("X-Forwarded-User", "alice@example.org")
    with pytest.raises(access.ViewerRefused, match="no single viewer identity"):
        access.identify_viewer(headers, "127.0.0.1", proxy=PROXY, policy=POLICY)


def test_the_viewer_header_needs_a_secret_or_a_trusted_address(tmp_path):
    with pytest.raises(ValueError, match="--proxy-secret-file"):
        access.ProxySettings("X-Forwarded-User")
    assert serve.viewer_proxy_settings(None) is None
    with pytest.raises(ValueError, match="only used with --viewer-header"):
        serve.viewer_proxy_settings(None, trusted_proxies=["127.0.0.1"])
    secret = tmp_path / "secret"
    secret.write_text("  shared  \n", encoding="utf-8")
    settings = serve.viewer_proxy_settings("X-Forwarded-User", proxy_secret_file=secret)
    assert settings.secret == "shared" and settings.trusted_proxies == frozenset()
    secret.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        serve.viewer_proxy_settings("X-Forwarded-User", proxy_secret_file=secret)


def test_without_viewers_from_a_proxy_no_viewer_reaches_a_page_kernel(monkeypatch, tmp_path):
    monkeypatch.setenv(access.GROUP_ENV, "leadership")
    monkeypatch.setenv(access.VIEWER_ENV, "ceo@example.org")
    for name in (access.REQUIRED_ENV, access.ACCESS_FILE_ENV, access.ACCESS_KEY_ENV):  # set here so that they are removed after the test
        monkeypatch.setenv(name, "")
    serve._kernel_viewer_environment(None)
    import os

    assert access.GROUP_ENV not in os.environ and access.VIEWER_ENV not in os.environ and access.REQUIRED_ENV not in os.environ
    serve._kernel_viewer_environment(access.AccessSource(tmp_path / "access.yaml"))
    assert os.environ[access.REQUIRED_ENV] == "1" and os.environ[access.ACCESS_FILE_ENV] == str(tmp_path / "access.yaml")
    assert access.access_source(os.environ) == access.AccessSource(tmp_path / "access.yaml")


# --------------------------------------------------------------------------------------------------
# the viewer in a page kernel


def test_a_page_kernel_knows_its_viewer_from_the_environment():
    environ = access.viewer_environment(viewer("bob@example.org"))
    assert environ == {access.VIEWER_ENV: "bob@example.org", access.GROUP_ENV: "south"}
    assert access.current_viewer(environ, policy=POLICY) == viewer("bob@example.org")
    assert access.current_viewer({}, policy=POLICY) is None  # no viewers from a proxy: every row


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({access.REQUIRED_ENV: "1"}, "no viewer reached this page"),
        ({access.GROUP_ENV: "north", access.VIEWER_ENV: "alice@example.org"}, "no viewer group 'north'"),
        ({access.GROUP_ENV: "leadership", access.VIEWER_ENV: "alice@example.org"}, "'alice@example.org' is not in group 'leadership'"),
    ],
)
def test_a_page_kernel_without_a_valid_viewer_fails_rather_than_showing_every_row(environ, message):
    with pytest.raises(access.AccessError, match=message):
        access.current_viewer(environ, policy=POLICY)


# --------------------------------------------------------------------------------------------------
# filtering


REGIONS = pd.DataFrame({"customer_key": ["k1", "k2", "k3", "k4"], "province": ["Guangdong", "Fujian", "Zhejiang", None]})


def test_rows_are_kept_only_for_the_groups_values():
    table = pd.DataFrame({"province": ["Zhejiang", "Guangdong", None, " Fujian"], "n_customers": [1, 2, 3, 4]}, index=[9, 8, 7, 6])
    shown = access.filter_rows(table, viewer("alice@example.org"))
    assert shown["n_customers"].tolist() == [2, 4] and shown.index.tolist() == [0, 1]
    assert table.shape == (4, 2)  # the input is untouched
    assert access.filter_rows(table, viewer("ceo@example.org")).equals(table)


def test_an_owner_rule_keeps_the_viewers_own_rows():
    deals = pd.DataFrame({"opportunity_id": [1, 2, 3], "owner": ["Zhang Wei", "Li Na", "Zhang Wei"]})
    assert access.filter_rows(deals, viewer("Zhang Wei"))["opportunity_id"].tolist() == [1, 3]


def test_filtering_on_a_missing_column_names_it():
    with pytest.raises(KeyError, match="no column 'province'"):
        access.filter_rows(pd.DataFrame({"region": ["East"]}), viewer("alice@example.org"))


def test_a_per_customer_table_is_filtered_through_the_customer_attributes():
    scores = pd.DataFrame({"customer_key": ["k4", "k3", "k2", "k1", "k9"], "score": [4, 3, 2, 1, 9]})
    shown = access.filter_by_lookup(scores, REGIONS, viewer("alice@example.org"), key_col="customer_key")
    assert shown["customer_key"].tolist() == ["k2", "k1"] and list(shown.columns) == ["customer_key", "score"]
    with pytest.raises(KeyError, match="filter_by_lookup\\(table\\): no column 'customer_key'"):
        access.filter_by_lookup(scores.rename(columns={"customer_key": "key"}), REGIONS, viewer("alice@example.org"), key_col="customer_key")


def test_an_aggregate_recomputed_from_a_viewers_customers_hides_small_groups():
    customers = pd.DataFrame({"rfm_segment": ["Champions"] * 6 + ["Lost"] * 2, "monetary": [10.0] * 6 + [5.0, 5.0]})
    summary = audience_pages.group_summary(customers, "rfm_segment", k=5)
    champions, lost = summary.iloc[0], summary.iloc[1]
    assert (champions["n_customers"], champions["revenue_amount"], champions["revenue_pct"]) == (6, 60.0, pytest.approx(100 * 60 / 70))
    assert lost["rfm_segment"] == "Lost" and bool(lost["is_suppressed"]) and pd.isna(lost["n_customers"]) and pd.isna(lost["revenue_amount"])
    counts = audience_pages.group_summary(customers, "rfm_segment", amount_col=None, k=2)
    assert counts["n_customers"].tolist() == [6, 2] and "revenue_amount" not in counts


def test_a_restricted_viewer_sees_how_many_warnings_a_run_had_but_not_their_figures(tmp_path, monkeypatch):
    from crm_analytics import pages

    (tmp_path / "access.yaml").write_text(yaml.safe_dump(DOCUMENT), encoding="utf-8")
    warnings = [{"section": "Load", "message": "3,219 of 50,000 customers quarantined"}]
    monkeypatch.setenv(access.ACCESS_FILE_ENV, str(tmp_path / "access.yaml"))
    assert "3,219" in pages._warnings_html(warnings)  # no viewer from a proxy: every row, every warning
    monkeypatch.setenv(access.GROUP_ENV, "south")
    monkeypatch.setenv(access.VIEWER_ENV, "alice@example.org")
    shown = pages._warnings_html(warnings)
    assert "1 warning in this run" in shown and "3,219" not in shown and "quarantined" not in shown
    monkeypatch.setenv(access.GROUP_ENV, "leadership")
    monkeypatch.setenv(access.VIEWER_ENV, "ceo@example.org")
    assert "3,219" in pages._warnings_html(warnings)

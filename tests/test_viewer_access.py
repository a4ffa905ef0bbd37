"""Rows per viewer in the browser: ``crm-analytics serve`` taking viewers from a trusted proxy's header.

The server runs over the audience pages' project home (``test_audience_pages.audience_home``: real runs of a small
demo) with an access file of three groups: two see the customers of one province each, one sees every row. Requests
carry the viewer header and the proxy's shared secret as a reverse proxy would; Chromium sends them with every
request of a visit (``Visit(headers=...)``).
"""

from __future__ import annotations

import base64
import re
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest
import test_audience_pages
import yaml

from crm_analytics import access, paths, runner

import test_browser
from test_browser import PAGE_TIMEOUT_MS, free_port, start_server, stop_server

audience_home = test_audience_pages.audience_home  # the demo home with good runs of every page's analyses
browser, visit = test_browser.browser, test_browser.visit

HEADER = "X-Forwarded-User"
SECRET = "a-shared-secret-between-proxy-and-server"
VIEWERS = {"south": "alice@example.org", "east": "bob@example.org", "leadership": "ceo@example.org"}
READY = test_audience_pages.READY


def viewer_headers(identity: str | None, *, secret: str = SECRET) -> dict[str, str]:
    headers = {"X-Proxy-Secret": secret}
    if identity is not None:
        headers[HEADER] = identity
    return headers


def customer_regions(home) -> pd.DataFrame:
    path = home / "outputs" / paths.default_dataset() / "segmentation" / "latest" / "tables" / "customer_regions.parquet"
    return pd.read_parquet(path)


@pytest.fixture(scope="module")
def provinces(audience_home) -> dict[str, str]:
    """The province each restricted group sees: the two with the most customers."""
    first, second = customer_regions(audience_home)["province"].value_counts().index[:2]
    return {"south": str(first), "east": str(second)}


@pytest.fixture(scope="module")
def viewer_server(audience_home, provinces, tmp_path_factory):
    folder = tmp_path_factory.mktemp("viewer_access")
    access_file = folder / "access.yaml"
    groups = {name: {"viewers": [VIEWERS[name]], "rows": {"province": [province]}} for name, province in provinces.items()}
    groups["leadership"] = {"viewers": [VIEWERS["leadership"]], "rows": "all"}
    access_file.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    rerun_kpi_with_groups(audience_home, access_file)
    secret_file = folder / "proxy.secret"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    port = free_port()
    process = start_server(
        audience_home, port, "--max-kernels", "8", "--viewer-header", HEADER, "--proxy-secret-file", str(secret_file),
        "--access-file", str(access_file), log=folder / "serve.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(base + "/voila/render/landing.ipynb", process, viewer_headers(VIEWERS["leadership"]))
        yield base
    finally:
        stop_server(process)


def rerun_kpi_with_groups(home, access_file) -> None:
    """Run kpi again in ``home`` with the server's viewer groups, as a scheduled run would: it then also computes
    the KPI values per province the groups filter on (``kpi_values_by_region``)."""
    restore = test_audience_pages._with_home(home)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(access.ACCESS_FILE_ENV, str(access_file))
            outcome = runner.run_analysis("kpi", cell_timeout=300, run_timeout=600, write_index=False)
    finally:
        restore()
    assert outcome.ok, outcome


def fetch(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """GET ``url`` with ``headers``: the status and the body."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


def wait_until_answering(url: str, process, headers: dict[str, str], *, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the page server exited with code {process.returncode}")
        try:
            if fetch(url, headers)[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the page server did not answer at {url} within {timeout} s")


def page_url(base: str, name: str) -> str:
    return f"{base}/voila/render/{name}.ipynb"


# --------------------------------------------------------------------------------------------------
# refused before anything runs


# every handler the server installs (/voila/query/ exists only with Voilà's preheated pool, which is off)
GUARDED_PATHS = ("/voila/render/customers.ipynb", "/", "/voila/tree", "/voila/files/customers.ipynb", "/voila/api/contents",
                 "/voila/static/voila.js", "/api/kernels/00000000-0000-0000-0000-000000000000")


@pytest.mark.browser
@pytest.mark.parametrize(
    ("case", "headers"),
    [
        ("no viewer header", viewer_headers(None)),
        ("unknown viewer", viewer_headers("mallory@example.org")),
        ("wrong proxy secret", viewer_headers(VIEWERS["leadership"], secret="guessed")),
        ("no proxy secret", {HEADER: VIEWERS["leadership"]}),
    ],
)
def test_a_request_not_from_the_proxy_or_from_an_unknown_viewer_gets_a_403_page(viewer_server, case, headers):
    for path in GUARDED_PATHS:
        status, body = fetch(viewer_server + path, headers)
        assert (path, status) == (path, 403), case
        assert "<h1>Not available</h1>" in body and "crm-" not in body


@pytest.mark.browser
def test_a_restricted_viewer_is_refused_a_page_that_cannot_narrow_its_rows(viewer_server):
    status, body = fetch(page_url(viewer_server, "dashboard"), viewer_headers(VIEWERS["south"]))
    assert status == 403 and "not available for your view" in body
    status, body = fetch(page_url(viewer_server, "executive"), viewer_headers(VIEWERS["south"]))
    assert status == 200 and "crm-kpi-tile" in body and "not available for your view" not in body  # the board of their province
    status, body = fetch(page_url(viewer_server, "service"), viewer_headers(VIEWERS["south"]))
    assert status == 200 and "Ticket KPIs" in body and "Ticket KPIs: not available" not in body and "Escalation rate" in body


DRILL_SIZE = re.compile(r"([\d,]+) customers in segment “(.+)”")


def drill_down(visit, base: str, identity: str):
    """Open the customers page as ``identity``: the visit, the keys listed on the page and in the download,
    the group shown and its size."""
    page = visit(page_url(base, "customers"), (READY, ".crm-drill-list table"), headers=viewer_headers(identity))
    size, group = DRILL_SIZE.search(page.page.inner_text(".crm-drill-size")).groups()
    listed = re.findall(r"cus_[0-9a-f]+", page.page.inner_text(".crm-drill-list"))
    href = page.page.get_attribute(".crm-drill a.crm-download", "href")
    rows = base64.b64decode(href.split("base64,", 1)[1]).decode("utf-8").strip().split("\r\n")
    downloaded = [line.split(",", 1)[0] for line in rows[1:]]
    return page, listed, downloaded, group, int(size.replace(",", ""))


def headings(page) -> list[str]:
    return page.page.locator("h1, h3").all_inner_texts()


@pytest.mark.browser
def test_two_viewers_of_different_groups_see_different_rows_on_the_same_page(viewer_server, visit, audience_home, provinces):
    regions = customer_regions(audience_home).set_index("customer_key")["province"]
    actions = pd.read_parquet(audience_home / "outputs" / paths.default_dataset() / "segmentation" / "latest" / "tables" / "action_list.parquet")
    seen = {}
    for group in ("south", "east"):
        page, listed, downloaded, segment, size = drill_down(visit, viewer_server, VIEWERS[group])
        page.screenshot(f"viewer-access-customers-{group}")
        test_audience_pages._clean(page)
        assert listed and set(listed) <= set(downloaded)
        assert set(regions.reindex(downloaded)) == {provinces[group]}  # the list and its download: this province only
        in_province = actions[actions["customer_key"].map(regions) == provinces[group]]
        assert size == len(downloaded) == int((in_province["rfm_segment"].astype(str) == segment).sum())
        assert page.page.locator(".crm-not-in-view").count() > 0  # segment movements cannot be narrowed: said in one line
        seen[group] = (set(downloaded), headings(page), page.page.locator(".crm-filter-dimension, .crm-filter-segment, .crm-chart-clv").count())
    assert not seen["south"][0] & seen["east"][0]
    assert seen["south"][1:] == seen["east"][1:]  # the same page: headings, filters and charts


@pytest.mark.browser
def test_an_unrestricted_viewer_sees_every_row(viewer_server, visit, audience_home):
    page, _listed, downloaded, segment, size = drill_down(visit, viewer_server, VIEWERS["leadership"])
    actions = pd.read_parquet(audience_home / "outputs" / paths.default_dataset() / "segmentation" / "latest" / "tables" / "action_list.parquet")
    assert size == len(downloaded) == int((actions["rfm_segment"].astype(str) == segment).sum())
    assert page.page.locator(".crm-not-in-view").count() == 0
    assert page.errors == []
    assert page.page.wait_for_selector(".crm-chart-churn", timeout=PAGE_TIMEOUT_MS)


def kpi_tiles(page) -> dict[str, str]:
    """The executive page's KPI tiles: the value each shows, by KPI id."""
    tiles = page.page.locator(".crm-kpi-tile")
    return {tiles.nth(i).get_attribute("data-kpi"): tiles.nth(i).locator(".crm-kpi-value").inner_text() for i in range(tiles.count())}


def latest_counts(table: pd.DataFrame) -> dict[str, str]:
    """The latest monthly value of every count KPI of ``table``, written as a tile writes a count."""
    counts = table[(table["grain"] == "month") & (table["unit"] == "count")].sort_values("period_start").groupby("kpi_id").tail(1)
    return {row.kpi_id: f"{row.value:,.0f}" for row in counts.itertuples()}


@pytest.mark.browser
def test_the_kpi_board_of_a_restricted_viewer_shows_their_provinces_values(viewer_server, visit, audience_home, provinces):
    kpi_tables = audience_home / "outputs" / paths.default_dataset() / "kpi" / "latest" / "tables"
    by_region = pd.read_parquet(kpi_tables / "kpi_values_by_region.parquet")
    overall = pd.read_parquet(kpi_tables / "kpi_values.parquet")
    overall = overall[(overall["segment"] == "all") & (overall["channel"] == "all")]
    expected = {group: latest_counts(by_region[by_region["province"] == province]) for group, province in provinces.items()}
    expected["leadership"] = latest_counts(overall)
    seen = {}
    for group in ("south", "east", "leadership"):
        page = visit(page_url(viewer_server, "executive"), (READY, ".crm-kpi-tile .crm-kpi-value"), headers=viewer_headers(VIEWERS[group]))
        page.screenshot(f"viewer-access-executive-{group}")
        test_audience_pages._clean(page)
        assert page.page.locator(".crm-not-in-view").count() == 0
        seen[group] = kpi_tiles(page)
        assert expected[group] and {k: seen[group][k] for k in expected[group]} == expected[group], group
    assert set(seen["south"]) == set(by_region["kpi_id"]) < set(seen["leadership"])  # KPIs a province can be given
    assert seen["south"] != seen["east"]

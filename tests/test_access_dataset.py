"""A dataset's own viewer groups: the ``access:`` block of ``parameters/datasets/<name>.yaml`` (``crm_analytics.access``).

Loading and checking the block, which groups a server uses (``access.serving_access``: ``--access-file``, else the
served dataset's block, else ``parameters/access.yaml``), how page kernels are told the same source, and one
``crm-analytics serve`` over a dataset whose file holds the block: an unknown viewer gets 403, listed ones the page.
"""

from __future__ import annotations

import logging
import os

import pytest
import yaml
from test_access import MALFORMED, key_path_message
from test_viewer_access import HEADER, SECRET, fetch, viewer_headers, wait_until_answering

from crm_analytics import access, datasets, paths, serve

import test_browser

UK_GROUPS = {
    "groups": {
        "uk_sales": {"viewers": ["amy@shop.example"], "rows": {"country": ["United Kingdom"]}},
        "leadership": {"viewers": ["ceo@shop.example"], "rows": "all"},
    }
}
OTHER_GROUPS = {"groups": {"br_sales": {"viewers": ["joao@crm.example"], "rows": {"state": ["SP"]}}}}


def demo_document() -> dict:
    return yaml.safe_load((paths.datasets_dir() / "demo.yaml").read_text(encoding="utf-8"))


def write_dataset(folder, name: str, access_block=None, *, with_block: bool = True):
    """A copy of the demo dataset file named ``name`` in ``folder``, with ``access_block`` under ``access:``."""
    document = demo_document()
    if with_block:
        document["access"] = access_block
    file = folder / f"{name}.yaml"
    file.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return file


def write_access_file(folder, document, name: str = "access.yaml"):
    file = folder / name
    file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return file


# --------------------------------------------------------------------------------------------------
# the block


def test_a_dataset_file_with_an_access_block_is_a_valid_dataset_and_gives_its_groups(tmp_path):
    file = write_dataset(tmp_path, "uk_shop", UK_GROUPS)
    assert datasets.load_dataset(file).name == "uk_shop"  # `access` is a dataset key
    policy = access.load_access(file, key=access.DATASET_ACCESS_KEY)
    assert [g.name for g in policy.groups] == ["uk_sales", "leadership"]
    assert policy.groups[0].rows == access.RowFilter("country", ("United Kingdom",))
    assert policy.where("groups", "uk_sales") == f"{file}: access.groups.uk_sales"


def test_a_mistyped_access_key_in_a_dataset_file_names_the_close_match(tmp_path):
    document = demo_document()
    document["acess"] = UK_GROUPS
    file = tmp_path / "uk_shop.yaml"
    file.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(datasets.DatasetError, match=r"unknown key\(s\) \['acess'\] \(did you mean 'access'\?\)"):
        datasets.load_dataset(file)


@pytest.mark.parametrize(("document", "key_path", "message"), MALFORMED)
def test_a_malformed_block_names_the_dataset_file_and_the_key_path(tmp_path, document, key_path, message):
    file = write_dataset(tmp_path, "uk_shop", document)
    expected = "^" + key_path_message(str(file), "access", key_path) + message
    with pytest.raises(access.AccessError, match=expected):
        access.load_access(file, key="access")


def test_a_block_that_is_no_mapping_or_is_missing_names_the_file(tmp_path):
    file = write_dataset(tmp_path, "uk_shop", ["amy@shop.example"])
    with pytest.raises(access.AccessError, match="^" + key_path_message(str(file), "access") + "expected a mapping with a 'groups' key"):
        access.load_access(file, key="access")
    bare = write_dataset(tmp_path, "br_crm", with_block=False)
    with pytest.raises(access.AccessError, match=f"{bare}: no 'access' block"):
        access.load_access(bare, key="access")
    with pytest.raises(access.AccessError, match="not 'sources'"):
        access.load_access(bare, key="sources")


def test_an_empty_block_declares_no_group_and_refuses_every_viewer(tmp_path):
    file = write_dataset(tmp_path, "uk_shop", None)  # `access:` with nothing under it
    policy = access.load_access(file, key="access")
    assert policy.groups == ()
    proxy = access.ProxySettings(HEADER, secret=SECRET)
    with pytest.raises(access.ViewerRefused, match="in no viewer group"):
        access.identify_viewer(viewer_headers("ceo@shop.example"), "127.0.0.1", proxy=proxy, policy=policy)


# --------------------------------------------------------------------------------------------------
# which groups a server uses


def test_without_option_or_block_the_server_uses_the_project_access_file(tmp_path):
    dataset_file = write_dataset(tmp_path, "br_crm", with_block=False)
    default = write_access_file(tmp_path, OTHER_GROUPS)
    choice = access.serving_access(None, dataset_file=dataset_file, environ={}, default_file=default)
    assert choice == access.AccessChoice(access.AccessSource(default.resolve()))
    assert access.serving_access(None, dataset_file=dataset_file, environ={}).source.file == paths.parameters_dir() / "access.yaml"


def test_the_dataset_block_wins_over_the_project_access_file_and_the_log_warns_about_it(tmp_path):
    dataset_file = write_dataset(tmp_path, "uk_shop", UK_GROUPS)
    default = write_access_file(tmp_path, OTHER_GROUPS)
    choice = access.serving_access(None, dataset_file=dataset_file, environ={}, default_file=default)
    assert choice.source == access.AccessSource(dataset_file.resolve(), "access")
    assert choice.unused == access.AccessSource(default.resolve()) and choice.unused_groups == 1
    (info_level, info), (warning_level, warning) = choice.log_lines(choice.source.load())
    assert info_level == logging.INFO and info == f"rows per viewer: 2 viewer group(s) from the access block of dataset file {dataset_file.resolve()}"
    assert warning_level == logging.WARNING
    assert f"the 1 group(s) of access file {default.resolve()} are NOT used by this server" in warning


def test_a_project_access_file_without_groups_is_shadowed_silently(tmp_path):
    dataset_file = write_dataset(tmp_path, "uk_shop", UK_GROUPS)
    empty = write_access_file(tmp_path, {"groups": {}})
    choice = access.serving_access(None, dataset_file=dataset_file, environ={}, default_file=empty)
    assert choice.source.is_dataset_block and choice.unused is None
    assert len(choice.log_lines(choice.source.load())) == 1


@pytest.mark.parametrize("given_as", ["option", "environment"])
def test_an_access_file_given_by_the_operator_wins_over_the_dataset_block(tmp_path, given_as):
    dataset_file = write_dataset(tmp_path, "uk_shop", UK_GROUPS)
    chosen = write_access_file(tmp_path, OTHER_GROUPS, "chosen.yaml")
    option, environ = (chosen, {}) if given_as == "option" else (None, {access.ACCESS_FILE_ENV: str(chosen)})
    choice = access.serving_access(option, dataset_file=dataset_file, environ=environ, default_file=tmp_path / "absent.yaml")
    assert choice.source == access.AccessSource(chosen.resolve())
    assert choice.unused == access.AccessSource(dataset_file.resolve(), "access") and choice.unused_groups == 2
    assert "the access block of dataset file" in choice.log_lines(choice.source.load())[1][1]


def test_a_server_refuses_to_start_on_a_malformed_dataset_block(tmp_path):
    dataset_file = write_dataset(tmp_path, "uk_shop", {"groups": {"east": {"viewers": ["x"], "rows": "some"}}})
    choice = access.serving_access(None, dataset_file=dataset_file, environ={})
    with pytest.raises(access.AccessError, match=key_path_message(str(dataset_file.resolve()), "access.groups.east.rows")):
        choice.source.load()


# --------------------------------------------------------------------------------------------------
# page kernels read the same groups


def test_a_page_kernel_is_told_the_dataset_block_and_reads_its_viewer_there(tmp_path, monkeypatch):
    dataset_file = write_dataset(tmp_path, "uk_shop", UK_GROUPS)
    source = access.AccessSource(dataset_file, "access")
    for name in (access.REQUIRED_ENV, access.ACCESS_FILE_ENV, access.ACCESS_KEY_ENV, access.VIEWER_ENV, access.GROUP_ENV):
        monkeypatch.setenv(name, "")  # set here so that they are removed after the test
    serve._kernel_viewer_environment(source)
    assert (os.environ[access.ACCESS_FILE_ENV], os.environ[access.ACCESS_KEY_ENV]) == (str(dataset_file), "access")
    environ = {**os.environ, access.VIEWER_ENV: "amy@shop.example", access.GROUP_ENV: "uk_sales"}
    amy = access.current_viewer(environ)
    assert (amy.identity, amy.group.name, amy.allowed_values()) == ("amy@shop.example", "uk_sales", ("United Kingdom",))
    with pytest.raises(access.AccessError, match=key_path_message(str(dataset_file), "access.groups") + "no viewer group 'br_sales'"):
        access.current_viewer({**environ, access.GROUP_ENV: "br_sales"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({access.ACCESS_KEY_ENV: "access"}, "names no dataset file"),
        ({access.ACCESS_KEY_ENV: "groups", access.ACCESS_FILE_ENV: "/x/uk_shop.yaml"}, "expected 'access' or nothing"),
    ],
)
def test_a_page_kernel_told_a_malformed_source_fails(environ, message):
    with pytest.raises(access.AccessError, match=message):
        access.access_source(environ)


# --------------------------------------------------------------------------------------------------
# the server over a dataset whose file holds the block

SERVED_DATASET = "viewer_block_shop"  # a scratch dataset file under parameters/datasets/, removed afterwards


@pytest.fixture(scope="module")
def block_server(tmp_path_factory):
    """``crm-analytics serve --dataset viewer_block_shop`` over an empty project home, viewers from the proxy, no
    ``--access-file``: the groups come from the dataset file's ``access:`` block. Yields the base URL and the log."""
    scratch = paths.datasets_dir() / f"{SERVED_DATASET}.yaml"
    assert not scratch.exists(), f"{scratch} exists already (left behind by an interrupted run of this test?)"
    folder = tmp_path_factory.mktemp("access_block")
    home = folder / "home"
    home.mkdir()
    secret_file = folder / "proxy.secret"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    log = folder / "serve.log"
    write_dataset(paths.datasets_dir(), SERVED_DATASET, UK_GROUPS)
    port = test_browser.free_port()
    try:
        process = test_browser.start_server(
            home, port, "--dataset", SERVED_DATASET, "--max-kernels", "4", "--viewer-header", HEADER,
            "--proxy-secret-file", str(secret_file), log=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_answering(base + "/voila/render/landing.ipynb", process, viewer_headers("ceo@shop.example"))
            yield base, log
        finally:
            test_browser.stop_server(process)
    finally:
        scratch.unlink(missing_ok=True)


@pytest.mark.browser
def test_the_server_admits_the_viewers_of_the_dataset_block_and_refuses_others(block_server):
    base, log = block_server
    landing = base + "/voila/render/landing.ipynb"
    status, body = fetch(landing, viewer_headers("mallory@example.org"))
    assert status == 403 and "<h1>Not available</h1>" in body
    status, _ = fetch(landing, viewer_headers("joao@crm.example"))  # a viewer of another dataset's groups
    assert status == 403
    for identity in ("amy@shop.example", "ceo@shop.example"):
        status, body = fetch(landing, viewer_headers(identity))
        # the landing page lists the pages through the page kernel's viewer: it read the same block
        assert (identity, status) == (identity, 200) and "crm-landing" in body and "AccessError" not in body
    status, body = fetch(base + "/voila/render/dashboard.ipynb", viewer_headers("amy@shop.example"))
    assert status == 403 and "not available for your view" in body  # uk_sales is a restricted group
    started = log.read_text(encoding="utf-8")
    assert "rows per viewer: 2 viewer group(s) from the access block of dataset file" in started
    assert f"{SERVED_DATASET}.yaml" in started

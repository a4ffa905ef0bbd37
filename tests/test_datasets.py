"""Dataset files: every committed one loads, and each mistake is named with the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from crm_analytics import datasets, paths

VALID = {"time_zone": "Europe/London", "currency": "GBP", "country": "GB"}


def parse(document: dict, name: str = "shop") -> datasets.Dataset:
    return datasets.parse_dataset(document, name=name, where=Path(f"{name}.yaml"))


@pytest.mark.parametrize("name", datasets.list_datasets())
def test_every_committed_dataset_loads(name):
    dataset = datasets.load_dataset(name)
    assert dataset.name == name
    assert dataset.sources, f"{name} declares no sources"


def test_the_project_default_is_named_in_project_yaml(monkeypatch):
    monkeypatch.delenv(paths.DATASET_ENV, raising=False)
    with open(paths.parameters_dir() / "project.yaml", encoding="utf-8") as handle:
        configured = yaml.safe_load(handle)["dataset"]
    assert datasets.default_dataset_name() == configured
    assert datasets.load_dataset(None).name == configured


def test_the_environment_overrides_the_default(monkeypatch):
    monkeypatch.setenv(paths.DATASET_ENV, "some_other")
    assert datasets.default_dataset_name() == "some_other"
    assert paths.warehouse_path().name == "some_other.duckdb"
    assert paths.outputs_dir().name == "some_other"


def test_the_demo_declares_its_market_instead_of_the_code():
    demo = datasets.load_dataset("demo")
    assert (demo.time_zone, demo.currency, demo.country) == ("Asia/Shanghai", "CNY", "CN")
    assert demo.calendar_events == {"618": (6, 18), "double_11": (11, 11)}
    assert demo.phone_region == "CN"


def test_a_minimal_document_gets_sensible_defaults():
    dataset = parse(VALID)
    assert dataset.locale == "en_GB"
    assert dataset.languages == ("en",)
    assert dataset.data_dir == paths.raw_dir("shop")
    assert dataset.describe() == "shop (Europe/London, GBP, GB)"


def test_an_unknown_dataset_lists_the_known_ones():
    with pytest.raises(datasets.DatasetError, match=r"no dataset 'dmeo'.*did you mean 'demo'.*known datasets"):
        datasets.load_dataset("dmeo")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"time_zone": "Europe/Londn"}, r"shop.yaml: time_zone 'Europe/Londn' is not an IANA time zone \(did you mean 'Europe/London'"),
        ({"currency": "RMB"}, r"shop.yaml: currency 'RMB' is an alias; write the ISO 4217 code 'CNY'"),
        ({"currency": "GPB"}, r"shop.yaml: currency 'GPB' is not an ISO 4217 code"),
        ({"country": "UK"}, r"shop.yaml: country 'UK' is not an ISO 3166 alpha-2 code"),
        ({"locale": "xx_YY"}, r"shop.yaml: locale 'xx_YY' is unknown"),
        ({"sorces": {}}, r"shop.yaml: unknown key\(s\) \['sorces'\] \(did you mean 'sources'\?\)"),
        ({"currency": "TODO"}, r"shop.yaml: set \['currency'\] before building"),
        ({"calendar_events": {"sale": "13-01"}}, r"shop.yaml: calendar_events.sale: expected a yearly day 'MM-DD'"),
    ],
)
def test_each_mistake_names_the_file_and_the_key(change, message):
    with pytest.raises(datasets.DatasetError, match=message):
        parse(VALID | change)


@pytest.mark.parametrize("key", ["time_zone", "currency", "country"])
def test_zone_currency_and_country_are_never_assumed(key):
    document = {k: v for k, v in VALID.items() if k != key}
    with pytest.raises(datasets.DatasetError, match=f"`{key}` is required"):
        parse(document)


def test_a_dataset_file_is_reread_when_it_changes(tmp_path):
    file = tmp_path / "shop.yaml"
    file.write_text(yaml.safe_dump(VALID), encoding="utf-8")
    assert datasets.load_dataset(file).currency == "GBP"
    file.write_text(yaml.safe_dump(VALID | {"currency": "EUR", "description": "changed"}), encoding="utf-8")
    assert datasets.load_dataset(file).currency == "EUR"


@pytest.mark.parametrize(("country", "locale"), [("GB", "en_GB"), ("US", "en_US"), ("BR", "pt_BR"), ("JP", "ja_JP")])
def test_the_default_locale_exists_for_every_country(country, locale):
    assert parse({"time_zone": "UTC", "currency": "EUR", "country": country}).locale == locale


def test_relative_folders_follow_the_project_home(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "one"))
    first = datasets.load_dataset("demo").data_dir
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "two"))
    assert first == tmp_path / "one" / "data" / "raw" / "demo"
    assert datasets.load_dataset("demo").data_dir == tmp_path / "two" / "data" / "raw" / "demo"

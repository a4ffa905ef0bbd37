"""Tests of crm_analytics.dataset_init and `crm-analytics init-dataset`: proposals from real and small files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from crm_analytics import dataset_init, datasets, paths, sources
from crm_analytics.cli import app

WORKBOOK = paths.external_dir() / "online_retail_ii" / "online_retail_II_europe.xlsx"
cli = CliRunner()


def _init(tmp_path: Path, *args: str):
    """``crm-analytics init-dataset`` writing into ``tmp_path/datasets/``."""
    return cli.invoke(app, ["--parameters-dir", str(tmp_path), "init-dataset", *args])


def _sources(dataset_file: Path) -> dict[str, pd.DataFrame]:
    """Every source of a dataset file read as the cleansing build reads it: ``{table: frame}``."""
    dataset = datasets.load_dataset(dataset_file)
    source_map = sources.load_source_map(dataset_file)
    return {spec["table"]: sources.read_source(name, spec, dataset.data_dir) for name, spec in source_map.items()}


# ----------------------------------------------------------------------------- values and names


@pytest.mark.parametrize(
    ("values", "shape", "date_format"),
    [
        (["2024-03-01 10:00:00", "2024-03-02 23:59:59"], "date", "%Y-%m-%d %H:%M:%S"),
        (["19970101", "19971231"], "date", "%Y%m%d"),
        (["31/01/2024", "01/02/2024"], "date", "%d/%m/%Y"),
        (["12/31/2024 10:00", "01/02/2024 08:00"], "date", "%m/%d/%Y %H:%M"),
        (["12", "-3", "7"], "integer", None),
        (["ana@example.com", "bo@example.org"], "email", None),
        (["+55 11 91234-5678", "+44 20 7946 0958"], "phone", None),
        (["SKU-1", "SKU-2"], "id", None),
        (["Caneca azul", "Prato fundo"], "text", None),
        (["", None], "empty", None),
    ],
)
def test_profile_column_recognises_value_shapes(values, shape, date_format):
    profile = dataset_init.profile_column("x", pd.Series(values, dtype=object))
    assert (profile.shape, profile.date_format) == (shape, date_format)


def test_decimal_comma_and_point_are_told_apart():
    comma = dataset_init.profile_column("preço", pd.Series(["12,50", "1.234,00", "7,9"]))
    point = dataset_init.profile_column("price", pd.Series(["12.50", "1,234.00", "7.9"]))
    assert comma.shape == point.shape == "decimal"
    assert comma.decimal_comma and not point.decimal_comma


def test_day_and_month_that_both_read_are_flagged():
    profile = dataset_init.profile_column("data", pd.Series(["03/02/2024", "04/05/2024"]))
    assert profile.date_format == "%d/%m/%Y" and profile.day_first_ambiguous


@pytest.mark.parametrize(
    ("header", "role"),
    [("Customer ID", "customer"), ("CustomerID", "customer"), ("会员ID", "customer"), ("id_cliente", "customer"),
     ("Preço unitário", "unit_price"), ("单价", "unit_price"), ("Qty", "quantity"), ("Quantidade", "quantity"),
     ("数量", "quantity"), ("InvoiceNo", "invoice"), ("订单号", "invoice"), ("Pedido", "invoice"),
     ("Data da compra", "date"), ("下单时间", "date"), ("E-mail", "email")],
)
def test_header_synonyms_in_three_languages(header, role):
    assert dataset_init.role_score(header, role) >= 0.8


# ----------------------------------------------------------------------------- the Online Retail II workbook


def test_online_retail_workbook_proposes_its_columns_and_leaves_zone_and_currency_todo(tmp_path):
    result = _init(tmp_path, "retail", "--from", str(WORKBOOK))
    assert result.exit_code == 0, result.output
    path = tmp_path / "datasets" / "retail.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert (document["time_zone"], document["currency"], document["country"]) == ("TODO", "TODO", "TODO")
    assert set(document["sources"]) == {"customers", "orders", "order_items", "products"}
    [workbook] = [spec for spec in document["inputs"].values() if spec.get("format") == "excel"]
    assert workbook == {"path": WORKBOOK.name, "format": "excel", "sheet": "all"}  # both yearly sheets, one header
    lines = document["inputs"]["lines"]["query"]
    for expected in ('CAST("Invoice" AS VARCHAR) AS invoice', 'CAST("StockCode" AS VARCHAR) AS product',
                     '"Description" AS description', 'CAST("Quantity" AS BIGINT) AS quantity', 'CAST("Price" AS DOUBLE) AS unit_price',
                     'CAST("Customer ID" AS VARCHAR) AS customer', 'CAST("InvoiceDate" AS TIMESTAMP) AS line_time', '"Country" AS country'):
        assert expected in lines
    with pytest.raises(datasets.DatasetError, match=r"set \['time_zone', 'currency', 'country'\].*TODO"):
        datasets.load_dataset(path)
    assert "set time_zone, currency, country" in result.stdout


@pytest.mark.slow
def test_online_retail_proposal_with_options_gives_the_invoice_totals(tmp_path):
    result = _init(tmp_path, "retail", "--from", str(WORKBOOK), "--time-zone", "Europe/London", "--currency", "GBP", "--country", "GB")
    assert result.exit_code == 0, result.output
    tables = _sources(tmp_path / "datasets" / "retail.yaml")
    lines = pd.concat(pd.read_excel(WORKBOOK, sheet_name=None, engine="openpyxl").values(), ignore_index=True)  # another reader
    lines["Invoice"] = lines["Invoice"].astype(str)
    expected = (lines["Quantity"] * lines["Price"]).groupby(lines["Invoice"]).sum().round(2)
    orders = tables["orders"].set_index("order_id")["order_amount"].astype(float)
    assert len(orders) == lines["Invoice"].nunique()
    pd.testing.assert_series_equal(orders.sort_index(), expected.sort_index(), check_names=False, atol=0.005)
    assert set(tables["customers"]["customer_id"]) == set(lines["Customer ID"].dropna().astype(int).astype(str))
    assert tables["products"]["product_id"].nunique() == lines["StockCode"].astype(str).nunique()


# ----------------------------------------------------------------------------- small files


def _portuguese_csv(folder: Path) -> Path:
    path = folder / "vendas.csv"
    path.write_text(
        "Pedido;Cliente;Data da compra;Produto;Descrição;Quantidade;Preço unitário\n"
        "1001;C-17;13/02/2024 14:05;P1;Caneca azul;2;12,50\n"
        "1001;C-17;13/02/2024 14:05;P2;Prato;1;1.234,00\n"
        "1002;C-42;15/02/2024 09:30;P1;Caneca azul;3;12,50\n"
        "1003;C-17;28/02/2024 21:10;P3;Copo;1;7,90\n",
        encoding="utf-8",
    )
    return path


def test_portuguese_csv_with_decimal_commas_becomes_orders_items_customers_products(tmp_path):
    csv_file = _portuguese_csv(tmp_path)
    [sample] = dataset_init.read_samples(csv_file)
    assert (sample.encoding, sample.delimiter) == ("utf-8-sig", ";")
    assert dataset_init.assign_roles(sample.columns) == {
        "invoice": "Pedido", "customer": "Cliente", "date": "Data da compra", "product": "Produto",
        "description": "Descrição", "quantity": "Quantidade", "unit_price": "Preço unitário",
    }
    assert sample.column("Preço unitário").decimal_comma
    assert sample.column("Data da compra").date_format == "%d/%m/%Y %H:%M"
    result = _init(tmp_path, "loja", "--from", str(csv_file), "--time-zone", "America/Sao_Paulo", "--currency", "BRL", "--country", "BR")
    assert result.exit_code == 0, result.output
    dataset = datasets.load_dataset(tmp_path / "datasets" / "loja.yaml")
    assert (dataset.time_zone, dataset.currency, dataset.locale) == ("America/Sao_Paulo", "BRL", "pt_BR")
    tables = _sources(dataset.file)
    orders = tables["orders"].set_index("order_id")
    assert orders["order_amount"].to_dict() == {"1001": 1259.0, "1002": 37.5, "1003": 7.9}  # 2 x 12,50 + 1.234,00
    assert str(orders.loc["1001", "order_time"]) == "2024-02-13 14:05:00"  # day first
    assert sorted(tables["customers"]["customer_id"]) == ["C-17", "C-42"]
    assert len(tables["order_items"]) == 4 and sorted(tables["products"]["product_id"]) == ["P1", "P2", "P3"]


def test_chinese_order_list_maps_onto_orders(tmp_path):
    path = tmp_path / "订单.csv"
    path.write_text("订单号,会员ID,下单时间,实付金额,备注\nA1,M9,2024/03/01 10:00,99.50,快\nA2,M7,2024/03/02 11:30,15.00,\n", encoding="gb18030")
    [sample] = dataset_init.read_samples(path)
    assert sample.encoding == "gb18030"
    proposal = dataset_init.propose([sample], dataset="shop", data_dir=tmp_path)
    assert list(proposal.sources) == ["orders"]
    query = proposal.sources["orders"]["query"]
    assert '"订单号" AS order_id' in query and '"会员ID" AS customer_id' in query and '"实付金额" AS order_amount' in query
    assert proposal.sources["orders"]["date_formats"] == ["%Y/%m/%d %H:%M"]
    result = _init(tmp_path, "shop", "--from", str(path), "--time-zone", "Asia/Shanghai", "--currency", "CNY", "--country", "CN")
    assert result.exit_code == 0, result.output
    orders = _sources(tmp_path / "datasets" / "shop.yaml")["orders"]
    assert orders["order_amount"].tolist() == ["99.50", "15.00"]  # text: the cleansing parses amounts


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["loja", "--from", "missing.csv"], "file not found"),
        (["Loja", "--from", "vendas.csv"], "must be lower-case"),
        (["loja", "--from", "vendas.csv", "--time-zone", "America/Sao_Paolo"], "did you mean 'America/Sao_Paulo'"),
        (["loja", "--from", "vendas.csv", "--currency", "RMB"], "write the ISO 4217 code 'CNY'"),
        (["loja", "--from", "vendas.csv", "--country", "UK"], "not an ISO 3166 alpha-2 code"),
        (["loja", "--from", "notes.json"], "unknown file type '.json'"),
    ],
)
def test_init_errors_are_one_line_usage_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)  # relative --from paths are taken from here
    _portuguese_csv(tmp_path)
    (tmp_path / "notes.json").write_text("{}")
    result = _init(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "datasets").exists() or not list((tmp_path / "datasets").iterdir())


def test_an_existing_dataset_file_is_replaced_only_with_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _portuguese_csv(tmp_path)
    assert _init(tmp_path, "loja", "--from", "vendas.csv").exit_code == 0
    target = tmp_path / "datasets" / "loja.yaml"
    target.write_text("# edited by hand\n")
    refused = _init(tmp_path, "loja", "--from", "vendas.csv")
    assert refused.exit_code == 2 and "already exists; give --force" in refused.stderr
    assert target.read_text() == "# edited by hand\n"
    assert _init(tmp_path, "loja", "--from", "vendas.csv", "--force").exit_code == 0
    assert "Preço unitário" in target.read_text(encoding="utf-8")

"""A build whose mapping or formats are wrong says so, naming the source and the key, instead of losing columns.

Each test builds a tiny dataset of its own (a dataset file and two CSV exports in ``tmp_path``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from crm_analytics import warehouse
from crm_analytics.cleansing import QuarantineThresholdError, build_clean_warehouse
from crm_analytics.cleansing.pipeline import UnreadableColumnError

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "cleansing.ipynb"
AS_OF = "2024-12-31"


def tiny_dataset(folder: Path, *, order_formats: list[str], discounts: list[str] = ("", "", "")) -> Path:
    """A dataset file with a customers export and an orders export (three orders, dates day/month/year)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clientes.csv").write_text("id,nome,email,desde\nC1,Ana,ana@example.com,2023-01-05\nC2,Rui,rui@example.com,2023-06-30\n", encoding="utf-8")
    lines = ["pedido,cliente,data,valor,desconto"] + [
        f"P{i},{customer},{day}/02/2024,{10 * i},{discount}" for i, (customer, day, discount) in enumerate(zip(["C1", "C2", "C1"], [13, 15, 28], discounts), 1)
    ]
    (folder / "pedidos.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    document = {
        "data_dir": str(folder), "time_zone": "America/Sao_Paulo", "currency": "BRL", "country": "BR",
        "sources": {
            "clientes": {"table": "customers", "path": "clientes.csv", "format": "csv",
                         "columns": {"customer_id": "id", "full_name": "nome", "email": "email", "signup_time": "desde"},
                         "constants": {"source": "loja", "acquisition_channel": "store"}},
            "pedidos": {"table": "orders", "path": "pedidos.csv", "format": "csv", "date_formats": order_formats,
                        "columns": {"order_id": "pedido", "customer_id": "cliente", "order_time": "data", "order_amount": "valor",
                                    "discount_amount": "desconto"},
                        "constants": {"channel": "store", "source": "loja"}},
        },
    }
    path = folder / "loja.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_date_format_that_matches_no_value_is_a_config_error_not_a_quarantine_threshold(tmp_path):
    dataset = tiny_dataset(tmp_path / "loja", order_formats=["%m/%d/%Y"], discounts=["1", "0", "2"])
    target = tmp_path / "loja.duckdb"
    with pytest.raises(UnreadableColumnError) as error:
        build_clean_warehouse(dataset=dataset, as_of=AS_OF, warehouse_path=target)
    assert not isinstance(error.value, QuarantineThresholdError)
    message = str(error.value)
    assert message.startswith(f"{dataset}: required column 'data' of source 'pedidos' (for 'order_time')")
    assert "none matches the source's key `date_formats` ['%m/%d/%Y']" in message and "'13/02/2024'" in message
    assert not target.exists(), "no warehouse was written"


@pytest.mark.slow
def test_an_optional_column_that_arrives_empty_is_a_warning_in_the_report_and_the_run(tmp_path):
    import papermill

    dataset = tiny_dataset(tmp_path / "loja", order_formats=["%d/%m/%Y"])
    output_dir, target = tmp_path / "run", tmp_path / "loja.duckdb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "cleansing.ipynb"), kernel_name="python3", progress_bar=False,
        parameters={"dataset": str(dataset), "export_date": AS_OF, "warehouse_path": str(target), "output_dir": str(output_dir),
                    "workers": 1},
    )
    warnings = [json.loads(line) for line in (output_dir / "warnings.jsonl").read_text(encoding="utf-8").splitlines()]
    notes = [w for w in warnings if w["kind"] == "data_note" and "'desconto'" in w["message"]]
    assert len(notes) == 1 and "is empty in all 3 rows" in notes[0]["message"] and "source 'pedidos'" in notes[0]["message"]
    table = pd.read_parquet(output_dir / "tables" / "quality_column_notes.parquet")
    assert table[["source", "column_name", "problem", "is_required"]].values.tolist() == [["pedidos", "discount_amount", "empty", False]]
    assert warehouse.table_row_counts(target)["orders"] == 3

"""The layers of DESIGN.md hold: import contracts (``lint-imports``), the linter (``ruff``), notebook imports.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``): commands on top, one independent
module per analysis, shared per-customer helpers and the data path below, foundations at the bottom.
A notebook imports the package only, and of the analysis modules only its own; what it shares with
other analyses comes from a layer module.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
NOTEBOOK_MODULE = {"recommendation": "recommend"}  # notebooks whose analysis module has another name


def _tool(name: str) -> str:
    """The console script ``name`` of this interpreter's environment (the test extras install it)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install the test extras: pip install -c constraints.txt -e '.[test]'")
    return found


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    done = _run([_tool("lint-imports"), "--no-cache"])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_ruff_finds_nothing():
    done = _run([_tool("ruff"), "check", "--no-cache", "--output-format", "concise", "."])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def analysis_modules() -> set[str]:
    """The modules of the contract's analysis layer (the layer holding ``segmentation``)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["id"] == "layers")["layers"]
    modules = [{m.strip() for m in layer.split("|")} for layer in layers]
    return next(layer for layer in modules if "segmentation" in layer)


def notebook_imports(path: Path) -> set[str]:
    """The ``crm_analytics`` modules a notebook imports (``from crm_analytics import a, b``, ``import crm_analytics.c``)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = "\n".join(
        line for cell in cells if cell["cell_type"] == "code"
        for line in "".join(cell["source"]).splitlines() if not line.lstrip().startswith(("%", "!"))
    )
    found = set()
    for node in ast.walk(ast.parse(code, filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module == "crm_analytics":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("crm_analytics."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("crm_analytics.")}
    return found


def test_the_analysis_layer_is_read_from_the_contract():
    assert {"segmentation", "churn", "clv", "kpi", "recommend", "satisfaction"} <= analysis_modules()
    assert not {"customer_features", "dates", "privacy", "runner"} & analysis_modules()


@pytest.mark.parametrize("notebook", sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_a_notebook_imports_no_other_analysis(notebook):
    own = NOTEBOOK_MODULE.get(notebook, notebook)
    imported = notebook_imports(ROOT / "notebooks" / f"{notebook}.ipynb")
    assert imported, "a notebook calls into the package"
    others = imported & analysis_modules() - {own}
    assert not others, f"notebooks/{notebook}.ipynb imports the analysis module(s) {sorted(others)}; use a layer module"


def test_the_notebook_import_check_sees_a_foreign_analysis(tmp_path):
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
            "source": ["%matplotlib inline\n", "from crm_analytics import dates, kpi\n", "import crm_analytics.churn as c\n"]}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps({"cells": [cell]}), encoding="utf-8")
    assert notebook_imports(path) == {"dates", "kpi", "churn"}

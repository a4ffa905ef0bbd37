"""Tests of crm_analytics.imports: importing a library without an optional dependency."""

from __future__ import annotations

import importlib
import sys

from crm_analytics.imports import import_without


def test_hidden_module_is_skipped_by_the_library_then_importable_again(tmp_path, monkeypatch):
    (tmp_path / "optional_dep_x.py").write_text("VALUE = 1\n")
    (tmp_path / "library_x.py").write_text(
        "try:\n    import optional_dep_x\nexcept ImportError:\n    optional_dep_x = None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("library_x", "optional_dep_x"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    library = import_without("library_x", hidden=("optional_dep_x",))
    assert library.optional_dep_x is None
    assert "optional_dep_x" not in sys.modules
    assert importlib.import_module("optional_dep_x").VALUE == 1
    assert import_without("library_x", hidden=("optional_dep_x",)) is library  # already loaded: as it is
    for name in ("library_x", "optional_dep_x"):
        sys.modules.pop(name, None)


def test_runner_import_leaves_out_the_iri_parser():
    import subprocess

    code = "import sys; from crm_analytics import runner; print('rfc3987_syntax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_warehouse_import_leaves_out_plotting_validation_and_scipy():
    """The warehouse sits below the cleansing step and the analyses: opening it loads none of their libraries."""
    import subprocess

    heavy = ["matplotlib", "seaborn", "pandera", "scipy", "crm_analytics.cleansing"]
    code = f"import sys; import crm_analytics.warehouse; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"import crm_analytics.warehouse loaded {out.stdout.strip()}"


def test_parsing_helpers_are_the_same_objects_from_the_cleansing_step():
    from crm_analytics import parsing
    from crm_analytics.cleansing import standardise

    for name in ("ISO8601", "parse_datetimes", "parse_amounts", "parse_amount", "clean_text", "UNPARSED_DATE"):
        assert getattr(standardise, name) is getattr(parsing, name), name

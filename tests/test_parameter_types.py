"""Parameter values checked against the type of the notebook's default, before any kernel starts."""

from __future__ import annotations

from pathlib import Path

import papermill
import pytest

from crm_analytics import parameter_types as pt
from crm_analytics import runner

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize(
    ("name", "value", "default", "expected"),
    [
        ("as_of", "notadate", "", "ISO date"),
        ("as_of", "2024-02-30", "", "ISO date"),
        ("as_of", 20240101, "", "ISO date as text"),
        ("start_date", "31/03/2024", "", "ISO date"),
        ("churn_as_of", "yesterday", "", "ISO date"),
        ("calibration_end", "2024-13-01", "", "ISO date"),
        ("n_bins", 5.5, 5, "expected an int"),
        ("n_bins", "5", 5, "expected an int"),
        ("n_bins", True, 5, "got boolean"),
        ("discount_rate", "0.01", 0.01, "expected a number"),
        ("discount_rate", False, 0.01, "got boolean"),
        ("use_baseline", 1, True, "expected a boolean"),
        ("use_baseline", "yes please", True, "expected a boolean"),
        ("grains", "day", ["day", "week"], "expected a list"),
        ("grains", ["day", 7], ["day", "week"], "list of texts"),
        ("tier_cutoffs", [0.5, "high"], [0.5, 0.8], "list of numbers"),
        ("label", 12, "demo", "quote it in YAML"),
        ("label", None, "demo", "missing (null)"),
    ],
)
def test_a_value_of_the_wrong_type_is_named_with_the_expected_type(name, value, default, expected):
    assert expected in pt.problem(name, value, default)


@pytest.mark.parametrize(
    ("name", "value", "default"),
    [
        ("as_of", "", ""),
        ("as_of", "2024-02-29", ""),
        ("as_of", "2024-03-31T08:00+01:00", "2024-01-31"),
        ("previous_as_of", "  ", ""),  # blank: derived from the data
        ("n_bins", 4, 5),
        ("discount_rate", 1, 0.01),  # an int is a float
        ("use_baseline", False, True),
        ("tier_cutoffs", [1, 0.9], [0.5, 0.8]),
        ("figure_sections", [["kpi", "tiles", "KPIs"]], [["overview", "orders_over_time", "Orders over time"]]),
        ("steps", [], ["visit", "purchase"]),
        ("window", "7D", ""),  # not a date parameter: any text
        ("experiment_id", "", ""),
        ("anything", {"a": 1}, None),  # a None default accepts anything
    ],
)
def test_values_that_fit_pass(name, value, default):
    assert pt.problem(name, value, default) is None


def test_choices_name_the_allowed_values_and_the_closest():
    assert pt.problem("backend", "duckbd", "duckdb", analysis="segmentation") == "expected one of 'duckdb', 'pyspark' (did you mean 'duckdb'?)"
    assert pt.problem("period", "month", "M", analysis="cohort").startswith("expected one of 'D', 'W', 'M', 'Q', 'Y'")
    assert pt.problem("period", "month", "week", analysis="overview") is None
    assert pt.problem("period", "anything", "x", analysis="elsewhere") is None  # no choices declared there


def test_date_parameters_are_recognised_by_name_and_default():
    assert pt.is_date_parameter("as_of", "") and pt.is_date_parameter("end_date", "2024-01-31")
    assert pt.is_date_parameter("observation_end", "") and pt.is_date_parameter("churn_as_of", "")
    assert not pt.is_date_parameter("update_date_format", "%Y")  # a date name with a default that is no date
    assert not pt.is_date_parameter("window", "")


def test_every_mismatch_is_listed_with_where_it_came_from():
    declared = papermill.inspect_notebook(str(NOTEBOOKS / "segmentation.ipynb"))
    with pytest.raises(pt.TypeMismatch) as info:
        pt.check_types("segmentation", {"as_of": "notadate", "n_bins": 5.5, "seed": 1}, declared,
                       origins={"as_of": "-p", "n_bins": "parameters/segmentation/default.yaml"})
    message = str(info.value)
    assert "parameter 'as_of' of 'segmentation' is 'notadate' (from -p): expected an ISO date" in message
    assert "parameter 'n_bins' of 'segmentation' is 5.5 (from parameters/segmentation/default.yaml): expected an int" in message
    assert "seed" not in message


def _analyses_with(parameter: str) -> list[str]:
    return [p.stem for p in sorted(NOTEBOOKS.glob("*.ipynb")) if parameter in papermill.inspect_notebook(str(p))]


@pytest.mark.parametrize(("analysis", "parameter"), sorted(pt.CHOICES))
def test_declared_choices_hold_the_notebooks_defaults(analysis, parameter):
    analyses = _analyses_with(parameter) if analysis == pt.ANY_ANALYSIS else [analysis]
    assert analyses, f"no notebook declares {parameter!r}"
    for name in analyses:
        declared = papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
        assert parameter in declared, f"{name} does not declare {parameter!r}"
        _, default = pt.default_value(declared[parameter])
        assert default in pt.choices_for(name, parameter)


def test_declared_choices_are_those_the_modules_accept():
    from crm_analytics import cohort, engine, funnel, kpi_catalogue

    assert pt.CHOICES[(pt.ANY_ANALYSIS, "backend")] == engine.BACKENDS
    assert pt.CHOICES[("cohort", "period")] == tuple(cohort.PERIODS)
    assert pt.CHOICES[("funnel", "mode")] == funnel.MODES
    assert pt.CHOICES[("kpi", "grain")] == kpi_catalogue.GRAINS


@pytest.mark.parametrize("analysis", runner.list_analyses())
def test_every_default_parameter_file_fits_its_notebook(analysis):
    runner.resolve_parameters(analysis, notebook=runner.notebook_path(analysis))

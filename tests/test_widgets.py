"""Filter widgets: validation, live redraws with a frontend, and the static fallback under papermill."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from crm_analytics import widgets


def _controls(**overrides):
    params = dict(grain="month", start_date="2024-01-01", end_date="2024-07-01", segment="all", channel="web",
                  segments=["Champions", "At Risk"], channels=["web", "store", "all"])
    params.update(overrides)
    return widgets.filter_controls(**params)


def test_frontend_detection():
    assert widgets.frontend_available({"VOILA_KERNEL_ID": "abc"})
    assert widgets.frontend_available({"JPY_SESSION_NAME": "/work/notebooks/kpi.ipynb"})
    assert not widgets.frontend_available({"PATH": "/usr/bin"})


def test_controls_start_from_the_parameter_values():
    controls = _controls()
    values = controls.values()
    assert values == widgets.FilterValues("month", pd.Timestamp("2024-01-01"), pd.Timestamp("2024-07-01"), "all", "web")
    assert controls.segment.options == ("all", "At Risk", "Champions")
    assert controls.channel.options == ("all", "store", "web")
    # The "To" picker shows the last day included.
    assert controls.end.value == dt.date(2024, 6, 30)


def test_widget_changes_are_read_back_and_validated():
    controls = _controls()
    controls.grain.value = "week"
    controls.segment.value = "Champions"
    controls.end.value = dt.date(2024, 3, 31)
    values = controls.values()
    assert (values.grain, values.segment, values.end_date) == ("week", "Champions", pd.Timestamp("2024-04-01"))
    controls.end.value = None  # a cleared picker falls back to the parameter value
    assert controls.values().end_date == pd.Timestamp("2024-07-01")
    controls.start.value = dt.date(2024, 12, 1)
    with pytest.raises(ValueError, match="must be before"):
        controls.values()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"grain": "year"}, "grain: 'year' is not one of"),
        ({"segment": "VIP"}, "segment: 'VIP'"),
        ({"channel": "fax"}, "channel: 'fax'"),
        ({"start_date": "not a date"}, "start_date"),
        ({"start_date": "2024-08-01"}, "must be before"),
    ],
)
def test_bad_parameters_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        _controls(**overrides)


def test_static_fallback_renders_once_with_the_parameter_values():
    seen = []
    result = widgets.show_filtered(_controls(), lambda values: seen.append(values) or "figures", interactive=False)
    assert result == "figures"
    assert len(seen) == 1 and seen[0].channel == "web" and seen[0].grain == "month"


def test_interactive_mode_redraws_on_every_change():
    seen = []
    controls = _controls()
    result = widgets.show_filtered(controls, lambda values: seen.append(values) or "figures", interactive=True)
    assert result == "figures" and controls.output is not None and len(seen) == 1
    controls.channel.value = "store"
    controls.grain.value = "quarter"
    assert [v.channel for v in seen] == ["web", "store", "store"]
    assert seen[-1].grain == "quarter"


def test_interactive_mode_reports_an_invalid_selection_instead_of_raising():
    seen = []
    controls = _controls()
    widgets.show_filtered(controls, seen.append, interactive=True)
    controls.start.value = dt.date(2025, 1, 1)  # after the end: not rendered, a message instead
    assert len(seen) == 1


def test_describe():
    values = _controls().values()
    assert values.describe() == "grain month, 2024-01-01 to 2024-06-30, segment all, channel web"

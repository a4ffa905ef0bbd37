"""Filter controls shared by the stakeholder pages: period grain, date range, segment, channel.

The same notebook runs in three places:

* **Voilà** (stakeholders) and **JupyterLab** (analysts): a widget frontend is
  there, so the filters are live ipywidgets and every change redraws the
  output below them;
* **papermill** (scheduled runs, tests): there is no frontend; widgets would
  render as nothing, so the output is drawn once, statically, with the
  parameter values, and the filter values are printed above it. The report
  then shows exactly what the page shows before anyone touches a filter.

``show_filtered(controls, render)`` hides the difference: ``render`` is a
package function taking a ``FilterValues``. Widget values are only ever
compared with the offered options and parsed as dates, never evaluated or
spliced into SQL or paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from crm_analytics import plots, stand_ins

GRAINS = ("day", "week", "month", "quarter")
ALL = "all"
# Environment variables that only a kernel with a widget frontend has: Voilà sets VOILA_*,
# jupyter_server sets JPY_SESSION_NAME for notebook sessions. papermill and nbconvert set neither.
_FRONTEND_VARIABLES = ("VOILA_KERNEL_ID", "VOILA_BASE_URL", "VOILA_SERVER_URL", "VOILA_REQUEST_URL", "JPY_SESSION_NAME")


@dataclass(frozen=True)
class FilterValues:
    """One filter selection: ``grain``; ``start_date`` inclusive and ``end_date`` exclusive; ``segment`` and ``channel`` (``"all"`` for no filter)."""

    grain: str
    start_date: pd.Timestamp
    end_date: pd.Timestamp
    segment: str = ALL
    channel: str = ALL

    def describe(self) -> str:
        """A one-line description for a report."""
        last_day = (self.end_date - pd.Timedelta(days=1)).date()
        return f"grain {self.grain}, {self.start_date.date()} to {last_day}, segment {self.segment}, channel {self.channel}"


def frontend_available(environ: Mapping[str, str] | None = None) -> bool:
    """Return True when widgets will be rendered by a frontend (Voilà or a Jupyter session), False under papermill."""
    environ = os.environ if environ is None else environ
    return any(environ.get(name) for name in _FRONTEND_VARIABLES)


def _parse_date(value, name: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {value!r} is not a date (use an ISO date such as '2024-01-31')") from None
    if pd.isna(stamp):
        raise ValueError(f"{name}: a date is required")
    if stamp.tzinfo is not None:
        raise ValueError(f"{name}: expected a naive local date, got {value!r}")
    return stamp.normalize()


def _check_option(value: str, options: Sequence[str], name: str) -> str:
    if value not in options:
        raise ValueError(f"{name}: {value!r} is not one of the options {list(options)}")
    return value


def check_filter_values(
    *,
    grain: str,
    start_date,
    end_date,
    segment: str = ALL,
    channel: str = ALL,
    grains: Sequence[str] = GRAINS,
    segments: Sequence[str] = (ALL,),
    channels: Sequence[str] = (ALL,),
) -> FilterValues:
    """Validate a filter selection (from parameters or widgets) and return it as ``FilterValues``.

    Raises ``ValueError`` naming the parameter when a value is not among its options,
    a date does not parse, or the start is not before the end.
    """
    start, end = _parse_date(start_date, "start_date"), _parse_date(end_date, "end_date")
    if not start < end:
        raise ValueError(f"start_date {start.date()} must be before end_date {end.date()}")
    return FilterValues(
        grain=_check_option(grain, grains, "grain"),
        start_date=start,
        end_date=end,
        segment=_check_option(segment, segments, "segment"),
        channel=_check_option(channel, channels, "channel"),
    )


def _options(values: Sequence[str]) -> list[str]:
    rest = sorted({str(v) for v in values if str(v) != ALL})
    return [ALL, *rest]


class FilterControls:
    """The four filters as ipywidgets, initialised from (validated) parameter values.

    Attributes ``grain``, ``start``, ``end``, ``segment``, ``channel`` are the widgets;
    ``box`` lays them out; ``values()`` reads the current selection; ``output`` is the box
    the page redraws into (set by ``show_filtered``).
    """

    def __init__(self, initial: FilterValues, *, grains: Sequence[str], segments: Sequence[str], channels: Sequence[str]):
        import ipywidgets as w

        self.initial = initial
        self.grains, self.segments, self.channels = list(grains), _options(segments), _options(channels)
        layout = w.Layout(width="190px")
        style = {"description_width": "60px"}
        self.grain = w.Dropdown(options=self.grains, value=initial.grain, description="Period", layout=layout, style=style)
        self.start = w.DatePicker(value=initial.start_date.date(), description="From", layout=layout, style=style)
        self.end = w.DatePicker(value=(initial.end_date - pd.Timedelta(days=1)).date(), description="To", layout=layout, style=style)
        self.segment = w.Dropdown(options=self.segments, value=initial.segment, description="Segment", layout=layout, style=style)
        self.channel = w.Dropdown(options=self.channels, value=initial.channel, description="Channel", layout=layout, style=style)
        self.box = w.HBox([self.grain, self.start, self.end, self.segment, self.channel], layout=w.Layout(flex_flow="row wrap"))
        self.output = None  # the box redrawn on every change, once shown by show_filtered

    @property
    def controls(self) -> list:
        """The widgets, in display order."""
        return [self.grain, self.start, self.end, self.segment, self.channel]

    def values(self) -> FilterValues:
        """The current selection, validated; an empty date picker falls back to the parameter value.

        The ``To`` picker shows the last day included; ``end_date`` is the day after it.
        """
        start = self.start.value or self.initial.start_date.date()
        last = self.end.value or (self.initial.end_date - pd.Timedelta(days=1)).date()
        return check_filter_values(
            grain=self.grain.value,
            start_date=start,
            end_date=pd.Timestamp(last) + pd.Timedelta(days=1),
            segment=self.segment.value,
            channel=self.channel.value,
            grains=self.grains,
            segments=self.segments,
            channels=self.channels,
        )

    def observe(self, callback: Callable[[dict], None]) -> None:
        """Call ``callback(change)`` whenever any filter's value changes."""
        for control in self.controls:
            control.observe(callback, names="value")


def filter_controls(
    *,
    grain: str,
    start_date,
    end_date,
    segment: str = ALL,
    channel: str = ALL,
    grains: Sequence[str] = GRAINS,
    segments: Sequence[str] = (ALL,),
    channels: Sequence[str] = (ALL,),
) -> FilterControls:
    """Build the filter widgets from the notebook's parameter values.

    ``segments`` and ``channels`` are the offered options (``"all"`` is always added).
    The parameter values are validated first (``check_filter_values``), so a bad
    parameter fails with a message naming it, in papermill as in Voilà.
    """
    segments, channels = _options(segments), _options(channels)
    initial = check_filter_values(
        grain=grain, start_date=start_date, end_date=end_date, segment=segment, channel=channel, grains=grains, segments=segments, channels=channels
    )
    return FilterControls(initial, grains=grains, segments=segments, channels=channels)


FILTERED_CLASS = "crm-filtered"  # the area a filter change redraws


def _render_into(area, controls: FilterControls, render: Callable[[FilterValues], object]):
    """Run ``render`` for the current filters and make what it displayed the children of the box ``area``
    (the previous ones are closed); return what ``render`` returned (``None`` for a filter not applied)."""
    from IPython.display import Markdown, display
    from IPython.utils.capture import capture_output

    result = None
    with capture_output() as captured, plots.figures_as_widgets():
        try:
            values = controls.values()
        except ValueError as error:
            display(Markdown(f"**Filter not applied:** {error}"))
        else:
            result = render(values)
    shown = [stand_ins.output_widget(output.data) for output in captured.outputs]
    if captured.stdout:
        shown.insert(0, stand_ins.output_widget({"text/plain": captured.stdout}))
    previous, area.children = area.children, tuple(shown)
    for child in previous:
        child.close()
    return result


def show_filtered(controls: FilterControls, render: Callable[[FilterValues], object], *, interactive: bool | None = None):
    """Display the filters and what ``render`` draws for them; return what ``render`` returned
    for the parameter values (e.g. figures to persist).

    With a frontend (``interactive`` None and ``frontend_available()``, or True) the filters
    are shown live; what ``render`` displays becomes the children of a box (``controls.output``,
    CSS class ``crm-filtered``), now and after every change. Without one (papermill), ``render``
    runs once into the cell's own output with the parameter values, under a line naming them.
    """
    from IPython.display import Markdown, display

    if interactive is None:
        interactive = frontend_available()
    if not interactive:
        display(Markdown(f"*Filters: {controls.initial.describe()}.*"))
        return render(controls.initial)
    import ipywidgets as w

    controls.output = w.VBox()
    controls.output.add_class(FILTERED_CLASS)
    result = _render_into(controls.output, controls, render)
    controls.observe(lambda _change: _render_into(controls.output, controls, render))
    display(w.VBox([controls.box, controls.output]))
    return result

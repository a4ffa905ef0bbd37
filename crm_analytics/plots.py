"""The house style for charts. Analysis-specific charts live beside their analysis as ``plot_*`` functions.

Every ``plot_*`` function takes a result DataFrame and an optional ``ax`` and
returns the matplotlib ``Axes``; none computes anything the analysis did not.

Colours. The categorical palette is Okabe and Ito's (2008) "Color Universal Design" set, which stays
distinguishable under the common colour-vision deficiencies, followed by lighter tints of the same hues
for charts with more than seven groups. ``category_colours`` gives one colour per category and keeps it
across reports: the known vocabularies (RFM segments, lifecycle stages, channels, NPS and value bands,
experiment arms, attribution models) have fixed colours; any other value gets a colour derived from its
name, so the same name keeps its colour wherever the same set of names is drawn.

Text. Latin text is set in the default sans-serif font; Chinese, Japanese and Korean characters fall back
to a CJK font (``CJK_FONTS``, Debian ``fonts-noto-cjk``), so names in either script render without
missing glyphs.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

# Set while a page redraws into an ipywidgets.Output (widgets.show_filtered): a figure shown there travels as a
# binary image widget, because a large base64 PNG inside an Output's state stalls nbclient, and so Voilà,
# until the cell timeout (a 2400 x 4800 px figure: about 40 s, measured on Voilà 0.5 / nbclient 0.11).
_figures_as_widgets: contextvars.ContextVar[bool] = contextvars.ContextVar("figures_as_widgets", default=False)


@contextlib.contextmanager
def figures_as_widgets() -> Iterator[None]:
    """Within this block ``results.show_figure`` shows figures as ``ipywidgets.Image`` (binary, not base64)."""
    token = _figures_as_widgets.set(True)
    try:
        yield
    finally:
        _figures_as_widgets.reset(token)


def showing_figures_as_widgets() -> bool:
    """True inside ``figures_as_widgets()``."""
    return _figures_as_widgets.get()

PALETTE = "crest"  # sequential: heatmaps and single-colour bars

# Okabe & Ito (2008), "Color Universal Design": the hues, without their black.
OKABE_ITO = {
    "blue": "#0072b2",
    "orange": "#e69f00",
    "bluish_green": "#009e73",
    "vermillion": "#d55e00",
    "sky_blue": "#56b4e9",
    "reddish_purple": "#cc79a7",
    "yellow": "#f0e442",
}


def _tint(hex_colour: str, *, towards_white: float = 0.5) -> str:
    """``hex_colour`` mixed with white (``towards_white`` = 0: unchanged, 1: white), as ``#rrggbb``."""
    rgb = [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * towards_white):02x}" for c in rgb)


_LIGHT = {name: _tint(colour) for name, colour in OKABE_ITO.items()}
# The categorical cycle: the seven hues, then their tints for an eighth to fourteenth group.
CATEGORICAL_COLOURS: tuple[str, ...] = (*OKABE_ITO.values(), *_LIGHT.values())
CATEGORICAL_PALETTE = list(CATEGORICAL_COLOURS[:7])  # seaborn's default palette under the house style
OTHER_COLOUR = "#bbbbbb"  # "other", "unknown", missing: a group that is not one thing
GONE_COLOUR = "#7f7f7f"  # lost, churned: customers who left
# Traffic-light statuses in colour-blind-safe hues (bluish green, orange, vermillion differ in lightness too).
STATUS_COLOURS = {"green": OKABE_ITO["bluish_green"], "amber": OKABE_ITO["orange"], "red": OKABE_ITO["vermillion"], "grey": "#9e9e9e"}

_O, _L = OKABE_ITO, _LIGHT
# Fixed colours of known vocabularies, keyed by ``category_key``. Within one vocabulary no two values share a
# colour (tests check the RFM segments, lifecycle stages and every channel vocabulary of ``schema``).
KNOWN_CATEGORY_COLOURS: dict[str, str] = {
    # RFM segments (segmentation.SEGMENTS): blues and greens for good customers, warm hues for slipping ones
    "champions": _O["blue"], "loyal_customers": _O["sky_blue"], "potential_loyalist": _O["bluish_green"],
    "new_customers": _L["bluish_green"], "promising": _O["yellow"], "need_attention": _O["orange"],
    "about_to_sleep": _L["orange"], "at_risk": _O["vermillion"], "can't_lose_them": _O["reddish_purple"], "lost": GONE_COLOUR,
    # lifecycle stages (lifecycle.STAGES; "at risk" shares the segment's colour)
    "prospect": _L["sky_blue"], "new": _L["bluish_green"], "active": _O["bluish_green"], "loyal": _O["blue"],
    "reactivated": _O["sky_blue"], "churned": GONE_COLOUR, "(not_yet_a_customer)": OTHER_COLOUR,
    # sales channels (schema.ORDER_CHANNELS)
    "web": _O["blue"], "app": _O["orange"], "mini_program": _O["bluish_green"], "store": _O["vermillion"],
    "call_centre": _O["reddish_purple"], "marketplace": _O["sky_blue"], "wholesale": _O["yellow"],
    # marketing, traffic and acquisition channels (schema.MARKETING_CHANNELS, TRAFFIC_CHANNELS, ACQUISITION_CHANNELS)
    "email": _O["blue"], "sms": _O["reddish_purple"], "wechat": _O["bluish_green"], "push": _L["vermillion"],
    "paid_search": _O["orange"], "social": _O["sky_blue"], "display": _O["yellow"], "affiliate": _L["blue"],
    "direct_mail": _L["reddish_purple"], "direct": _L["orange"], "organic_search": _O["bluish_green"], "referral": _L["bluish_green"],
    # NPS bands, value tiers, experiment arms, before/after
    "detractor": _O["vermillion"], "passive": _O["orange"], "promoter": _O["bluish_green"],
    "high": _O["blue"], "medium": _O["sky_blue"], "low": _L["sky_blue"],
    "control": GONE_COLOUR, "treatment": _O["blue"], "before": _L["sky_blue"], "after": _O["blue"],
    "customers": _O["sky_blue"], "revenue": _O["blue"],
    # attribution models (attribution.MODELS)
    "first_touch": _O["sky_blue"], "last_touch": _O["orange"], "linear": _O["yellow"], "time_decay": _O["reddish_purple"],
    "position_based": _O["bluish_green"], "markov": _O["blue"],
    # groups that are not one thing
    "other": OTHER_COLOUR, "unknown": OTHER_COLOUR, "not_set": OTHER_COLOUR, "(not_set)": OTHER_COLOUR, "all": "#595959",
}

# Fonts that can render Chinese (and Japanese, Korean) names, in order of preference; every installed one is a fallback.
CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei"]
_CJK_FILE = re.compile(r"cjk|wqy|wenquanyi|sourcehan|simhei|msyh", re.IGNORECASE)


def _is_missing(value) -> bool:
    """Whether ``value`` is a missing scalar (``None``, NaN, ``pd.NA``, ``NaT``)."""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list-like is not a missing scalar
        return False


def category_key(value) -> str:
    """The name ``category_colours`` matches a category by: case-folded, spaces and hyphens as ``_``.

    ``"At Risk"``, ``"at risk"`` and ``"at-risk"`` are one category; a missing value is ``"unknown"``.
    """
    if _is_missing(value):
        return "unknown"
    return re.sub(r"[\s\-]+", "_", str(value).strip().casefold())


def _preferred_slot(key: str) -> int:
    """The palette slot a name hashes to (SHA-256, not Python's per-process ``hash``): the same in every run."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16) % len(CATEGORICAL_COLOURS)


def _first_free_from(slot: int, taken: set[str]) -> str:
    """The first colour of ``CATEGORICAL_COLOURS`` from ``slot`` on (wrapping) not in ``taken``; ``slot``'s when all are."""
    n = len(CATEGORICAL_COLOURS)
    for step in range(n):
        colour = CATEGORICAL_COLOURS[(slot + step) % n]
        if colour not in taken:
            return colour
    return CATEGORICAL_COLOURS[slot]


def category_colours(values: Iterable, *, known: Mapping[str, str] | None = None) -> dict:
    """Map each distinct category in ``values`` to a hex colour that is the same in every report.

    Parameters
    ----------
    values : iterable
        Category labels (segment names, channels, stages, variants, ...), in any order, repeats allowed;
        missing values (``None``, NaN) are left out of the result.
    known : mapping, optional
        Extra fixed colours ``{label: colour}``, taking precedence over ``KNOWN_CATEGORY_COLOURS``.

    Returns
    -------
    dict
        ``{label: "#rrggbb"}`` keyed by the labels as given (so it can be passed as seaborn's ``palette``),
        in order of first appearance. A label of a known vocabulary gets its fixed colour (matched by
        ``category_key``). Any other label gets the categorical colour its name hashes to, or the next one
        not yet used in this call: up to ``len(CATEGORICAL_COLOURS)`` categories get distinct colours, and
        a label keeps its colour in every report that draws the same set of labels.
    """
    fixed = {**KNOWN_CATEGORY_COLOURS, **{category_key(k): v for k, v in (known or {}).items()}}
    labels = list(dict.fromkeys(v for v in values if not _is_missing(v)))
    colours = {label: fixed[category_key(label)] for label in labels if category_key(label) in fixed}
    taken = set(colours.values())
    for label in sorted((label for label in labels if label not in colours), key=category_key):
        colours[label] = _first_free_from(_preferred_slot(category_key(label)), taken)
        taken.add(colours[label])
    return {label: colours[label] for label in labels}


def category_colour_list(values: Iterable) -> list[str]:
    """The colour of each item of ``values`` in order (repeats allowed), e.g. for ``ax.bar(..., color=...)``."""
    values = list(values)
    colours = category_colours(values)
    return [colours.get(v, OTHER_COLOUR) for v in values]


@functools.cache
def installed_cjk_fonts() -> tuple[str, ...]:
    """The names of the ``CJK_FONTS`` matplotlib can use, in order of preference.

    A CJK font installed after matplotlib built its font cache is not in that cache: the system's font
    files whose names look CJK are then registered once, so a freshly installed ``fonts-noto-cjk`` is used.
    """
    from matplotlib import font_manager

    def known() -> set[str]:
        return {f.name for f in font_manager.fontManager.ttflist}

    if not any(name in known() for name in CJK_FONTS):
        for path in font_manager.findSystemFonts():
            if _CJK_FILE.search(path):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # an unreadable font file is skipped
                    continue
    installed = known()
    return tuple(name for name in CJK_FONTS if name in installed)


def set_style() -> None:
    """Apply the house style: seaborn whitegrid, readable sizes, the colour-blind-safe palette, CJK fallback fonts.

    ``font.family`` lists the sans-serif family first and then every installed CJK font, so matplotlib
    falls back glyph by glyph: Latin text keeps the default font, Chinese characters come from the CJK font.
    """
    sns.set_theme(style="whitegrid", context="notebook", palette=CATEGORICAL_PALETTE)
    plt.rcParams.update(
        {
            "figure.figsize": (9, 4.5),
            "figure.dpi": 100,
            "axes.titleweight": "bold",
            "axes.titlesize": 12,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "font.family": ["sans-serif", *installed_cjk_fonts()],
            "axes.unicode_minus": False,
        }
    )


def title_with_unit(what: str, unit: str = "") -> str:
    """A chart title naming its unit, e.g. ``title_with_unit("Revenue by week", "GBP")`` -> ``"Revenue by week, GBP"``."""
    return f"{what}, {unit}" if unit else what


def new_axes(ax=None, *, figsize: tuple[float, float] | None = None):
    """Return ``ax`` if given, else the Axes of a new figure of ``figsize`` inches."""
    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize)
    return ax


def empty_state(ax, message: str, *, title: str | None = None):
    """Draw an explanatory empty state on ``ax`` (or a new Axes) instead of a chart with nothing to show.

    ``message`` says why there is nothing, with the numbers behind it, e.g.
    ``"no pair reaches the minimum support (n baskets = 1,204)"``. The axes lose their ticks and
    grid; ``title`` (optional) is kept so the report still names the chart. Returns the Axes.
    """
    ax = new_axes(ax, figsize=(7, 2.2))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11,
            color=STATUS_COLOURS["grey"], transform=ax.transAxes)
    if title:
        ax.set_title(title)
    return ax


def _describe_axes(ax) -> str:
    """One sentence of what ``ax`` shows: its title, axis labels, colour scale, legend and any empty-state message."""
    if getattr(ax, "_colorbar", None) is not None:
        label = ax.get_ylabel() or ax.get_xlabel()
        return f"colour scale: {label}" if label else ""
    parts = [ax.get_title(loc) for loc in ("left", "center", "right") if ax.get_title(loc)]
    parts += [f"{axis} axis: {label}" for axis, label in (("x", ax.get_xlabel()), ("y", ax.get_ylabel())) if label]
    legend = ax.get_legend()
    if legend is not None:
        entries = [t.get_text() for t in legend.get_texts() if t.get_text()]
        if entries:
            shown = ", ".join(entries[:12]) + (f" and {len(entries) - 12} more" if len(entries) > 12 else "")
            parts.append(f"legend: {shown}")
    if not len(ax.get_xticks()) and not len(ax.get_yticks()):  # an empty state: its message is the content
        parts += [t.get_text() for t in ax.texts if t.get_text()]
    return "; ".join(parts)


def describe_figure(fig, *, max_chars: int = 1000) -> str:
    """Alternative text for ``fig`` (for screen readers and the HTML report): what each chart shows.

    Built from the figure's suptitle and, for each visible Axes, its title, axis labels (which carry the
    units), colour-scale label, legend entries and any empty-state message. A figure with several charts
    says how many. Returns at most ``max_chars`` characters; ``"Chart"`` when the figure names nothing.
    """
    suptitle = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    charts: list[str] = []
    for ax in fig.get_axes():
        description = _describe_axes(ax) if ax.get_visible() else ""
        if description and getattr(ax, "_colorbar", None) is not None and charts:
            charts[-1] += f"; {description}"  # a colour bar belongs to the chart before it
        elif description:
            charts.append(description)
    if len(charts) > 1:
        charts = [f"{len(charts)} charts", *(f"({i}) {d}" for i, d in enumerate(charts, start=1))]
    text = ". ".join(p for p in [suptitle, *charts] if p) or "Chart"
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"

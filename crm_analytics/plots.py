"""The house style for charts. Analysis-specific charts live beside their analysis as ``plot_*`` functions.

Every ``plot_*`` function takes a result DataFrame and an optional ``ax`` and
returns the matplotlib ``Axes``; none computes anything the analysis did not.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

PALETTE = "crest"  # sequential: heatmaps and single-colour bars
CATEGORICAL_PALETTE = "colorblind"  # one colour per group
STATUS_COLOURS = {"green": "#2e7d32", "amber": "#f9a825", "red": "#c62828", "grey": "#9e9e9e"}

# Fonts that can render Chinese names and comments, in order of preference; the first installed one wins.
CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans SC", "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei"]


def set_style() -> None:
    """Apply the house style: seaborn whitegrid, readable sizes, a CJK-capable font when one is installed."""
    sns.set_theme(style="whitegrid", context="notebook", palette=CATEGORICAL_PALETTE)
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [f for f in CJK_FONTS if f in installed]
    plt.rcParams.update(
        {
            "figure.figsize": (9, 4.5),
            "figure.dpi": 100,
            "axes.titleweight": "bold",
            "axes.titlesize": 12,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "font.sans-serif": cjk + list(plt.rcParams["font.sans-serif"]),
            "axes.unicode_minus": False,
        }
    )


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

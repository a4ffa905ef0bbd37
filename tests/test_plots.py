"""Tests of crm_analytics.plots: the empty state, the colour-blind-safe palette and fixed category colours,
CJK text without missing glyphs, and the alternative text of a figure."""

from __future__ import annotations

import io
import itertools
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import seaborn as sns

from crm_analytics import attribution, lifecycle, plots, satisfaction, schema, segmentation


def test_empty_state_explains_itself_on_bare_axes():
    ax = plots.empty_state(None, "no pair reaches the minimum support (n baskets = 40)", title="Bought together")
    assert [t.get_text() for t in ax.texts] == ["no pair reaches the minimum support (n baskets = 40)"]
    assert ax.get_title() == "Bought together"
    assert not ax.get_xticks().size and not ax.get_yticks().size
    assert not any(spine.get_visible() for spine in ax.spines.values())
    plt.close("all")


def test_empty_state_draws_on_the_axes_it_is_given():
    fig, (left, right) = plt.subplots(1, 2)
    assert plots.empty_state(right, "nothing yet") is right and not left.texts
    plt.close(fig)


# --------------------------------------------------------------------------- colours


def _srgb_to_linear(rgb):
    rgb = np.asarray(rgb, dtype=float)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def _lab(linear_rgb):
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear_rgb
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])  # D65 white
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


# Machado, Oliveira and Fernandes (2009), full severity, on linear RGB.
COLOUR_VISION = {
    "typical": np.eye(3),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]]),
}


def _closest_pair_distance(colours, vision: str) -> float:
    """The smallest CIELAB distance (Delta E 1976) between two of ``colours`` as seen with ``vision``."""
    seen = [_lab(np.clip(COLOUR_VISION[vision] @ _srgb_to_linear(matplotlib.colors.to_rgb(c)), 0, 1)) for c in colours]
    return min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(seen, 2))


@pytest.mark.parametrize("vision", sorted(COLOUR_VISION))
def test_the_house_palette_stays_distinguishable_with_colour_vision_deficiencies(vision):
    # Okabe-Ito keeps every pair at least 15 apart; matplotlib's tab10 drops to about 5 for protanopia.
    assert _closest_pair_distance(plots.CATEGORICAL_PALETTE, vision) > 15
    assert _closest_pair_distance([plots.STATUS_COLOURS[s] for s in ("green", "amber", "red")], vision) > 15


def test_set_style_makes_the_colour_blind_safe_palette_the_default():
    plots.set_style()
    assert sns.color_palette().as_hex() == [c.lower() for c in plots.CATEGORICAL_PALETTE]
    fig, ax = plt.subplots()
    first, second = ax.plot([0, 1]), ax.plot([1, 0])
    assert matplotlib.colors.to_hex(first[0].get_color()) == plots.CATEGORICAL_PALETTE[0].lower()
    assert matplotlib.colors.to_hex(second[0].get_color()) == plots.CATEGORICAL_PALETTE[1].lower()
    plt.close(fig)


VOCABULARIES = {
    "RFM segments": segmentation.SEGMENTS,
    "lifecycle stages": lifecycle.STAGES,
    "order channels": schema.ORDER_CHANNELS,
    "marketing channels": schema.MARKETING_CHANNELS,
    "traffic channels": schema.TRAFFIC_CHANNELS,
    "acquisition channels": schema.ACQUISITION_CHANNELS,
    "NPS bands": satisfaction.BANDS,
    "attribution models": attribution.MODELS,
}


@pytest.mark.parametrize("vocabulary", sorted(VOCABULARIES))
def test_every_known_vocabulary_has_fixed_distinct_readable_colours(vocabulary):
    values = [v for v in VOCABULARIES[vocabulary] if v not in ("other", "unknown")]
    assert all(plots.category_key(v) in plots.KNOWN_CATEGORY_COLOURS for v in values), vocabulary
    colours = plots.category_colours(values)
    assert len(set(colours.values())) == len(values)
    assert min(_closest_pair_distance(colours.values(), vision) for vision in COLOUR_VISION) > 7


def test_a_category_keeps_its_colour_whatever_else_is_drawn_and_in_any_spelling():
    alone = plots.category_colours(["Champions"])["Champions"]
    assert plots.category_colours(["Lost", "北京", "Champions", "Lost"])["Champions"] == alone
    assert plots.category_colours(["at risk"])["at risk"] == plots.category_colours(["At Risk"])["At Risk"]
    assert plots.category_colours(["Email", "paid search"]) == {"Email": plots.category_colours(["email"])["email"],
                                                                 "paid search": plots.category_colours(["paid_search"])["paid_search"]}


def test_unknown_categories_get_stable_distinct_colours_from_the_palette():
    provinces = ["广东", "浙江", "江苏", "上海", "北京", "四川", "湖北", "山东", "河南", "福建", "湖南", "安徽", "河北", "陕西"]
    colours = plots.category_colours(provinces)
    assert list(colours) == provinces  # keyed by the labels as given, in order
    assert len(set(colours.values())) == len(provinces) == len(plots.CATEGORICAL_COLOURS)
    assert set(colours.values()) == set(plots.CATEGORICAL_COLOURS)
    assert plots.category_colours(provinces[::-1]) == colours  # the order of drawing does not matter
    assert plots.category_colours([*provinces, "西藏"])["西藏"] in plots.CATEGORICAL_COLOURS  # past 14, colours repeat


def test_missing_categories_are_left_out_and_other_is_grey():
    colours = plots.category_colours(["web", None, float("nan"), pd.NA, "other", "web"])
    assert colours == {"web": plots.KNOWN_CATEGORY_COLOURS["web"], "other": plots.OTHER_COLOUR}
    assert plots.category_colour_list(["web", "store", "web"]) == [plots.KNOWN_CATEGORY_COLOURS["web"], plots.KNOWN_CATEGORY_COLOURS["store"],
                                                                    plots.KNOWN_CATEGORY_COLOURS["web"]]


def test_known_colours_given_by_the_caller_take_precedence():
    assert plots.category_colours(["web", "Brand X"], known={"brand x": "#123456"}) == {"web": plots.KNOWN_CATEGORY_COLOURS["web"], "Brand X": "#123456"}


def test_plot_functions_colour_the_same_category_alike_across_reports():
    mix = pd.DataFrame({"age_band": ["18-24", "18-24", "25-34", "25-34"], "rfm_segment": ["Champions", "Lost", "Champions", "Lost"],
                        "group_pct": [40.0, 60.0, 70.0, 30.0], "group_customers": [10, 10, 20, 20]})
    ax = segmentation.plot_segment_mix(mix, by="age_band")
    legend = {t.get_text(): matplotlib.colors.to_hex(h.get_facecolor()) for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
    assert legend == {"Champions": plots.KNOWN_CATEGORY_COLOURS["champions"].lower(), "Lost": plots.KNOWN_CATEGORY_COLOURS["lost"].lower()}
    counts = pd.DataFrame({"lifecycle_stage": ["new", "active", "at risk"], "n_customers": [5, 9, 2]})
    ax = lifecycle.plot_stage_counts(counts)
    # the lifecycle stage "at risk" has the colour of the RFM segment "At Risk"
    assert matplotlib.colors.to_hex(ax.patches[2].get_facecolor()) == plots.category_colours(["At Risk"])["At Risk"].lower()
    plt.close("all")


# --------------------------------------------------------------------------- text


def test_chinese_and_latin_text_render_without_missing_glyphs():
    plots.set_style()
    assert plots.installed_cjk_fonts(), "no CJK font: install fonts-noto-cjk (.ci/system-deps.sh)"
    fig, ax = plt.subplots()
    ax.bar(["冠军客户", "流失客户", "Loyal Customers"], [3, 1, 2])
    ax.set_title("各细分客户的收入 Revenue by segment, CNY")
    ax.set_xlabel("客户细分 (segment)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(io.BytesIO(), format="png")
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message) or "Glyph" in str(w.message)]
    assert missing == []
    plt.close(fig)


def test_title_with_unit_names_the_unit():
    assert plots.title_with_unit("Revenue by week", "GBP") == "Revenue by week, GBP"
    assert plots.title_with_unit("Orders by week") == "Orders by week"


# --------------------------------------------------------------------------- alt text


def test_describe_figure_names_titles_units_legend_and_colour_scale():
    fig, (left, right) = plt.subplots(1, 2)
    fig.suptitle("Sales")
    left.plot([1, 2], label="web")
    left.plot([2, 1], label="store")
    left.legend()
    left.set(title="Revenue by week, GBP", xlabel="week", ylabel="revenue (GBP)")
    image = right.imshow([[1, 2], [3, 4]])
    fig.colorbar(image, ax=right, label="% of the row")
    right.set_title("Movement between segments")
    text = plots.describe_figure(fig)
    assert text == ("Sales. 2 charts. (1) Revenue by week, GBP; x axis: week; y axis: revenue (GBP); legend: web, store. "
                    "(2) Movement between segments; colour scale: % of the row")
    plt.close(fig)


def test_describe_figure_reads_an_empty_state_and_never_returns_nothing():
    ax = plots.empty_state(None, "no pair reaches the minimum support (n baskets = 40)", title="Bought together")
    assert plots.describe_figure(ax.figure) == "Bought together; no pair reaches the minimum support (n baskets = 40)"
    fig, _ = plt.subplots()
    assert plots.describe_figure(fig) == "Chart"
    assert len(plots.describe_figure(ax.figure, max_chars=20)) == 20
    plt.close("all")

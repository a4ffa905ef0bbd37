"""Tests of crm_analytics.plots: the empty state a chart draws when there is nothing to show."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from crm_analytics import plots


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

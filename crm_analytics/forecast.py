"""Sales forecasts with prediction intervals (statsmodels ETS and SARIMAX) and a rolling-origin backtest.

Series are built in the Ibis backend (revenue and orders per day), then resampled
in pandas. SARIMAX carries yearly seasonality as Fourier terms, weekly seasonality
as day-of-week dummies (daily series) and the dataset's calendar as regressors: its
calendar events (``Dataset.calendar_events``, yearly days such as a retailer's sales
days) and its country's public holidays (the ``holidays`` package). The caller passes
both (``events=``, ``country=``); nothing here knows a market. ETS carries the weekly
cycle of a daily series. The baseline is the seasonal naive forecast (same day last
week for daily series, same week last year for weekly ones).
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Iterable, Mapping

import ibis
import numpy as np
import pandas as pd

from crm_analytics import plots
from crm_analytics.frames import TableLike, as_ibis, require_columns

FREQUENCIES = {"D": "D", "W": "W-SUN", "M": "MS"}
SEASON = {"D": 7, "W": 52, "M": 12}
PERIOD_WORDS = {"D": "days", "W": "weeks", "M": "months"}

MIN_TRAINING_PERIODS = {"D": 28, "W": 52, "M": 24}
"""Fewest periods of history every fit needs (the shortest fit is the backtest's earliest origin).

Weekly (SARIMAX): one year, 52 weeks. The yearly Fourier terms and the calendar regressors (holidays,
sales days) are only estimable from a year that holds each season and each event once, and the
seasonal-naive baseline repeats the same week of last year. Daily (ETS with a weekly cycle): four
weeks, so the seven day-of-week effects are each seen four times before the trend is extrapolated.
Monthly: two years, two of each calendar month. ``too_little_data`` adds the backtest's periods.
"""
YEAR_DAYS = 365.25
# Days before the first and after the last period that are read so that the first week or month
# and the last month of a weekly or monthly index count all of their days.
_CALENDAR_MARGIN = pd.Timedelta(days=40)
# Dates inside holiday names ("Day off (substituted from 02/04/2024)") would make a new name every year.
_DATE_IN_NAME = re.compile(r"\s*\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}\s*")


def too_little_data(series: pd.Series, *, freq: str, horizon: int = 0, n_origins: int = 0) -> str:
    """Say whether ``series`` is too short or too flat to forecast and backtest; ``""`` when it is fine.

    Parameters
    ----------
    series : pandas.Series
        A regular series (a ``sales_series`` column).
    freq : {"D", "W", "M"}
    horizon, n_origins : int
        The backtest's horizon and number of origins: the earliest origin still needs
        ``MIN_TRAINING_PERIODS[freq]`` periods before it.

    Returns
    -------
    str
        ``"too little data (n = 40 weeks, needs 76: 52 to fit and 3 backtest origins of 8)"``;
        ``"no variation (every value is 0): nothing to forecast"`` for an all-zero or constant
        series; ``""`` otherwise.
    """
    if freq not in FREQUENCIES:
        raise ValueError(f"freq must be one of {sorted(FREQUENCIES)}, got {freq!r}")
    minimum = MIN_TRAINING_PERIODS[freq]
    needed = minimum + n_origins * horizon
    words = PERIOD_WORDS[freq]
    if len(series) < needed:
        backtest = f": {minimum} to fit and {n_origins} backtest origins of {horizon}" if n_origins and horizon else ""
        return f"too little data (n = {len(series)} {words}, needs {needed}{backtest})"
    values = series.to_numpy("float64")
    if np.nanmax(values) == np.nanmin(values):
        return f"no variation (every value is {values[0]:g}): nothing to forecast"
    return ""


def sales_series(
    orders: TableLike,
    *,
    freq: str = "D",
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    time_col: str = "order_time",
    amount_col: str = "order_amount",
) -> pd.DataFrame:
    """Net revenue and number of orders per day, week (ending Sunday) or month.

    Parameters
    ----------
    orders : pandas.DataFrame or Ibis table
        ``time_col`` (timestamp) and ``amount_col`` (money; refunds negative and netted).
    start, end : optional
        First and last day kept (inclusive); rows outside are ignored (e.g. future-dated rows).

    Returns
    -------
    pandas.DataFrame
        Indexed by period (``period_date``: the day, the week's Sunday or the month's first day),
        every period present: ``revenue_amount`` (money) and ``n_orders`` (purchases, refunds excluded).
    """
    if freq not in FREQUENCIES:
        raise ValueError(f"freq must be one of {sorted(FREQUENCIES)}, got {freq!r}")
    require_columns(orders, [time_col, amount_col], context="sales_series(orders)")
    t = as_ibis(orders)
    day = t[time_col].cast("timestamp").truncate("D")
    if start is not None:
        t = t.filter(day >= ibis.literal(pd.Timestamp(start).floor("D")))
    if end is not None:
        t = t.filter(day <= ibis.literal(pd.Timestamp(end).floor("D")))
    day = t[time_col].cast("timestamp").truncate("D")
    daily = t.group_by(day.name("period_date")).aggregate(
        revenue_amount=t[amount_col].sum(), n_orders=(t[amount_col] > 0).sum()
    ).to_pandas()
    daily = daily.set_index(pd.to_datetime(daily["period_date"])).drop(columns="period_date").sort_index()
    first = pd.Timestamp(start) if start is not None else daily.index.min()
    last = pd.Timestamp(end) if end is not None else daily.index.max()
    daily = daily.reindex(pd.date_range(first.floor("D"), last.floor("D"), freq="D"), fill_value=0)
    out = daily.resample(FREQUENCIES[freq]).sum() if freq != "D" else daily
    out.index.name = "period_date"
    return out.astype({"revenue_amount": "float64", "n_orders": "int64"})


def regressor_name(name: str) -> str:
    """Column name of a calendar day: ``"New Year's Day"`` -> ``"is_new_years_day"``, ``"618"`` -> ``"is_618"``."""
    slug = re.sub(r"\W+", "_", re.sub(r"['’]", "", name.casefold())).strip("_")
    return f"is_{slug or 'unnamed'}"


def public_holidays(country: str, years: Iterable[int]) -> dict[str, list[pd.Timestamp]]:
    """Public holidays of ``country`` in ``years``, by holiday name (English where the package has it).

    Parameters
    ----------
    country : str
        ISO 3166 alpha-2 code (``Dataset.country``), e.g. ``"GB"``, ``"BR"``, ``"CN"``.
    years : iterable of int

    Returns
    -------
    dict
        Holiday name -> the days it falls on. Days are the holidays themselves, not substitutes
        observed on another weekday; names that carry a date (bridge days off) are merged under
        one name without the date, so that each regressor recurs from year to year.

    Raises
    ------
    ValueError
        If the ``holidays`` package has no calendar for ``country``.
    """
    import holidays

    supported = holidays.list_supported_countries()
    if country not in supported:
        close = difflib.get_close_matches(str(country).upper(), list(supported), n=3)
        raise ValueError(f"public_holidays: no public-holiday calendar for country {country!r} in the holidays package"
                         + (f"; did you mean {close}?" if close else f" (it knows {len(supported)} country codes)"))
    languages = getattr(holidays.country_holidays(country), "supported_languages", ()) or ()
    calendar = holidays.country_holidays(country, years=list(years), observed=False,
                                         language="en_US" if "en_US" in languages else None)
    found: dict[str, list[pd.Timestamp]] = {}
    for day, names in sorted(calendar.items()):
        for name in names.split("; "):  # several holidays on one day are joined by "; "
            found.setdefault(_DATE_IN_NAME.sub(" ", name).strip(), []).append(pd.Timestamp(day))
    return found


def calendar_days(
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    *,
    events: Mapping[str, tuple[int, int]] | None = None,
    country: str | None = None,
) -> pd.DataFrame:
    """Daily 0/1 indicators of the calendar events and public holidays between ``start`` and ``end``.

    Parameters
    ----------
    start, end : date-like
        First and last day (inclusive).
    events : mapping, optional
        Event name -> ``(month, day)``, recurring every year (``Dataset.calendar_events``).
    country : str, optional
        ISO 3166 alpha-2 code whose public holidays are added (``Dataset.country``); ``None``: none.

    Returns
    -------
    pandas.DataFrame
        Indexed by day; one float column per event and per holiday name (``regressor_name``), 1.0 on
        its days. An event and a holiday with the same column name share the column.
    """
    days = pd.date_range(pd.Timestamp(start).floor("D"), pd.Timestamp(end).floor("D"), freq="D")
    flags: dict[str, np.ndarray] = {}

    def mark(name: str, is_day: np.ndarray) -> None:
        column = regressor_name(name)
        flags[column] = flags.get(column, np.zeros(len(days), dtype=bool)) | is_day

    for name, (month, day) in (events or {}).items():
        mark(str(name), np.asarray((days.month == month) & (days.day == day)))
    if country and len(days):
        for name, dates in public_holidays(country, range(days[0].year, days[-1].year + 1)).items():
            mark(name, np.asarray(days.isin(pd.DatetimeIndex(dates))))
    return pd.DataFrame(flags, index=days, dtype="float64")


def calendar_regressors(
    index: pd.DatetimeIndex,
    *,
    freq: str = "D",
    events: Mapping[str, tuple[int, int]] | None = None,
    country: str | None = None,
) -> pd.DataFrame:
    """Calendar indicators (daily) or counts of calendar days in each period (weekly, monthly).

    Parameters
    ----------
    index : pandas.DatetimeIndex
        Periods of a ``sales_series`` (days, week-ending Sundays or month starts).
    freq : {"D", "W", "M"}
    events, country :
        As in ``calendar_days``: the dataset's calendar events and its country's public holidays.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``index``, one float column per event and holiday name (``is_<name>``): 1/0 for a
        daily index, the number of such days in the period otherwise. Columns may be all zero; the
        fit leaves those out.
    """
    days = calendar_days(index.min() - _CALENDAR_MARGIN, index.max() + _CALENDAR_MARGIN, events=events, country=country)
    if freq != "D":
        days = days.resample(FREQUENCIES[freq]).sum()
    return days.reindex(index, fill_value=0.0)


def promotion_regressors(
    index: pd.DatetimeIndex,
    *,
    freq: str = "D",
    events: Mapping[str, tuple[int, int]] | None = None,
    country: str | None = None,
) -> pd.DataFrame:
    """Former name of ``calendar_regressors`` (same parameters and result)."""
    return calendar_regressors(index, freq=freq, events=events, country=country)


def calendar_for_fit(
    index: pd.DatetimeIndex,
    future: pd.DatetimeIndex,
    *,
    freq: str = "D",
    events: Mapping[str, tuple[int, int]] | None = None,
    country: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Calendar regressors of a fitted window and of the periods forecast from it, with the same columns.

    A calendar day that never occurs inside ``index`` is left out of both: its effect cannot be
    estimated, and an all-zero column only makes the fit singular.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        ``calendar_regressors`` of ``index`` and of ``future``, restricted to the columns that are
        non-zero somewhere in ``index``.
    """
    fitted = calendar_regressors(index, freq=freq, events=events, country=country)
    fitted = fitted.loc[:, fitted.ne(0).any()]
    ahead = calendar_regressors(future, freq=freq, events=events, country=country)
    return fitted, ahead.reindex(columns=fitted.columns, fill_value=0.0)


def fourier_terms(index: pd.DatetimeIndex, *, order: int = 3, period_days: float = YEAR_DAYS) -> pd.DataFrame:
    """Sine and cosine terms of the day of year (yearly seasonality), ``order`` pairs."""
    t = (index - pd.Timestamp("2000-01-01")).days.to_numpy() / period_days
    columns = {}
    for k in range(1, order + 1):
        columns[f"sin_{k}"] = np.sin(2 * np.pi * k * t)
        columns[f"cos_{k}"] = np.cos(2 * np.pi * k * t)
    return pd.DataFrame(columns, index=index)


def _exog(index: pd.DatetimeIndex, freq: str, calendar: pd.DataFrame) -> pd.DataFrame:
    parts = [fourier_terms(index), calendar]
    if freq == "D":
        dow = pd.get_dummies(pd.Categorical(index.day_of_week, categories=range(7)), prefix="dow", drop_first=True, dtype="float64")
        parts.append(dow.set_index(index))
    return pd.concat(parts, axis=1)


def _future_index(series: pd.Series, horizon: int, freq: str) -> pd.DatetimeIndex:
    return pd.date_range(series.index[-1], periods=horizon + 1, freq=FREQUENCIES[freq])[1:]


def _interval_frame(index, mean, frames: dict[int, pd.DataFrame]) -> pd.DataFrame:
    out = pd.DataFrame({"forecast": np.asarray(mean)}, index=index)
    for level, frame in frames.items():
        out[f"lower_{level}"] = np.asarray(frame.iloc[:, 0])
        out[f"upper_{level}"] = np.asarray(frame.iloc[:, 1])
    out.index.name = "period_date"
    return out


def fit_forecast(
    series: pd.Series,
    *,
    horizon: int,
    model: str = "sarimax",
    freq: str = "D",
    events: Mapping[str, tuple[int, int]] | None = None,
    country: str | None = None,
) -> pd.DataFrame:
    """Forecast ``horizon`` periods ahead with 80% and 95% prediction intervals.

    Parameters
    ----------
    series : pandas.Series
        Regular series indexed by period (a ``sales_series`` column), e.g. revenue.
    model : {"sarimax", "ets"}
        ``sarimax``: ARIMA(1,1,1) errors with Fourier yearly terms, calendar regressors and
        (daily) day-of-week dummies. ``ets``: additive damped-trend ETS with the seasonal cycle
        of ``freq`` (7 days for daily series; weekly and monthly series use no seasonal term).
    freq : {"D", "W", "M"}
        Frequency of ``series``.
    events : mapping, optional
        The dataset's calendar events, name -> ``(month, day)`` (``Dataset.calendar_events``).
    country : str, optional
        ISO 3166 alpha-2 code whose public holidays are regressors (``Dataset.country``).
        A calendar day that never occurs inside the fitted series is left out (it cannot be estimated).
        ``ets`` uses neither.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``period_date``: ``forecast``, ``lower_80``, ``upper_80``, ``lower_95``, ``upper_95``
        (units of ``series``). ``attrs["converged"]`` says whether the maximum-likelihood fit converged
        (statsmodels' own verdict); when it did not, the numbers are those of the last iteration.
    """
    if model not in ("sarimax", "ets"):
        raise ValueError(f"model must be 'sarimax' or 'ets', got {model!r}")
    y = series.astype("float64").asfreq(FREQUENCIES[freq])
    if y.isna().any():
        raise ValueError("fit_forecast: the series has gaps; build it with sales_series")
    future = _future_index(y, horizon, freq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels start-value and frequency chatter
        if model == "sarimax":
            from statsmodels.tsa.statespace.sarimax import SARIMAX

            calendar, future_calendar = calendar_for_fit(y.index, future, freq=freq, events=events, country=country)
            result = SARIMAX(y, exog=_exog(y.index, freq, calendar), order=(1, 1, 1), trend="n").fit(disp=False, maxiter=200)
            prediction = result.get_forecast(horizon, exog=_exog(future, freq, future_calendar))
            frames = {level: prediction.conf_int(alpha=1 - level / 100) for level in (80, 95)}
            return _with_status(_interval_frame(future, prediction.predicted_mean, frames), result)
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        seasonal = SEASON["D"] if freq == "D" else None
        result = ETSModel(y, error="add", trend="add", damped_trend=True, seasonal="add" if seasonal else None,
                          seasonal_periods=seasonal).fit(disp=False)
        prediction = result.get_prediction(start=len(y), end=len(y) + horizon - 1)
        frames = {level: prediction.summary_frame(alpha=1 - level / 100)[["pi_lower", "pi_upper"]] for level in (80, 95)}
        return _with_status(_interval_frame(future, prediction.predicted_mean, frames), result)


def _with_status(frame: pd.DataFrame, result) -> pd.DataFrame:
    """``frame`` with ``attrs["converged"]``: statsmodels' convergence flag of the fitted ``result``."""
    retvals = getattr(result, "mle_retvals", None) or {}
    frame.attrs["converged"] = bool(retvals.get("converged", True))
    return frame


def seasonal_naive(series: pd.Series, *, horizon: int, freq: str = "D") -> pd.Series:
    """The value one season earlier (7 days, 52 weeks, 12 months) repeated over the horizon."""
    season = SEASON[freq]
    if len(series) < season:
        raise ValueError(f"seasonal_naive: need at least {season} periods, got {len(series)}")
    last_season = series.to_numpy("float64")[-season:]
    values = np.resize(last_season, horizon)
    return pd.Series(values, index=_future_index(series, horizon, freq), name="forecast")


def forecast_errors(actual, predicted) -> dict[str, float]:
    """MAPE and sMAPE in percent; MAPE skips periods with a zero actual."""
    a, p = np.asarray(actual, dtype="float64"), np.asarray(predicted, dtype="float64")
    nonzero = a != 0
    mape = 100 * np.mean(np.abs((a[nonzero] - p[nonzero]) / a[nonzero])) if nonzero.any() else np.nan
    denominator = np.abs(a) + np.abs(p)
    smape = 100 * np.mean(np.where(denominator > 0, 2 * np.abs(a - p) / np.where(denominator > 0, denominator, 1), 0.0))
    return {"mape_pct": float(mape), "smape_pct": float(smape)}


def backtest(
    series: pd.Series,
    *,
    horizon: int,
    n_origins: int = 4,
    model: str = "sarimax",
    freq: str = "D",
    events: Mapping[str, tuple[int, int]] | None = None,
    country: str | None = None,
) -> pd.DataFrame:
    """Rolling-origin evaluation: refit at ``n_origins`` origins, each ``horizon`` periods apart, ending at the data's end.

    ``events`` and ``country`` are passed to ``fit_forecast`` (the dataset's calendar).

    Returns
    -------
    pandas.DataFrame
        One row per origin and method (``model`` and ``seasonal_naive``): ``origin_date`` (last
        period used for fitting), ``method``, ``mape_pct``, ``smape_pct`` and ``coverage_80_pct``
        (share of actuals inside the 80% interval; NaN for the baseline).
    """
    rows = []
    for k in range(n_origins, 0, -1):
        train, test = series.iloc[: len(series) - k * horizon], series.iloc[len(series) - k * horizon:][:horizon]
        fitted = fit_forecast(train, horizon=horizon, model=model, freq=freq, events=events, country=country)
        inside = (test.to_numpy() >= fitted["lower_80"].to_numpy()) & (test.to_numpy() <= fitted["upper_80"].to_numpy())
        rows.append({"origin_date": train.index[-1], "method": model, **forecast_errors(test, fitted["forecast"]),
                     "coverage_80_pct": 100 * inside.mean()})
        naive = seasonal_naive(train, horizon=horizon, freq=freq)
        rows.append({"origin_date": train.index[-1], "method": "seasonal_naive", **forecast_errors(test, naive),
                     "coverage_80_pct": np.nan})
    return pd.DataFrame(rows)


def plot_forecast(history: pd.Series, forecast: pd.DataFrame, *, ax=None, n_history: int | None = None, ylabel: str | None = None,
                  currency: str | None = None):
    """History line, forecast line and shaded 80% / 95% prediction intervals.

    ``ylabel`` names the series and its unit; default ``revenue (<currency>)``, ``currency`` the dataset's
    (default: the default dataset's)."""
    if ylabel is None:
        from crm_analytics import money

        ylabel = money.axis_label("revenue", money.currency_and_locale(currency)[0])
    plots.set_style()
    ax = plots.new_axes(ax)
    shown = history if n_history is None else history.iloc[-n_history:]
    ax.plot(shown.index, shown.to_numpy(), color="black", linewidth=1, label="actual")
    ax.fill_between(forecast.index, forecast["lower_95"], forecast["upper_95"], alpha=0.2, label="95% interval")
    ax.fill_between(forecast.index, forecast["lower_80"], forecast["upper_80"], alpha=0.35, label="80% interval")
    ax.plot(forecast.index, forecast["forecast"], label="forecast")
    ax.set(xlabel="period start", ylabel=ylabel, title=f"Forecast of {ylabel} with 80% and 95% prediction intervals")
    ax.legend(fontsize=8)
    return ax

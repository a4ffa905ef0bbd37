"""Snapshot, calibration and window dates derived from the data, and checks of dates given by hand.

Date parameters of the analyses (``as_of``, ``calibration_end``, ``observation_end``, ``end_date``,
``start_date``...) default to empty, meaning "derived from the data" by the rules below, so a
scheduled run on new data moves its snapshot with the data and a dataset from another year or
market needs no edited dates. A date given by hand must lie within the data's range; otherwise
:class:`DateOutOfRangeError` names the data's first and last dates.

The rules (``first_day`` and ``last_day`` are the days of the first and the last order):

===========================  ==================================================================
date                         derived as
===========================  ==================================================================
snapshot (``as_of``)         the day after the last order (:func:`default_as_of`): every order counts
calibration end (CLV)        ``first_day + CALIBRATION_SHARE`` of the observed span (whole days);
                             the remaining sixth is the holdout (:func:`calibration_end`)
observation end (CLV)        ``last_day`` (:func:`observation_end`)
churn scoring date           the day after the last order minus ``window_days``, so the churn
                             window after it is fully observed (:func:`churn_as_of`)
cohort end                   ``last_day`` (inclusive)
end of regular data          the day after the last day with at least a fifth of the median daily
                             rows (:func:`window_end`): stray future-dated rows do not count
forecast series              whole weeks (Monday to Sunday): from the first Monday on or after
                             ``first_day`` to the last Sunday on or before ``last_day``
                             (:func:`whole_weeks`)
===========================  ==================================================================

On the demo data (orders 2023-01-01 to 2025-12-31) these give as-of 2026-01-01, calibration end
2025-07-01, observation end 2025-12-31, churn as-of 2025-10-03 (90-day window), forecast
2023-01-02 to 2025-12-28.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from crm_analytics import frames

CALIBRATION_SHARE = 5 / 6  # of the observed span; e.g. 2.5 years calibrate and half a year is held out of 3 years
_DAY = pd.Timedelta(days=1)


class DateOutOfRangeError(ValueError):
    """A date parameter lies outside the data's range, or leaves a window without data."""


class TooLittleDataError(DateOutOfRangeError):
    """The data spans too few days for an analysis, whatever its parameters (the run is not applicable)."""


@dataclasses.dataclass(frozen=True)
class DataRange:
    """The first and last order times of the data (naive business-zone timestamps).

    Attributes
    ----------
    first_time, last_time : Timestamp
        Earliest and latest ``order_time``.
    """

    first_time: pd.Timestamp
    last_time: pd.Timestamp

    @property
    def first_day(self) -> pd.Timestamp:
        """Midnight of the first order's day."""
        return self.first_time.normalize()

    @property
    def last_day(self) -> pd.Timestamp:
        """Midnight of the last order's day."""
        return self.last_time.normalize()

    def describe(self) -> str:
        """``"orders run from 2023-01-01 to 2025-12-31"``."""
        return f"orders run from {self.first_day:%Y-%m-%d} to {self.last_day:%Y-%m-%d}"


def data_range(orders: frames.TableLike, *, time_col: str = "order_time") -> DataRange:
    """First and last order time of ``orders`` (computed in the engine).

    Parameters
    ----------
    orders : pandas.DataFrame or Ibis table
        Needs ``time_col`` (timestamp).

    Raises
    ------
    ValueError
        When no row has a ``time_col``.
    """
    frames.require_columns(orders, [time_col], context="data_range(orders)")
    t = frames.as_ibis(orders)
    bounds = t.aggregate(first_time=t[time_col].min(), last_time=t[time_col].max()).to_pandas().iloc[0]
    if pd.isna(bounds["first_time"]):
        raise ValueError(f"data_range: no orders with an {time_col}; dates cannot be derived from the data")
    return DataRange(pd.Timestamp(bounds["first_time"]), pd.Timestamp(bounds["last_time"]))


def window_end(table: frames.TableLike, *, time_col: str = "order_time", min_share: float = 0.2) -> pd.Timestamp:
    """The day after the last day of regular activity: a default end robust to stray future-dated rows.

    Daily row counts are computed in the engine; the last day with at least ``min_share`` of the
    median daily count is taken, so a few mistyped future dates (one row here and there) do not
    stretch the window into empty periods.

    Parameters
    ----------
    table : pandas.DataFrame or Ibis table
        Needs ``time_col`` (timestamp), e.g. the orders.
    min_share : float
        Share of the median daily row count a day needs to count as regular.

    Returns
    -------
    Timestamp
        Naive midnight of the day after the last regular day.

    Raises
    ------
    ValueError
        When no row has a ``time_col``.
    """
    t = frames.as_ibis(table)
    frames.require_columns(t, [time_col], context="window_end(table)")
    t = t.filter(t[time_col].notnull())
    daily = t.group_by(day=t[time_col].truncate("D")).aggregate(n=t.count()).to_pandas()
    if daily.empty:
        raise ValueError(f"window_end: no rows with a {time_col}")
    regular = daily[daily.n >= min_share * daily.n.median()]
    return pd.Timestamp(regular.day.max()).normalize() + _DAY


def default_as_of(span: DataRange) -> pd.Timestamp:
    """The day after the last order (midnight): a snapshot that counts every order."""
    return span.last_day + _DAY


def calibration_end(span: DataRange, *, share: float = CALIBRATION_SHARE) -> pd.Timestamp:
    """Last calibration day of a calibration/holdout split: ``share`` of the observed span, whole days.

    Raises
    ------
    TooLittleDataError
        When the data covers fewer than two days (nothing to hold out).
    """
    if not 0 < share < 1:
        raise ValueError(f"calibration share must lie strictly between 0 and 1, got {share}")
    span_days = (span.last_day - span.first_day).days
    if span_days < 2:
        raise TooLittleDataError(f"a calibration/holdout split needs orders on more than two days; {span.describe()}")
    return span.first_day + pd.Timedelta(days=int(share * span_days))


def observation_end(span: DataRange) -> pd.Timestamp:
    """Last day of the holdout: the last order's day."""
    return span.last_day


def churn_as_of(span: DataRange, *, window_days: int) -> pd.Timestamp:
    """Scoring date whose churn window (``window_days`` after it) lies within the data."""
    return default_as_of(span) - pd.Timedelta(days=window_days)


def whole_weeks(span: DataRange) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``(first Monday on or after the first order day, last Sunday on or before the last order day)``.

    Raises
    ------
    TooLittleDataError
        When the data holds no complete week.
    """
    start = span.first_day + pd.Timedelta(days=(7 - span.first_day.weekday()) % 7)
    end = span.last_day - pd.Timedelta(days=(span.last_day.weekday() + 1) % 7)
    if end < start + pd.Timedelta(days=6):
        raise TooLittleDataError(f"a weekly series needs one whole week (Monday to Sunday) of orders; {span.describe()}")
    return start, end


def given_or_derived(value: str | pd.Timestamp | None, span: DataRange, *, name: str, default: pd.Timestamp) -> pd.Timestamp:
    """``value`` parsed and checked against the data's range, or ``default`` when ``value`` is empty.

    A given date must lie between the first order's day and the day after the last order
    (inclusive: a snapshot the day after the last order counts every order).

    Parameters
    ----------
    value : str, Timestamp or None
        The parameter as given (ISO string); empty or None: ``default``.
    span : DataRange
        From :func:`data_range`.
    name : str
        The parameter's name, for the error message.
    default : Timestamp
        The derived date.

    Raises
    ------
    DateOutOfRangeError
        Naming the parameter, its value and the data's first and last dates.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    stamp = frames.as_timestamp(value)
    if not span.first_day <= stamp <= default_as_of(span):
        raise DateOutOfRangeError(
            f"{name} {stamp:%Y-%m-%d} lies outside the data: {span.describe()}; leave {name} empty to derive it from the data"
        )
    return stamp


def require_observed_window(start: pd.Timestamp, window_days: int, span: DataRange, *, name: str) -> None:
    """Refuse a window of ``window_days`` from ``start`` that runs past the data (its outcome is unobserved).

    Raises
    ------
    DateOutOfRangeError
        Naming the parameter, the window's end and the data's range.
    """
    end = pd.Timestamp(start) + pd.Timedelta(days=window_days)
    if end > default_as_of(span):
        latest = churn_as_of(span, window_days=window_days)
        raise DateOutOfRangeError(
            f"{name} {pd.Timestamp(start):%Y-%m-%d} plus {window_days} days ends on {end:%Y-%m-%d}, after the data: "
            f"{span.describe()}; the latest {name} with an observed window is {latest:%Y-%m-%d}"
        )

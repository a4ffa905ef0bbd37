"""Customer lifetime value: BG/NBD purchase counts and Gamma-Gamma spend.

The workflow follows Fader, Hardie and Lee (2005) and Fader and Hardie (2013):

1. ``summarize`` turns transactions into one row per customer (``frequency``,
   ``recency``, ``T``, ``monetary_value`` and optionally ``frequency_holdout``).
2. ``BetaGeo`` fits the BG/NBD model of repeat purchasing and dropout;
   ``GammaGamma`` fits the model of average spend per repeat purchase.
3. ``customer_lifetime_value`` combines both into a discounted value per customer.

Glossary. In this module *recency* is the BG/NBD recency: the time between a
customer's first and last purchase (not the time since the last purchase, as
in RFM scores). *frequency* counts repeat purchase days: purchases on the same
calendar day are merged into one, and the first purchase day is not counted.
Refunds (negative amounts) are not purchases and are ignored; zero-amount
purchases count as purchases (as in CDNOW) but Gamma-Gamma, which needs
positive spend, leaves out customers whose mean repeat spend is zero.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import ibis
import numpy as np
import pandas as pd
from scipy import optimize, special
from sklearn.exceptions import ConvergenceWarning

from crm_analytics import plots
from crm_analytics.frames import TableLike, as_ibis, require_columns

TIME_UNIT_DAYS = {"D": 1.0, "W": 7.0}
SUMMARY_COLUMNS = ["frequency", "recency", "T"]
VALUE_COLUMNS = ["probability_alive", "expected_purchases", "expected_spend_amount", "clv_amount"]

MIN_REPEAT_CUSTOMERS_BGNBD = 30
"""Fewest customers with a repeat purchase in the calibration period for a BG/NBD fit.

The dropout parameters ``a`` and ``b`` are learnt only from customers who bought again (a customer
with one purchase cannot have dropped out after a repeat). Refitting the CDNOW sample on random
subsets, fits on fewer than about 30 such customers often ran off to degenerate values (``a`` and
``b`` in the millions) or identified ``a`` and ``b`` only to within a factor of five or more.
"""

MIN_REPEAT_CUSTOMERS_GAMMA_GAMMA = 30
"""Fewest customers with a repeat purchase and a positive mean repeat spend for a Gamma-Gamma fit.

Gamma-Gamma learns the spread of spend *between* customers from each one's mean repeat spend: its
three parameters need a few dozen customers; on 20 or fewer the CDNOW subsets gave spend shapes
``q`` or scales ``gamma`` off by orders of magnitude.
"""

PARAMETER_RANGE = (1e-4, 1e4)
"""Bounds of every fitted parameter: shape parameters (``r``, ``a``, ``b``, ``p``, ``q``) as they are,
scale parameters (``alpha``, ``gamma``) divided by the data's scale (mean ``T``, mean repeat spend).
A fit that ends on a bound has run off to a degenerate limit (e.g. ``a`` and ``b`` to infinity: one
dropout probability shared by everybody) and is reported as not converged."""

MAX_LOG_PARAMETER_SE = 5.0
"""Largest standard error of a log-parameter (from the curvature of the log-likelihood at the optimum)
for a fit to count as converged. Above it the likelihood is flat along that parameter: the data leave
it undetermined to within a factor of ``exp(5)``, about 150. Usable fits stay far below it (the CDNOW
sample: at most 0.3; Online Retail II's 220 customers: at most 1.3), while the degenerate fits seen on
a few dozen customers reach 10 to 150."""


# --------------------------------------------------------------------------- summary


def _unit_days(time_unit: str) -> float:
    if time_unit not in TIME_UNIT_DAYS:
        raise ValueError(f"time_unit must be one of {sorted(TIME_UNIT_DAYS)}, got {time_unit!r}")
    return TIME_UNIT_DAYS[time_unit]


def _purchase_days(transactions: TableLike, customer_col: str, time_col: str, amount_col: str, end: pd.Timestamp):
    """Ibis expression: one row per customer and purchase day up to ``end`` (inclusive), amounts summed.

    Transactions without a customer (anonymous orders) are left out.
    """
    t = as_ibis(transactions)
    t = t.filter((t[amount_col] >= 0) & t[customer_col].notnull())
    days = t.select(
        customer_id=t[customer_col].cast("string"),
        purchase_date=t[time_col].cast("timestamp").truncate("D"),
        amount=t[amount_col].cast("float64"),
    )
    days = days.filter(days.purchase_date <= ibis.literal(end.floor("D")))
    return days.group_by(["customer_id", "purchase_date"]).aggregate(amount=days.amount.sum())


def summarize(
    transactions: TableLike,
    *,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
    calibration_end: str | pd.Timestamp,
    observation_end: str | pd.Timestamp | None = None,
    time_unit: str = "W",
) -> pd.DataFrame:
    """Summarise transactions into the per-customer inputs of BG/NBD and Gamma-Gamma.

    The aggregation runs in the Ibis backend (DuckDB for a pandas input); the
    remaining arithmetic is vectorised numpy, so a million customers take seconds.

    Parameters
    ----------
    transactions : pandas.DataFrame or Ibis table
        One row per transaction with ``customer_col`` (any type, returned as string),
        ``time_col`` (timestamp or date) and ``amount_col`` (money). Rows with a
        negative amount (refunds) are ignored.
    calibration_end : str or Timestamp
        Last day of the calibration period (inclusive). Only customers whose first
        purchase is on or before it are returned.
    observation_end : str or Timestamp, optional
        Last day of the holdout period (inclusive). When given, ``frequency_holdout``
        counts the purchase days after ``calibration_end`` up to it.
    time_unit : {"W", "D"}
        Unit of ``recency``, ``T`` and ``duration_holdout``: weeks or days, fractional.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (sorted), with columns

        - ``frequency``: repeat purchase days in the calibration period (int);
        - ``recency``: first to last purchase day, in ``time_unit``;
        - ``T``: first purchase day to ``calibration_end``, in ``time_unit``;
        - ``monetary_value``: mean spend per repeat purchase day (0 without repeats), money;
        - ``first_purchase_date``: the first purchase day;
        - with ``observation_end``: ``frequency_holdout`` (purchase days in the holdout)
          and ``duration_holdout`` (holdout length in ``time_unit``).
    """
    require_columns(transactions, [customer_col, time_col, amount_col], context="summarize(transactions)")
    unit = _unit_days(time_unit)
    cal_end = pd.Timestamp(calibration_end).floor("D")
    obs_end = None if observation_end is None else pd.Timestamp(observation_end).floor("D")
    if obs_end is not None and obs_end <= cal_end:
        raise ValueError(f"observation_end {obs_end.date()} must be after calibration_end {cal_end.date()}")

    days = _purchase_days(transactions, customer_col, time_col, amount_col, obs_end or cal_end)
    days = days.mutate(first_date=days.purchase_date.min().over(group_by="customer_id"))
    days = days.filter(days.first_date <= ibis.literal(cal_end))
    in_cal = days.purchase_date <= ibis.literal(cal_end)
    is_repeat = in_cal & (days.purchase_date > days.first_date)
    per_customer = days.group_by("customer_id").aggregate(
        first_purchase_date=days.first_date.min(),
        last_date=days.purchase_date.max(where=in_cal),
        frequency=is_repeat.sum(),
        repeat_amount=days.amount.sum(where=is_repeat),
        frequency_holdout=(~in_cal).sum(),
    )
    df = per_customer.to_pandas().sort_values("customer_id").set_index("customer_id")

    first = df["first_purchase_date"].to_numpy("datetime64[D]")
    last = df["last_date"].to_numpy("datetime64[D]")
    frequency = df["frequency"].to_numpy("int64")
    out = pd.DataFrame(index=df.index)
    out["frequency"] = frequency
    out["recency"] = (last - first).astype("float64") / unit
    out["T"] = (np.datetime64(cal_end.date(), "D") - first).astype("float64") / unit
    repeat_amount = df["repeat_amount"].fillna(0.0).to_numpy("float64")
    out["monetary_value"] = np.divide(repeat_amount, frequency, out=np.zeros(len(df)), where=frequency > 0)
    out["first_purchase_date"] = df["first_purchase_date"].astype("datetime64[us]")
    if obs_end is not None:
        out["frequency_holdout"] = df["frequency_holdout"].to_numpy("int64")
        out["duration_holdout"] = (obs_end - cal_end).days / unit
    return out


def _summary_arrays(summary: pd.DataFrame, context: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    require_columns(summary, SUMMARY_COLUMNS, context=context)
    x = summary["frequency"].to_numpy("float64")
    t_x = summary["recency"].to_numpy("float64")
    T = summary["T"].to_numpy("float64")
    if len(x) == 0:
        raise ValueError(f"{context}: empty summary")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > T + 1e-9) or np.any(np.isnan(x + t_x + T)):
        raise ValueError(f"{context}: need frequency >= 0 and 0 <= recency <= T, without missing values")
    return x, t_x, T


def too_little_data(summary: pd.DataFrame, *, model: str) -> str:
    """Say whether ``summary`` holds too few customers to fit ``model``; ``""`` when it holds enough.

    Parameters
    ----------
    summary : pandas.DataFrame
        A ``summarize`` result (``frequency``; ``monetary_value`` for Gamma-Gamma).
    model : {"bgnbd", "gamma_gamma"}
        ``bgnbd`` counts customers with a repeat purchase (``MIN_REPEAT_CUSTOMERS_BGNBD``);
        ``gamma_gamma`` those with a repeat purchase and a positive mean repeat spend
        (``MIN_REPEAT_CUSTOMERS_GAMMA_GAMMA``).

    Returns
    -------
    str
        ``"too little data (n = 12 customers with a repeat purchase, needs 30)"``, or ``""``.
    """
    if model == "bgnbd":
        require_columns(summary, ["frequency"], context="too_little_data(summary)")
        n, needed, who = int((summary["frequency"] > 0).sum()), MIN_REPEAT_CUSTOMERS_BGNBD, "customers with a repeat purchase"
    elif model == "gamma_gamma":
        require_columns(summary, ["frequency", "monetary_value"], context="too_little_data(summary)")
        n = int(((summary["frequency"] > 0) & (summary["monetary_value"] > 0)).sum())
        needed, who = MIN_REPEAT_CUSTOMERS_GAMMA_GAMMA, "customers with a repeat purchase and positive spend"
    else:
        raise ValueError(f"model must be 'bgnbd' or 'gamma_gamma', got {model!r}")
    return "" if n >= needed else f"too little data (n = {n} {who}, needs {needed})"


# --------------------------------------------------------------------------- fitting helpers


@dataclass(frozen=True)
class _FitResult:
    params: np.ndarray
    loglik: float
    converged: bool
    message: str
    n_iter: int
    reason: str = ""


def _log_bounds(scales: np.ndarray) -> list[tuple[float, float]]:
    """Bounds of the log-parameters: ``PARAMETER_RANGE`` times each parameter's scale (1 for shapes)."""
    low, high = np.log(PARAMETER_RANGE)
    return [(low + np.log(s), high + np.log(s)) for s in scales]


def _curvature(neg_mean_ll_and_grad, logp: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """Hessian of the negative mean log-likelihood in log-parameters, by central differences of the gradient."""
    k = logp.size
    hessian = np.empty((k, k))
    for i in range(k):
        shift = np.zeros(k)
        shift[i] = step
        hessian[:, i] = (neg_mean_ll_and_grad(logp + shift)[1] - neg_mean_ll_and_grad(logp - shift)[1]) / (2 * step)
    return (hessian + hessian.T) / 2


def _bound_reason(logp: np.ndarray, names, bounds) -> str:
    """``"<name> = <value> ran to the optimiser's bound ..."`` for the first parameter on a bound, else ``""``."""
    for name, value, (low, high) in zip(names, logp, bounds):
        if value <= low + 1e-3 or value >= high - 1e-3:
            return f"{name} = {np.exp(value):.3g} ran to the optimiser's bound (a degenerate limit of the model)"
    return ""


def _flatness_reason(neg_mean_ll_and_grad, logp: np.ndarray, n: float, names) -> str:
    """Why the likelihood does not determine the parameters at the optimum ``logp``, or ``""``.

    The standard error of each log-parameter comes from the curvature of the mean log-likelihood
    (divided by the number of customers ``n``); a curvature that is not positive definite, or a
    standard error above ``MAX_LOG_PARAMETER_SE``, means a flat likelihood.
    """
    hessian = _curvature(neg_mean_ll_and_grad, logp)
    if not np.all(np.isfinite(hessian)) or np.linalg.eigvalsh(hessian).min() <= 0:
        return "the likelihood is flat or not at a maximum (its curvature is not positive definite)"
    standard_errors = np.sqrt(np.diag(np.linalg.inv(hessian)) / n)
    worst = int(np.argmax(standard_errors))
    if standard_errors[worst] > MAX_LOG_PARAMETER_SE:
        return (f"the likelihood is flat along {names[worst]} (standard error of log {names[worst]} = "
                f"{standard_errors[worst]:.3g}, above {MAX_LOG_PARAMETER_SE:g}): the data do not determine it")
    return ""


def _maximise(neg_mean_ll_and_grad, x0: np.ndarray, n: float, model: str, max_iter: int, *,
              names=(), scales: np.ndarray | None = None) -> _FitResult:
    """Maximise a log-likelihood over bounded log-parameters with L-BFGS-B and an analytic gradient.

    The fit counts as converged when the optimiser reports success, no parameter ends on its bound
    and the likelihood is not flat (``MAX_LOG_PARAMETER_SE``); otherwise ``reason`` says why and a
    ``ConvergenceWarning`` is issued.
    """
    bounds = _log_bounds(np.ones(x0.size) if scales is None else scales)
    x0 = np.clip(x0, [b[0] for b in bounds], [b[1] for b in bounds])
    res = optimize.minimize(
        neg_mean_ll_and_grad, x0, jac=True, method="L-BFGS-B", bounds=bounds,
        options={"maxiter": max_iter, "gtol": 1e-9, "ftol": 1e-14},
    )
    message = str(res.message)
    names = names or [f"p{i}" for i in range(x0.size)]
    stopped = f"the optimiser stopped without converging: {message}"
    if not np.all(np.isfinite(res.x)):
        reason = stopped
    else:  # a bound explains a failed line search better than the optimiser's message does
        reason = _bound_reason(res.x, names, bounds) or (stopped if not res.success else "")
        reason = reason or _flatness_reason(neg_mean_ll_and_grad, res.x, n, names)
    if reason:
        warnings.warn(f"{model} fit did not converge: {reason}", ConvergenceWarning, stacklevel=3)
    return _FitResult(np.exp(res.x), float(-res.fun * n), not reason, message, int(res.nit), reason)


class _Fitted:
    """Shared bookkeeping of the fitted models: parameters, status and a readable summary."""

    params_: dict[str, float]
    _param_names: tuple[str, ...] = ()

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(summary) first")

    def _store(self, fit: _FitResult, n: int) -> None:
        self.params_ = dict(zip(self._param_names, map(float, fit.params)))
        self.loglik_ = fit.loglik
        self.converged_ = fit.converged
        self.convergence_reason_ = fit.reason
        self.optimizer_message_ = fit.message
        self.n_iter_ = fit.n_iter
        self.n_customers_ = n

    def summary_frame(self) -> pd.DataFrame:
        """Return the fitted parameters with the log-likelihood and optimiser status, one row per item."""
        self._check_fitted()
        rows = [*self.params_.items(), ("loglik", self.loglik_), ("n_customers", float(self.n_customers_))]
        frame = pd.DataFrame(rows, columns=["item", "value"])
        frame["converged"] = self.converged_
        frame["optimizer_message"] = self.optimizer_message_
        frame["convergence_reason"] = self.convergence_reason_
        return frame


# --------------------------------------------------------------------------- BG/NBD


def _wsum(weights: np.ndarray, values: np.ndarray) -> float:
    """Weighted sum without BLAS (``np.dot`` spins BLAS threads, slow on a busy machine)."""
    return float((weights * values).sum())


class _BgnbdLikelihood:
    """Negative mean BG/NBD log-likelihood and its gradient in log-parameters, for L-BFGS-B.

    Everything that does not depend on the parameters is prepared once: terms in
    ``x`` only are summed over the unique values of ``x``; customers without
    repeat purchases only need their unique ``T``. The two-term mixture of
    repeat buyers is computed in logs (softplus and expit), so customers with
    hundreds of purchases neither overflow nor underflow.
    """

    def __init__(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> None:
        self.n = float(x.size)
        self.ux, counts = np.unique(x, return_counts=True)
        self.wx = counts.astype("float64")
        zero = x == 0
        self.T0, counts0 = np.unique(T[zero], return_counts=True)
        self.w0 = counts0.astype("float64")
        self.x, self.t_x, self.T = (np.ascontiguousarray(v[~zero]) for v in (x, t_x, T))

    def __call__(self, logp: np.ndarray) -> tuple[float, np.ndarray]:
        r, alpha, a, b = np.exp(logp)
        ux, wx, n = self.ux, self.wx, self.n
        # Gamma and Beta parts: functions of x only.
        ll = _wsum(wx, special.gammaln(r + ux) + special.betaln(a, b + ux)) + n * (r * np.log(alpha) - special.gammaln(r) - special.betaln(a, b))
        dig_abx = special.digamma(a + b + ux)
        g_r = _wsum(wx, special.digamma(r + ux)) + n * (np.log(alpha) - special.digamma(r))
        g_alpha = n * r / alpha
        g_a = -_wsum(wx, dig_abx) + n * special.digamma(a + b)
        g_b = _wsum(wx, special.digamma(b + ux) - dig_abx) + n * (special.digamma(a + b) - special.digamma(b))
        # Customers without repeats: (alpha + T)^-r.
        log_at0 = np.log(alpha + self.T0)
        ll -= r * _wsum(self.w0, log_at0)
        g_r -= _wsum(self.w0, log_at0)
        g_alpha -= r * _wsum(self.w0, 1.0 / (alpha + self.T0))
        # Repeat buyers: log[(alpha+T)^-(r+x) + a/(b+x-1) (alpha+t_x)^-(r+x)] = -(r+x) log(alpha+T) + softplus(c).
        x = self.x
        rx = r + x
        log_at, log_atx = np.log(alpha + self.T), np.log(alpha + self.t_x)
        b_x = b + x - 1
        c = np.log(a) - np.log(b_x) + rx * (log_at - log_atx)
        share = special.expit(c)  # weight of the "dropped out after the last purchase" term
        ll += (np.logaddexp(0.0, c) - rx * log_at).sum()
        g_r -= (log_at - share * (log_at - log_atx)).sum()
        g_alpha -= (rx * ((1.0 - share) / (alpha + self.T) + share / (alpha + self.t_x))).sum()
        g_a += share.sum() / a
        g_b -= (share / b_x).sum()
        grad = np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b])
        return -ll / n, -grad / n


def _bgnbd_individual_ll(params: dict[str, float], x, t_x, T) -> np.ndarray:
    """Log-likelihood of each customer under BG/NBD (stable for hundreds of purchases)."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    has_repeat = x > 0
    base = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha) + special.betaln(a, b + x) - special.betaln(a, b)
    term1 = -(r + x) * np.log(alpha + T)
    term2 = np.where(has_repeat, np.log(a) - np.log(np.where(has_repeat, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x), -np.inf)
    return base + np.logaddexp(term1, term2)


class BetaGeo(_Fitted):
    """The BG/NBD model of repeat purchases (Fader, Hardie and Lee 2005), fitted by maximum likelihood.

    While alive, a customer buys at a Poisson rate drawn from Gamma(r, alpha);
    after each purchase they drop out with a probability drawn from Beta(a, b).

    Attributes (after ``fit``)
    --------------------------
    params_ : dict with keys ``r``, ``alpha`` (in the summary's time unit), ``a``, ``b``.
    loglik_ : float, the maximised log-likelihood (sum over customers).
    converged_ : bool, whether the fit is usable: the optimiser reported success, no parameter
        ended on its bound (``PARAMETER_RANGE``) and the likelihood is not flat along any parameter
        (``MAX_LOG_PARAMETER_SE``). ``convergence_reason_`` says why not (``""`` when converged),
        ``optimizer_message_`` holds the optimiser's message and ``n_iter_`` its iterations. A fit
        that did not converge warns with ``sklearn.exceptions.ConvergenceWarning``.
    """

    _param_names = ("r", "alpha", "a", "b")

    def __init__(self, *, max_iter: int = 500, warm_start_size: int = 50_000, random_state: int = 0) -> None:
        self.max_iter = max_iter
        self.warm_start_size = warm_start_size
        self.random_state = random_state

    def fit(self, summary: pd.DataFrame) -> "BetaGeo":
        """Fit on a ``summarize`` result (columns ``frequency``, ``recency``, ``T``); returns self.

        With more than ``2 * warm_start_size`` customers, the optimiser starts from the
        estimate on a random subsample of ``warm_start_size`` customers (``random_state``),
        which saves most of the full-data iterations; the result is the full-data optimum.
        """
        x, t_x, T = _summary_arrays(summary, "BetaGeo.fit(summary)")
        time_scale = max(float(np.mean(T)), 1e-3)
        x0 = np.log([1.0, time_scale, 1.0, 1.0])
        settings = {"names": self._param_names, "scales": np.array([1.0, time_scale, 1.0, 1.0])}
        if self.warm_start_size and len(x) > 2 * self.warm_start_size:
            pick = np.random.default_rng(self.random_state).choice(len(x), self.warm_start_size, replace=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # only the full-data fit is reported
                start = _maximise(_BgnbdLikelihood(x[pick], t_x[pick], T[pick]), x0, float(pick.size), "BetaGeo",
                                  self.max_iter, **settings)
            x0 = np.log(start.params) if np.all(np.isfinite(start.params)) else x0
        fit = _maximise(_BgnbdLikelihood(x, t_x, T), x0, float(len(x)), "BetaGeo", self.max_iter, **settings)
        self._store(fit, len(x))
        return self

    def log_likelihood(self, summary: pd.DataFrame) -> pd.Series:
        """Per-customer log-likelihood under the fitted parameters."""
        self._check_fitted()
        x, t_x, T = _summary_arrays(summary, "BetaGeo.log_likelihood(summary)")
        return pd.Series(_bgnbd_individual_ll(self.params_, x, t_x, T), index=summary.index, name="loglik")

    def _log_odds_dead(self, x, t_x, T) -> np.ndarray:
        r, alpha, a, b = (self.params_[k] for k in ("r", "alpha", "a", "b"))
        has_repeat = x > 0
        z = np.log(a) - np.log(np.where(has_repeat, b + x - 1, 1.0)) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        return np.where(has_repeat, z, -np.inf)

    def probability_alive(self, summary: pd.DataFrame) -> pd.Series:
        """P(alive) at the end of calibration for each customer of ``summary`` (0..1)."""
        self._check_fitted()
        x, t_x, T = _summary_arrays(summary, "BetaGeo.probability_alive(summary)")
        return pd.Series(special.expit(-self._log_odds_dead(x, t_x, T)), index=summary.index, name="probability_alive")

    def expected_purchases(self, summary: pd.DataFrame, *, horizon: float) -> pd.Series:
        """Expected purchases of each customer in the next ``horizon`` time units after ``T``.

        Conditional expectation E[Y(t) | x, t_x, T] of Fader, Hardie and Lee (2005, eq. 10).
        """
        self._check_fitted()
        x, t_x, T = _summary_arrays(summary, "BetaGeo.expected_purchases(summary)")
        values = self._conditional_expectation(x, t_x, T, np.asarray(horizon, dtype="float64"))
        return pd.Series(values, index=summary.index, name="expected_purchases")

    def _conditional_expectation(self, x, t_x, T, t) -> np.ndarray:
        r, alpha, a, b = (self.params_[k] for k in ("r", "alpha", "a", "b"))
        p_alive = special.expit(-self._log_odds_dead(x, t_x, T))
        log_base = (r + x) * (np.log(alpha + T) - np.log(alpha + T + t))
        hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
        return p_alive * (a + b + x - 1) / (a - 1) * (1.0 - np.exp(log_base) * hyp)

    def expected_purchases_new_customer(self, t) -> np.ndarray:
        """Expected repeat purchases E[X(t)] of a new customer within ``t`` time units of the first purchase."""
        self._check_fitted()
        r, alpha, a, b = (self.params_[k] for k in ("r", "alpha", "a", "b"))
        t = np.asarray(t, dtype="float64")
        hyp = special.hyp2f1(r, b, a + b - 1, t / (alpha + t))
        return (a + b - 1) / (a - 1) * (1.0 - np.exp(r * (np.log(alpha) - np.log(alpha + t))) * hyp)


# --------------------------------------------------------------------------- Gamma-Gamma


def _gg_terms(logp: np.ndarray, x: np.ndarray, m: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative mean log-likelihood of Gamma-Gamma (spend model) and its gradient in log-parameters."""
    p, q, v = np.exp(logp)
    px = p * x
    log_xm_v = np.log(x * m + v)
    ll_i = (
        special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q) + q * np.log(v)
        + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * log_xm_v
    )
    d_p = x * (special.digamma(px + q) - special.digamma(px) + np.log(m) + np.log(x) - log_xm_v)
    d_q = special.digamma(px + q) - special.digamma(q) + np.log(v) - log_xm_v
    d_v = q / v - (px + q) / (x * m + v)
    grad = np.array([d_p.sum() * p, d_q.sum() * q, d_v.sum() * v])
    return -ll_i.sum() / x.size, -grad / x.size


class GammaGamma(_Fitted):
    """The Gamma-Gamma model of average spend per repeat purchase (Fader and Hardie 2013).

    Fitted on customers with at least one repeat purchase. It assumes spend is
    independent of purchase frequency: check ``frequency`` vs ``monetary_value``
    correlation before trusting it.

    Attributes (after ``fit``)
    --------------------------
    params_ : dict with keys ``p``, ``q``, ``gamma``.
    loglik_, converged_, convergence_reason_, optimizer_message_, n_iter_ : as for ``BetaGeo``;
        a fit with ``q <= 1`` (no finite mean spend) also counts as not converged.
    """

    _param_names = ("p", "q", "gamma")

    def __init__(self, *, max_iter: int = 500) -> None:
        self.max_iter = max_iter

    @staticmethod
    def _repeaters(summary: pd.DataFrame, context: str) -> tuple[np.ndarray, np.ndarray]:
        require_columns(summary, ["frequency", "monetary_value"], context=context)
        x = summary["frequency"].to_numpy("float64")
        m = summary["monetary_value"].to_numpy("float64")
        if np.any(m < 0):
            raise ValueError(f"{context}: monetary_value must not be negative")
        keep = (x > 0) & (m > 0)
        return x[keep], m[keep]

    def fit(self, summary: pd.DataFrame) -> "GammaGamma":
        """Fit on the customers of ``summary`` with ``frequency > 0`` and ``monetary_value > 0``; returns self.

        Columns used: ``frequency``, ``monetary_value``. ``n_customers_`` counts the customers fitted.
        """
        x, m = self._repeaters(summary, "GammaGamma.fit(summary)")
        if len(x) < 2:
            raise ValueError("GammaGamma.fit(summary): needs at least two customers with repeat purchases")
        x0 = np.log([1.0, 1.0, float(np.mean(m))])
        fit = _maximise(lambda p: _gg_terms(p, x, m), x0, float(x.size), "GammaGamma", self.max_iter,
                        names=self._param_names, scales=np.array([1.0, 1.0, float(np.mean(m))]))
        q = fit.params[1]
        if fit.converged and q <= 1:
            reason = f"q = {q:.3g} is not above 1, so the mean spend per purchase is undefined"
            warnings.warn(f"GammaGamma fit did not converge: {reason}", ConvergenceWarning, stacklevel=2)
            fit = replace(fit, converged=False, reason=reason)
        self._store(fit, len(x))
        return self

    def expected_spend(self, summary: pd.DataFrame) -> pd.Series:
        """Expected mean spend per future purchase, money; the population mean for customers without repeats."""
        self._check_fitted()
        require_columns(summary, ["frequency", "monetary_value"], context="GammaGamma.expected_spend(summary)")
        p, q, v = (self.params_[k] for k in ("p", "q", "gamma"))
        if q <= 1:
            raise ValueError(f"the Gamma-Gamma mean needs q > 1, the fitted q is {q:.4g}")
        x = summary["frequency"].to_numpy("float64")
        m = summary["monetary_value"].to_numpy("float64")
        weight = p * x / (p * x + q - 1)
        population_mean = p * v / (q - 1)
        values = (1 - weight) * population_mean + weight * np.where(x > 0, m, 0.0)
        return pd.Series(values, index=summary.index, name="expected_spend_amount")


def fit_status_frame(models: dict) -> pd.DataFrame:
    """Parameters and status of several fits in one table, one block of rows per model.

    Parameters
    ----------
    models : dict
        Label (e.g. ``"BG/NBD"``) -> a fitted ``BetaGeo`` / ``GammaGamma``, or ``None`` for a fit
        that was skipped (left out of the table).

    Returns
    -------
    pandas.DataFrame
        The ``summary_frame`` rows of every fitted model with a ``model`` column: ``item``, ``value``,
        ``converged``, ``optimizer_message``, ``convergence_reason``, ``model``; empty (same columns)
        when every fit was skipped.
    """
    frames = [fitted.summary_frame().assign(model=label) for label, fitted in models.items() if fitted is not None]
    columns = ["item", "value", "converged", "optimizer_message", "convergence_reason", "model"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


# --------------------------------------------------------------------------- value and checks


def customer_lifetime_value(
    summary: pd.DataFrame,
    *,
    transaction_model: BetaGeo,
    spend_model: GammaGamma,
    horizon: float = 52.0,
    period: float = 4.0,
    discount_rate: float = 0.01,
) -> pd.DataFrame:
    """Discounted customer lifetime value over ``horizon`` time units.

    The horizon is cut into steps of ``period`` time units; step k's expected
    purchases (BG/NBD) times the expected spend (Gamma-Gamma) is discounted by
    ``(1 + discount_rate) ** k``.

    Parameters
    ----------
    summary : pandas.DataFrame
        A ``summarize`` result: ``frequency``, ``recency``, ``T``, ``monetary_value``.
    horizon, period : float
        In the summary's time unit (weeks by default: 52 and 4 give a year in 4-week steps).
    discount_rate : float
        Discount rate per ``period`` (0.01 = 1% per 4 weeks).

    Returns
    -------
    pandas.DataFrame
        Indexed like ``summary``: ``probability_alive``, ``expected_purchases`` (over the
        horizon), ``expected_spend_amount`` (per purchase) and ``clv_amount`` (discounted, money).
    """
    if horizon <= 0 or period <= 0 or discount_rate < 0:
        raise ValueError("horizon and period must be positive and discount_rate non-negative")
    x, t_x, T = _summary_arrays(summary, "customer_lifetime_value(summary)")
    spend = spend_model.expected_spend(summary).to_numpy()
    steps = np.append(np.arange(period, horizon, period), horizon)
    cumulative = [np.zeros(len(x))] + [transaction_model._conditional_expectation(x, t_x, T, s) for s in steps]
    increments = np.diff(np.vstack(cumulative), axis=0)
    discount = (1.0 + discount_rate) ** -np.arange(1, len(steps) + 1)
    out = pd.DataFrame(index=summary.index)
    out["probability_alive"] = transaction_model.probability_alive(summary).to_numpy()
    out["expected_purchases"] = cumulative[-1]
    out["expected_spend_amount"] = spend
    out["clv_amount"] = spend * (discount @ increments)
    return out


def tracking_frame(
    transactions: TableLike,
    summary: pd.DataFrame,
    model: BetaGeo,
    *,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    time_unit: str = "W",
) -> pd.DataFrame:
    """Cumulative repeat purchases, actual vs BG/NBD expected, per time unit from ``start`` to ``end``.

    Only the customers of ``summary`` count. The expected curve sums each customer's
    unconditional E[X(t - first purchase)] (Fader, Hardie and Lee 2005, figure 1).

    Returns
    -------
    pandas.DataFrame
        One row per period: ``period`` (1, 2, ...), ``period_end_date``, ``actual_repeat``
        and ``expected_repeat`` (cumulative repeat purchase days).
    """
    require_columns(summary, ["first_purchase_date"], context="tracking_frame(summary)")
    unit = _unit_days(time_unit)
    start, end = pd.Timestamp(start).floor("D"), pd.Timestamp(end).floor("D")
    days = _purchase_days(transactions, customer_col, time_col, amount_col, end).to_pandas()
    days = days[days["customer_id"].isin(summary.index)]
    first = summary["first_purchase_date"].reindex(days["customer_id"]).to_numpy("datetime64[D]")
    dates = days["purchase_date"].to_numpy("datetime64[D]")
    repeat_dates = np.sort(dates[dates > first])
    n_periods = int(np.ceil(((end - start).days + 1) / unit))
    origin = np.datetime64(start.date(), "D")
    period_ends = origin + np.round(np.arange(1, n_periods + 1) * unit).astype("int64")
    actual = np.searchsorted(repeat_dates, period_ends, side="left")
    # Time from each first purchase to the last day of each period, in time units (as T in summarize).
    birth_days, n_born = np.unique(summary["first_purchase_date"].to_numpy("datetime64[D]"), return_counts=True)
    birth = (birth_days - origin).astype("float64") / unit
    elapsed = np.arange(1, n_periods + 1)[:, None] - birth[None, :] - 1.0 / unit
    expected = model.expected_purchases_new_customer(np.clip(elapsed, 0, None)) @ n_born
    return pd.DataFrame(
        {
            "period": np.arange(1, n_periods + 1),
            "period_end_date": pd.to_datetime(period_ends - 1),
            "actual_repeat": actual,
            "expected_repeat": expected,
        }
    )


def conditional_expectations(summary: pd.DataFrame, model: BetaGeo, *, max_frequency: int = 7) -> pd.DataFrame:
    """Predicted vs actual holdout purchases by calibration frequency (Fader, Hardie and Lee 2005, figure 3).

    Parameters
    ----------
    summary : pandas.DataFrame
        A ``summarize`` result with ``frequency_holdout`` and ``duration_holdout``.
    max_frequency : int
        Frequencies at or above it are pooled into one ``max_frequency+`` row.

    Returns
    -------
    pandas.DataFrame
        One row per calibration frequency: ``frequency`` (label), ``n_customers``,
        ``actual_holdout`` and ``expected_holdout`` (mean purchases per customer in the holdout).
    """
    require_columns(summary, ["frequency_holdout", "duration_holdout"], context="conditional_expectations(summary)")
    horizon = float(summary["duration_holdout"].iloc[0])
    expected = model.expected_purchases(summary, horizon=horizon)
    capped = np.minimum(summary["frequency"].to_numpy(), max_frequency)
    frame = pd.DataFrame({"bucket": capped, "actual_holdout": summary["frequency_holdout"].to_numpy(), "expected_holdout": expected.to_numpy()})
    out = frame.groupby("bucket").agg(
        n_customers=("actual_holdout", "size"), actual_holdout=("actual_holdout", "mean"), expected_holdout=("expected_holdout", "mean")
    )
    labels = [f"{b}+" if b == max_frequency else str(b) for b in out.index]
    return out.reset_index(drop=True).assign(frequency=labels)[["frequency", "n_customers", "actual_holdout", "expected_holdout"]]


# --------------------------------------------------------------------------- plots


def plot_tracking(tracking: pd.DataFrame, *, calibration_periods: float | None = None, ax=None, time_unit: str = "W"):
    """Line chart of cumulative repeat purchases, actual vs expected (a ``tracking_frame`` result of ``time_unit``)."""
    plots.set_style()
    ax = plots.new_axes(ax)
    ax.plot(tracking["period"], tracking["actual_repeat"], label="actual", color="black")
    ax.plot(tracking["period"], tracking["expected_repeat"], label="BG/NBD expected", linestyle="--")
    if calibration_periods is not None:
        ax.axvline(calibration_periods, color="grey", linestyle=":", label="end of calibration")
    unit = {"D": "days", "W": "weeks", "M": "months", "MS": "months"}.get(time_unit, f"periods of {time_unit}")
    ax.set(xlabel=f"{unit} since the start", ylabel="cumulative repeat purchases (count)", title="Tracking: does the BG/NBD model follow actual repeat purchases?")
    ax.legend()
    return ax


def plot_conditional_expectations(table: pd.DataFrame, *, ax=None):
    """Predicted vs actual mean holdout purchases by calibration frequency (a ``conditional_expectations`` result)."""
    plots.set_style()
    ax = plots.new_axes(ax)
    ax.plot(table["frequency"], table["actual_holdout"], marker="o", label="actual", color="black")
    ax.plot(table["frequency"], table["expected_holdout"], marker="s", linestyle="--", label="BG/NBD expected")
    ax.set(xlabel="repeat purchases in calibration (count)", ylabel="mean purchases in holdout (count)",
           title="Conditional expectations: predicted vs actual holdout purchases")
    ax.legend()
    return ax


def plot_clv_distribution(values: pd.DataFrame, *, ax=None, clip_quantile: float = 0.99, currency: str | None = None):
    """Histogram of ``clv_amount`` (a ``customer_lifetime_value`` result), the top tail clipped for readability.

    The axis names ``currency`` (the dataset's; default: the default dataset's)."""
    from crm_analytics import money

    plots.set_style()
    ax = plots.new_axes(ax)
    clv = values["clv_amount"]
    ax.hist(clv.clip(upper=clv.quantile(clip_quantile)), bins=50)
    clipped = f"clipped at the {100 * clip_quantile:g}th percentile"
    currency = money.currency_and_locale(currency)[0]
    ax.set(xlabel=money.axis_label(f"CLV per customer, {clipped}", currency), ylabel="customers (count)",
           title=f"Customer lifetime value: median {clv.median():,.0f} {currency}")
    return ax

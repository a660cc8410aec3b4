"""Lifetime value: BG/NBD for whether a customer still buys and how often, Gamma-Gamma for how much.

Fitted with `lifetimes` (maximum likelihood), chosen over PyMC-Marketing's `clv` module by measurement
(bench/RESULTS.md, "Predictions": the same estimates on 100k customers in a twentieth of the time, and no
compiler or 400 MB of dependencies in the setup). The models see only the day-level summary (`features.Rfm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from lifetimes import GammaGammaFitter, ModifiedBetaGeoFitter

from sinks.predictions.features import Rfm

# A small ridge on the parameters, as the library advises, so that a small or odd history cannot send them
# to the bounds of the likelihood.
PENALIZER = 0.001
# Gamma-Gamma needs repeat buyers whose values differ; below this many, the population mean is used.
FEWEST_REPEAT_BUYERS = 20
# Steps of the search for the day the next order is expected (the horizon halved this often).
NEXT_ORDER_STEPS = 12


@dataclass(frozen=True)
class ClvPrediction:
    """What the lifetime-value model predicts for each person of a summary."""

    p_alive: npt.NDArray[np.float64]
    expected_orders: npt.NDArray[np.float64]
    predicted_value: npt.NDArray[np.float64]
    # Days from the moment of the summary to the day the expected orders reach one; NaN when not within the horizon.
    next_order_days: npt.NDArray[np.float64]


@dataclass(frozen=True)
class ClvModel:
    """The fitted lifetime-value models: repeat orders (modified BG/NBD) and, when it could be fitted, spend
    (Gamma-Gamma)."""

    orders: ModifiedBetaGeoFitter
    spend: GammaGammaFitter | None
    mean_value: float  # of repeat days, over every customer: used when Gamma-Gamma could not be fitted

    def predict(self, summary: Rfm, horizon_days: int) -> ClvPrediction:
        f, r, t = summary.frequency, summary.recency, summary.age
        p_alive = np.clip(np.asarray(self.orders.conditional_probability_alive(f, r, t), dtype=np.float64), 0, 1)
        expected = self._expected(horizon_days, summary)
        if self.spend is not None:
            value = np.asarray(self.spend.conditional_expected_average_profit(f, summary.monetary), dtype=np.float64)
        else:
            value = np.full_like(f, self.mean_value)
        return ClvPrediction(p_alive, expected, expected * value, self._next_order(summary, horizon_days))

    def _expected(self, days: float | npt.NDArray[np.float64], summary: Rfm) -> npt.NDArray[np.float64]:
        f, r, t = summary.frequency, summary.recency, summary.age
        found = self.orders.conditional_expected_number_of_purchases_up_to_time(days, f, r, t)
        return np.maximum(np.nan_to_num(np.asarray(found, dtype=np.float64)), 0.0)

    def _next_order(self, summary: Rfm, horizon_days: int) -> npt.NDArray[np.float64]:
        """Bisection on each person's expected orders, which grow with time: the day they reach one."""
        low = np.zeros_like(summary.frequency)
        high = np.full_like(summary.frequency, float(horizon_days))
        due = self._expected(high, summary) >= 1.0
        for _ in range(NEXT_ORDER_STEPS):
            middle = (low + high) / 2
            reached = self._expected(middle, summary) >= 1.0
            high = np.where(reached, middle, high)
            low = np.where(reached, low, middle)
        return np.where(due, high, np.nan)


def fit_clv(summary: Rfm) -> ClvModel:
    """Fit both models on the customers' summary; raises ValueError when there is nothing to learn from."""
    if summary.frequency.size == 0 or not np.any(summary.frequency > 0):
        raise ValueError("no customer has ordered on more than one day: there is nothing to fit")
    orders = ModifiedBetaGeoFitter(penalizer_coef=PENALIZER)
    orders.fit(summary.frequency, summary.recency, summary.age)
    repeat = (summary.frequency > 0) & (summary.monetary > 0)  # Gamma-Gamma takes positive values only
    mean_value = float(np.mean(summary.monetary[repeat]))
    spend: GammaGammaFitter | None = None
    if int(np.sum(repeat)) >= FEWEST_REPEAT_BUYERS and float(np.std(summary.monetary[repeat])) > 0:
        spend = GammaGammaFitter(penalizer_coef=PENALIZER)
        spend.fit(summary.frequency[repeat], summary.monetary[repeat])
    return ClvModel(orders, spend, mean_value)

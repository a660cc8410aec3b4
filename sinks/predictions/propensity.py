"""Purchase propensity: the probability of at least one order within the horizon, from the person's own history.

A gradient-boosted classifier (scikit-learn's HistGradientBoostingClassifier: no scaling, missing values
and monotone trends handled, a few seconds on 100k people) over `features.PROPENSITY_FEATURES`. It learns
from the past: the features as of one horizon before the moment of training, labelled by whether the person
ordered in the horizon that followed; it then scores the features as of that moment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier

# Fixed, so that the same history gives the same scores.
RANDOM_STATE = 0


@dataclass(frozen=True)
class PropensityModel:
    """The fitted propensity classifier, or the base rate when every example had the same label."""

    classifier: HistGradientBoostingClassifier | None
    base_rate: float  # when every example had the same label, the classifier cannot be fitted: that rate

    def predict(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if self.classifier is None:
            return np.full(features.shape[0], self.base_rate)
        return np.asarray(self.classifier.predict_proba(features)[:, 1], dtype=np.float64)


def fit_propensity(features: npt.NDArray[np.float64], ordered: npt.NDArray[np.bool_]) -> PropensityModel:
    """Fit on one row of features per person and whether they ordered in the horizon after them."""
    if features.shape[0] == 0:
        raise ValueError("no customer before the training window: there is nothing to fit")
    rate = float(np.mean(ordered))
    if rate in (0.0, 1.0):
        return PropensityModel(None, rate)
    classifier = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, early_stopping=True, random_state=RANDOM_STATE
    )
    classifier.fit(features, ordered.astype(np.int8))
    return PropensityModel(classifier, rate)

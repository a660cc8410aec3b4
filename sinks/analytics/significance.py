"""Whether two variants of a nudge convert differently: the two-proportion z-test, without scipy."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ZTest:
    """The result of a two-proportion z-test."""

    z: float
    p_value: float
    lift: float | None  # relative change of the rate of b over a; None when a's rate is zero


def normal_cdf(x: float) -> float:
    """The standard normal distribution function at `x`."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def two_proportion_z_test(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> ZTest | None:
    """Two-sided test with the pooled standard error; None when either group is empty or the pooled rate is
    0 or 1, where the test says nothing."""
    if trials_a <= 0 or trials_b <= 0:
        return None
    rate_a = successes_a / trials_a
    rate_b = successes_b / trials_b
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    variance = pooled * (1.0 - pooled) * (1.0 / trials_a + 1.0 / trials_b)
    if variance <= 0.0:
        return None
    z = (rate_b - rate_a) / math.sqrt(variance)
    p_value = 2.0 * (1.0 - normal_cdf(abs(z)))
    lift = (rate_b - rate_a) / rate_a if rate_a > 0 else None
    return ZTest(z=z, p_value=max(0.0, min(1.0, p_value)), lift=lift)


@dataclass(frozen=True)
class Arm:
    """One arm of a test: its conversions out of the messages sent."""

    variant: str
    conversions: int
    sent: int


@dataclass(frozen=True)
class VariantTest:
    """One variant against its rule's baseline: both rates and whether the difference is significant."""

    rule: str
    baseline: str
    variant: str
    baseline_rate: float
    variant_rate: float
    z: float | None
    p_value: float | None
    lift: float | None
    significant: bool


BASELINE_NAMES = ("control", "a", "A")


def compare_variants(
    rule: str, arms: list[Arm], alpha: float = 0.05, baselines: tuple[str, ...] = BASELINE_NAMES
) -> list[VariantTest]:
    """Each variant against the baseline: the first arm named in `baselines` (control, or "a"), else the
    first by name."""
    if len(arms) < 2:
        return []
    ordered = sorted(arms, key=lambda arm: arm.variant)
    baseline = next((arm for name in baselines for arm in ordered if arm.variant == name), ordered[0])
    results = []
    for arm in ordered:
        if arm is baseline:
            continue
        test = two_proportion_z_test(baseline.conversions, baseline.sent, arm.conversions, arm.sent)
        results.append(
            VariantTest(
                rule=rule,
                baseline=baseline.variant,
                variant=arm.variant,
                baseline_rate=_rate(baseline.conversions, baseline.sent),
                variant_rate=_rate(arm.conversions, arm.sent),
                z=test.z if test else None,
                p_value=test.p_value if test else None,
                lift=test.lift if test else None,
                significant=test is not None and test.p_value < alpha,
            )
        )
    return results


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0

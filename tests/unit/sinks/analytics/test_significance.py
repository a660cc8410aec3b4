from __future__ import annotations

import math

import pytest

from sinks.analytics.significance import Arm, compare_variants, normal_cdf, two_proportion_z_test


def test_normal_cdf_known_values() -> None:
    assert normal_cdf(0.0) == pytest.approx(0.5)
    assert normal_cdf(1.959964) == pytest.approx(0.975, abs=1e-6)
    assert normal_cdf(-1.0) == pytest.approx(0.158655, abs=1e-6)


def test_z_test_matches_a_hand_computation() -> None:
    # 200/1000 against 250/1000: pooled 0.225, se = sqrt(0.225*0.775*0.002) = 0.018675
    result = two_proportion_z_test(200, 1000, 250, 1000)
    assert result is not None
    assert result.z == pytest.approx(0.05 / math.sqrt(0.225 * 0.775 * 0.002))
    assert result.z == pytest.approx(2.6774, abs=1e-4)
    assert result.p_value == pytest.approx(0.00742, abs=1e-4)
    assert result.lift == pytest.approx(0.25)


def test_z_test_is_symmetric_and_says_nothing_without_data() -> None:
    ab = two_proportion_z_test(10, 100, 20, 100)
    ba = two_proportion_z_test(20, 100, 10, 100)
    assert ab is not None and ba is not None
    assert ab.z == pytest.approx(-ba.z)
    assert ab.p_value == pytest.approx(ba.p_value)
    assert two_proportion_z_test(0, 0, 1, 10) is None
    assert two_proportion_z_test(0, 10, 0, 10) is None  # no conversions anywhere: no variance
    same = two_proportion_z_test(5, 50, 5, 50)
    assert same is not None and same.p_value == pytest.approx(1.0)


def test_compare_variants_uses_control_as_baseline() -> None:
    tests = compare_variants("cart", [Arm("b", 250, 1000), Arm("control", 200, 1000), Arm("c", 201, 1000)])
    assert [(t.baseline, t.variant) for t in tests] == [("control", "b"), ("control", "c")]
    assert tests[0].significant and not tests[1].significant
    assert compare_variants("cart", [Arm("", 3, 10)]) == []

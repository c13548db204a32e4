"""Power of the t-tests: textbook sample sizes, and the MDE checked by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from ablate.compare import power


def test_power_formulas():
    # textbook sample sizes at level 0.05 and 80% power: d = 1 two-sample -> 17 per group,
    # d_z = 0.5 paired -> 34 pairs
    assert power.seeds_needed(1.0, 1.0, 1.0) == 17
    assert power.seeds_needed(0.5, 0.0, 0.0, paired_std=1.0) == 34
    assert math.isnan(power.seeds_needed(0.0, 1.0, 1.0))
    assert power.seeds_needed(1e-3, 1.0, 1.0) == math.inf
    # the MDE is detected with 80% power: check by simulating paired t-tests at it
    n, sd = 5, 1.0
    mde = power.min_detectable_diff(sd / math.sqrt(n), n - 1)
    rng = np.random.default_rng(11)
    d = rng.normal(mde, sd, size=(4000, n))
    p = sps.ttest_1samp(d, 0.0, axis=1).pvalue
    assert abs((p < 0.05).mean() - 0.80) < 0.03


def test_power_is_monotone_and_handles_extremes():
    assert power.t_power(0.0, 1.0, 4) == pytest.approx(0.05)  # no effect: the level
    assert power.t_power(1.0, 0.5, 4) < power.t_power(2.0, 0.5, 4) < power.t_power(2.0, 0.5, 40)
    assert power.t_power(0.68, 1.3 / math.sqrt(1000), 999, 0.01) == 1.0  # nct NaN tail handled
    assert math.isnan(power.t_power(1.0, 0.0, 4)) and math.isnan(power.min_detectable_diff(0.0, 4))

import math

import pytest

from ablate.schedules import SCHEDULES, AlphaSchedule


def test_linear_known_steps():
    s = AlphaSchedule("linear", 0.0, 1.0, steps=100)
    assert [s(t) for t in (0, 25, 50, 100, 150)] == [0.0, 0.25, 0.5, 1.0, 1.0]


def test_cosine_known_steps():
    s = AlphaSchedule("cosine", 0.0, 1.0, steps=100)
    assert s(0) == 0.0
    assert s(50) == pytest.approx(0.5)
    assert s(25) == pytest.approx((1 - math.cos(math.pi * 0.25)) / 2)
    assert s(100) == pytest.approx(1.0)
    assert s(25) < 0.25  # slow start


def test_step_levels():
    s = AlphaSchedule("step", 0.0, 1.0, steps=100, levels=4)
    assert [s(t) for t in (0, 24, 25, 49, 50, 75, 99, 100)] == [0.0, 0.0, 0.25, 0.25, 0.5, 0.75, 0.75, 1.0]


def test_constant_is_end_value():
    s = AlphaSchedule("constant", 0.2, 0.7, steps=10)
    assert s(0) == s(5) == s(50) == 0.7


def test_descending_and_hold_off_repeats():
    s = AlphaSchedule("linear", 1.0, 0.0, steps=10, hold=False)
    assert s(0) == 1.0 and s(5) == 0.5
    assert s(10) == 1.0 and s(15) == 0.5  # starts over


def test_errors_name_valid_choices():
    with pytest.raises(ValueError, match="valid schedules: constant, linear, cosine, step"):
        AlphaSchedule("exp", 0, 1, 10)
    with pytest.raises(ValueError, match="at least 1 step"):
        AlphaSchedule("linear", 0, 1, 0)
    assert set(SCHEDULES) == {"constant", "linear", "cosine", "step"}

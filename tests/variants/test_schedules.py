"""Alpha schedules: known values, the end-of-window convention, hold/sawtooth, registration."""

import math
import sys
import textwrap
from collections import Counter

import pytest
from helpers import install_plugin  # tests/helpers.py

from variants import SCHEDULES, AlphaSchedule, get_schedule, list_schedules, register_schedule

BUILTINS = ["constant", "cosine", "linear", "step"]


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Each test works on a copy of the registry; whatever it registers disappears after."""
    monkeypatch.setattr(SCHEDULES, "entries", dict(SCHEDULES.entries))
    monkeypatch.setattr(SCHEDULES, "plugins_loaded", SCHEDULES.plugins_loaded)
    yield


def test_linear_known_steps():
    # 101 steps: step t is t/100 of the way; the last step of the window (100) is at end.
    s = AlphaSchedule("linear", 0.0, 1.0, steps=101)
    assert [s(t) for t in (0, 25, 50, 100, 150)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert [AlphaSchedule("linear", 0.0, 1.0, steps=5)(t) for t in range(5)] == [
        0.0, 0.25, 0.5, 0.75, 1.0,
    ]


def test_cosine_known_steps():
    s = AlphaSchedule("cosine", 0.0, 1.0, steps=101)
    assert s(0) == 0.0
    assert s(50) == pytest.approx(0.5)
    assert s(25) == pytest.approx((1 - math.cos(math.pi * 0.25)) / 2)
    assert s(100) == 1.0
    assert s(25) < 0.25 and s(75) > 0.75  # slow, fast, slow


def test_step_known_steps_and_last_level_lasts_as_long_as_the_others():
    s = AlphaSchedule("step", 0.0, 1.0, steps=10, levels=4)
    assert [s(t) for t in range(12)] == [0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1, 1, 1, 1]
    s = AlphaSchedule("step", 0.0, 1.0, steps=100, levels=4)
    assert Counter(s(t) for t in range(100)) == {0.0: 20, 0.25: 20, 0.5: 20, 0.75: 20, 1.0: 20}
    assert AlphaSchedule("step", 2.0, 4.0, steps=6, levels=2)(3) == 3.0  # start/end respected


@pytest.mark.parametrize("levels", [1, 2, 3, 4, 7])
def test_every_step_level_lasts_the_same_number_of_steps(levels):
    for steps in range(levels + 1, 300):
        s = AlphaSchedule("step", 0.0, 1.0, steps=steps, levels=levels)
        values = [s(t) for t in range(steps)]
        counts = Counter(values)
        assert sorted(counts) == [i / levels for i in range(levels + 1)], (steps, counts)
        assert max(counts.values()) - min(counts.values()) <= 1, (steps, levels, counts)
        assert values == sorted(values)  # monotone, one block per level


@pytest.mark.parametrize("kind", list_schedules())  # the contract of every registered schedule
@pytest.mark.parametrize("steps", [1, 2, 3, 7, 50, 391, 10_000])
def test_final_step_of_the_window_trains_at_alpha_end(kind, steps):
    # The training loop passes steps = total optimizer steps (or alpha_epochs * steps per
    # epoch) and calls schedule(step) before step 0 .. steps-1: the last one is at end,
    # exactly, for start/end that do not add up exactly in binary floating point.
    s = AlphaSchedule(kind, 0.1, 0.7, steps=steps, levels=4)
    assert s(steps - 1) == 0.7
    assert s(steps) == s(10 * steps) == 0.7  # held
    if kind != "constant" and steps > 1:
        assert s(0) == 0.1


def test_constant_ignores_start():
    s = AlphaSchedule("constant", 0.2, 0.7, steps=10)
    assert {s(t) for t in range(30)} == {0.7}


def test_descending_schedule():
    s = AlphaSchedule("linear", 1.0, 0.0, steps=11)
    assert [s(t) for t in (0, 5, 10, 11)] == [1.0, 0.5, 0.0, 0.0]


def test_hold_false_is_a_sawtooth_that_reaches_end_every_cycle():
    s = AlphaSchedule("linear", 0.0, 1.0, steps=5, hold=False)
    assert [s(t) for t in range(12)] == [0, 0.25, 0.5, 0.75, 1, 0, 0.25, 0.5, 0.75, 1, 0, 0.25]
    step = AlphaSchedule("step", 0.0, 1.0, steps=4, levels=1, hold=False)
    assert [step(t) for t in range(8)] == [0, 0, 1, 1, 0, 0, 1, 1]
    # A one-step window is at end throughout, with or without hold.
    assert {AlphaSchedule("cosine", 0.0, 1.0, steps=1, hold=False)(t) for t in range(5)} == {1.0}


def test_errors_name_valid_choices():
    with pytest.raises(ValueError, match="valid schedules: constant, cosine, linear, step"):
        AlphaSchedule("exp", 0, 1, 10)
    with pytest.raises(ValueError, match="at least 1 step"):
        AlphaSchedule("linear", 0, 1, 0)
    with pytest.raises(ValueError, match="alpha_levels must be >= 1"):
        AlphaSchedule("step", 0, 1, 10, levels=0)
    assert list_schedules() == BUILTINS  # no other plug-ins installed in the test environment
    assert list_schedules("c*") == ["constant", "cosine"]


def test_a_schedule_is_one_decorated_function_in_any_file(tmp_path, monkeypatch):
    (tmp_path / "my_schedules_mod.py").write_text(
        textwrap.dedent(
            """
            from variants import register_schedule

            @register_schedule("test_square")
            def square(p, levels):
                return p * p
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_schedules_mod", raising=False)
    __import__("my_schedules_mod")
    try:
        assert "test_square" in list_schedules()
        s = AlphaSchedule("test_square", 0.0, 2.0, steps=3)
        assert [s(t) for t in range(4)] == [0.0, 0.5, 2.0, 2.0]
    finally:
        sys.modules.pop("my_schedules_mod", None)

    def other(p, levels):
        return p

    register_schedule("test_dup")(other)
    register_schedule("test_dup")(other)  # the same function again: no warning
    with pytest.warns(UserWarning, match="'test_dup' re-registered"):
        register_schedule("test_dup")(lambda p, levels: p)


def test_entry_point_schedule_is_selectable(tmp_path, monkeypatch):
    """A real installed-distribution layout: ``*.dist-info`` with METADATA + entry_points.txt."""
    install_plugin(
        tmp_path, "ablate-test-sched",
        "[ablate.schedules]\n"
        "test_ep_sqrt = ablate_test_sched_mod:sqrt_shape\n"
        "test_ep_broken = ablate_test_sched_missing:nothing\n",
        {"ablate_test_sched_mod": "def sqrt_shape(p, levels):\n    return p ** 0.5\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(SCHEDULES, "plugins_loaded", False)
    monkeypatch.delitem(sys.modules, "ablate_test_sched_mod", raising=False)
    try:
        with pytest.warns(UserWarning, match="could not load alpha schedule entry point"):
            assert "test_ep_sqrt" in list_schedules()
        assert "test_ep_broken" not in list_schedules()
        assert get_schedule("test_ep_sqrt")(0.25, 4) == 0.5
        assert AlphaSchedule("test_ep_sqrt", 0.0, 1.0, steps=5)(1) == 0.5
    finally:
        sys.modules.pop("ablate_test_sched_mod", None)

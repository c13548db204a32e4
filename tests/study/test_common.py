"""What every part of a study shares: picklable settings and one-line messages."""

from __future__ import annotations

import pickle

from ablate.study.common import RunSettings, one_line


def test_settings_travel_to_spawned_workers():
    settings = RunSettings("sqlite:///o.db", "sqlite:///m.db", devices=("cpu",), max_trials=2)
    assert pickle.loads(pickle.dumps(settings)) == settings
    assert RunSettings("a", "b").invocation != RunSettings("a", "b").invocation


def test_one_line_folds_whitespace_and_shortens():
    assert one_line("a\n  b\tc") == "a b c"
    assert one_line("x" * 20, limit=10) == "xxxxxxx..."

"""The fixed, stratified hold-out split."""

from __future__ import annotations

import numpy as np

from ablate.data.text.raw import SPLIT_SEED, RawText, split_holdout


def test_split_holdout_is_stratified_fixed_and_falls_back_when_it_must():
    labels = np.array([0] * 80 + [1] * 20)
    data = RawText([f"t{i}" for i in range(100)], labels)
    kept, held = split_holdout(data, 0.2)
    assert len(held) == 20 and len(kept) == 80
    assert np.bincount(held.labels).tolist() == [16, 4]
    assert set(kept.texts).isdisjoint(held.texts)
    again_kept, again_held = split_holdout(data, 0.2)
    assert again_held.texts == held.texts  # SPLIT_SEED is fixed
    assert split_holdout(data, 0.2, seed=SPLIT_SEED + 1)[1].texts != held.texts
    assert len(split_holdout(data, 0.0)[1]) == 0
    # One example of a class cannot be stratified: a plain random split instead.
    odd = RawText(["a", "b", "c", "d", "e"], np.array([0, 0, 0, 0, 1]))
    assert len(split_holdout(odd, 0.4)[1]) == 2

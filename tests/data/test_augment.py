"""Batched RandAugment / AutoAugment against torchvision's own transforms.

Three layers of equivalence with torchvision's per-image policies:
1. every action (op + signed magnitude) applied to a sub-batch gives, pixel for pixel, what
   torchvision's single-image op gives (the ops computed here included);
2. torchvision's public ``v2.RandAugment`` / ``v2.AutoAugment`` only ever produce outputs in
   our action tables, and produce all of them (same op list, magnitudes and signs), and our
   draws have the policies' frequencies (uniform ops, fair signs, step probabilities);
3. over many images, output statistics match a per-image torchvision loop.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torchvision.transforms import v2

from ablate.data.images import ImageTrainTransform, resolve_augment
from ablate.data.policies import (
    GEOMETRIC,
    BatchedAutoAugment,
    BatchedRandAugment,
    apply_actions,
)


def _images(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """uint8 (n, c, h, w): half noise over the full range, half smooth and low-contrast
    (so that AutoContrast, Equalize and Solarize all change something)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ramp = (40 + 3 * yy + 2 * xx).clamp(0, 200).float()  # (h, w)
    smooth = ramp + torch.randint(0, 20, (n, c, h, w), generator=g)
    x = noise.clone()
    x[n // 2 :] = smooth[n // 2 :].to(torch.uint8)
    return x


def _torchvision_op(policy, img: torch.Tensor, action) -> torch.Tensor:
    """torchvision's own op dispatch for one image (what v2.RandAugment calls)."""
    tv = policy.tv
    return tv._apply_image_or_video_transform(
        img, action.op, action.magnitude, interpolation=tv.interpolation, fill=tv._fill
    )


# ------------------------------------------------------------- 1. op by op, exactly


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 16, 16), (3, 20, 28)])
@pytest.mark.parametrize("policy_cls", [BatchedRandAugment, BatchedAutoAugment])
def test_every_action_on_a_sub_batch_equals_torchvision_single_image_op(shape, policy_cls):
    policy = policy_cls()
    c, h, w = shape
    actions = policy.tables(h, w).actions
    x = _images(12, c, h, w)
    for i, action in enumerate(actions):
        # The action on most images, two other actions mixed in: grouping must not leak.
        ids = torch.full((12,), i)
        ids[::4] = (i + 1) % len(actions)
        ids[1::4] = (i + 7) % len(actions)
        out = apply_actions(x, ids, policy)
        assert out.shape == x.shape and out.dtype == torch.uint8
        for img, got, a in zip(x, out, ids.tolist(), strict=True):
            expected = _torchvision_op(policy, img, actions[a])
            assert torch.equal(got, expected), f"{actions[a]} on {shape} differs from torchvision"
    assert [a.op in GEOMETRIC for a in actions] == sorted(
        (a.op in GEOMETRIC for a in actions), reverse=True
    )  # geometric actions form one block at the start (one grid_sample per round)


# ---------------------------------------------- 2. op lists, magnitudes, frequencies


def test_randaugment_outputs_and_table_coincide_with_torchvision():
    policy = BatchedRandAugment(num_ops=2, magnitude=9)
    img = _images(2, 3, 32, 32)[1]  # the smooth one
    actions = policy.tables(32, 32).actions
    ops = {a.op for a in actions}
    assert ops == set(v2.RandAugment._AUGMENTATION_SPACE) and len(ops) == 14
    # 14 ops, 9 of them with a signed magnitude: 23 distinct actions at magnitude 9 / 31.
    assert len(actions) == 23
    candidates = apply_actions(
        img.expand(len(actions), -1, -1, -1), torch.arange(len(actions)), policy
    )  # (23, 3, 32, 32): every action applied to the image
    assert len({c.numpy().tobytes() for c in candidates}) == len(actions)  # all distinct

    torchvision_ra = v2.RandAugment(num_ops=1, magnitude=9)
    hits: Counter[int] = Counter()
    with torch.random.fork_rng(devices=[]):
        for seed in range(500):
            torch.manual_seed(seed)
            out = torchvision_ra(img)
            match = [i for i, c in enumerate(candidates) if torch.equal(out, c)]
            assert len(match) == 1, f"seed {seed}: torchvision's output is not one of our actions"
            hits[match[0]] += 1
    assert set(hits) == set(range(len(actions)))  # ... and every action of ours is one of its


def test_autoaugment_outputs_are_compositions_of_our_actions():
    policy = BatchedAutoAugment("CIFAR10")
    img = _images(2, 3, 32, 32)[1]
    tables = policy.tables(32, 32)
    identity = tables.index[next(a for a in tables.actions if a.op == "Identity")]
    # Every (sub-policy, step-1 choice, step-2 choice), choice in {skipped, +, -}.
    first, second = [], []
    for p in range(len(policy.policies)):
        for s1 in (identity, *tables.lookup[p, 0].tolist()):
            for s2 in (identity, *tables.lookup[p, 1].tolist()):
                first.append(s1)
                second.append(s2)
    batch = img.expand(len(first), -1, -1, -1)
    candidates = apply_actions(
        apply_actions(batch, torch.tensor(first), policy), torch.tensor(second), policy
    )
    known = {c.numpy().tobytes() for c in candidates}
    torchvision_aa = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    with torch.random.fork_rng(devices=[]):
        for seed in range(300):
            torch.manual_seed(seed)
            assert torchvision_aa(img).numpy().tobytes() in known, f"seed {seed}"


def test_randaugment_draws_are_uniform_over_ops_with_fair_signs():
    from scipy.stats import binomtest, chisquare

    policy = BatchedRandAugment()
    actions = policy.tables(32, 32).actions
    n = 28_000
    rounds = policy.draw(n, 32, 32, torch.Generator().manual_seed(0))
    assert len(rounds) == 2 and all(r.shape == (n,) and r.dtype == torch.int64 for r in rounds)
    assert not torch.equal(rounds[0], rounds[1])  # the two rounds are independent draws
    drawn = [actions[i] for i in rounds[0].tolist()]
    per_op = Counter(a.op for a in drawn)
    assert set(per_op) == set(policy.ops)
    assert chisquare([per_op[op] for op in policy.ops]).pvalue > 1e-3
    for op in policy.ops:
        signs = Counter(a.magnitude < 0 for a in drawn if a.op == op)
        if len(signs) == 2:  # a signed op: negative half of the time
            assert binomtest(signs[True], per_op[op], 0.5).pvalue > 1e-3
    signed = {a.op for a in actions if a.magnitude < 0}
    assert signed == {
        "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
        "Brightness", "Color", "Contrast", "Sharpness",
    }  # fmt: skip


def test_autoaugment_draws_follow_sub_policy_and_step_probabilities():
    from scipy.stats import binomtest, chisquare

    policy = BatchedAutoAugment("CIFAR10")
    tables = policy.tables(32, 32)
    identity = tables.index[next(a for a in tables.actions if a.op == "Identity")]
    n = 20_000
    generator = torch.Generator().manual_seed(1)
    state = generator.get_state()
    which = torch.randint(len(policy.policies), (n,), generator=generator)  # the first draw
    generator.set_state(state)
    steps = policy.draw(n, 32, 32, generator)
    assert chisquare(torch.bincount(which, minlength=25).tolist()).pvalue > 1e-3
    for step, ids in enumerate(steps):
        for p, sub in enumerate(policy.policies):
            mine = ids[which == p]
            op, prob, _ = sub[step]
            applied = int((mine != identity).sum())
            if prob in (0.0, 1.0):
                assert applied == (len(mine) if prob == 1.0 else 0)
            else:
                assert binomtest(applied, len(mine), prob).pvalue > 1e-4, (p, step, op)


# --------------------------------------------------- 3. distributions over many images


def test_output_statistics_match_a_per_image_torchvision_loop():
    from scipy.stats import ks_2samp

    x = _images(800, 3, 32, 32, seed=5)
    ours = BatchedRandAugment()(x, torch.Generator().manual_seed(0))
    torchvision_ra = v2.RandAugment(num_ops=2, magnitude=9)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        theirs = torch.stack([torchvision_ra(img) for img in x])
    for stat in (
        lambda t: t.float().mean((1, 2, 3)),  # brightness
        lambda t: t.float().std((1, 2, 3)),  # contrast
        lambda t: (t == x).float().mean((1, 2, 3)),  # pixels left unchanged
        lambda t: (t == 0).float().mean((1, 2, 3)),  # zero fill of geometric ops
    ):
        a, b = stat(ours), stat(theirs)
        assert ks_2samp(a.numpy(), b.numpy()).pvalue > 1e-3
    # Changed at all: both leave ~the same share of images untouched (Identity twice, etc.)
    same_ours = (ours == x).flatten(1).all(1).float().mean()
    same_theirs = (theirs == x).flatten(1).all(1).float().mean()
    assert abs(float(same_ours - same_theirs)) < 0.05


# ----------------------------------------------------------- determinism and resume


def test_policy_draws_depend_only_on_the_generator():
    x = _images(64, 3, 32, 32)
    for cls in (BatchedRandAugment, BatchedAutoAugment):
        a = cls()(x, torch.Generator().manual_seed(3))
        b = cls()(x, torch.Generator().manual_seed(3))
        c = cls()(x, torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert cls()(x[:0], torch.Generator()).shape == (0, 3, 32, 32)


def test_recipe_transform_resumes_mid_stream_and_keeps_global_rng():
    plan = resolve_augment("cifar10", "auto", 32)
    x, y = _images(32, 3, 32, 32), torch.arange(32) % 10
    tf = ImageTrainTransform(plan, (0.5,) * 3, (0.25,) * 3, 10, seed=11)
    tf(x, y)
    state = tf.state_dict()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    expected = [tf(x, y) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), before)
    resumed = ImageTrainTransform(plan, (0.5,) * 3, (0.25,) * 3, 10, seed=999)
    resumed.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(expected, [resumed(x, y) for _ in range(2)], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ------------------------------------------------------------------------ on a GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_recipe_on_cuda_never_synchronises_and_matches_cpu():
    plan = resolve_augment("cifar10", "auto", 32)
    x, y = _images(128, 3, 32, 32), torch.arange(128) % 10
    cpu = ImageTrainTransform(plan, (0.5,) * 3, (0.25,) * 3, 10, seed=2)
    gpu = ImageTrainTransform(plan, (0.5,) * 3, (0.25,) * 3, 10, seed=2)
    xc, yc = x.cuda(), y.cuda()
    gpu(xc, yc)  # first call: caches device constants
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any blocking copy or .item() raises
    try:
        outs = [gpu(xc, yc) for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu(x, y)
    for (og, tg), (oc, tc) in zip(outs, [cpu(x, y) for _ in range(3)], strict=True):
        assert og.device.type == "cuda" and tg.shape == (128, 10)
        # Same draws; float rounding on the GPU may move a few pixels (a level, or a
        # nearest-neighbour sample), nothing more.
        same = ((og.cpu() - oc).abs() < 1e-4).float().mean()
        assert same > 0.98 and torch.allclose(tg.cpu(), tc, atol=1e-6)


def test_fused_crop_and_flip_equal_crop_then_flip():
    from ablate.data.images import random_crop, random_crop_flip, random_hflip

    x = _images(64, 3, 12, 10)  # not square: rows and columns must not be mixed up
    for padding, flip in ((3, True), (0, True), (2, False), (0, False)):
        fused = random_crop_flip(x, padding, flip, torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)
        expected = random_crop(x, padding, g)
        if flip:
            expected = random_hflip(expected, g)
        assert torch.equal(fused, expected), (padding, flip)
    mirrored = random_crop_flip(x, 0, True, torch.Generator().manual_seed(0))
    n = sum(torch.equal(m, xi.flip(-1)) for m, xi in zip(mirrored, x, strict=True))
    assert 16 < n < 48  # some mirrored, some not

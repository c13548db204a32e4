"""RandAugment and AutoAugment on whole batches: torchvision's policies, one call per op.

torchvision's ``v2.RandAugment`` / ``v2.AutoAugment`` draw one set of ops per call (a batch
would share them), and looping over images costs two Python-level op calls per image. Here
every random choice of a batch is drawn at once, on the CPU, from the caller's generator;
each image's choice is an *action* (op + signed magnitude), and every action runs once on
the sub-batch that drew it::

    draw (B,) action ids on the CPU -> sort the batch by action (one gather on the device)
        -> geometric actions: one grid_sample for all of them, per-sample matrices
        -> every other action: one call on its sub-batch
        -> cat, undo the sort (one gather)

Op list, magnitude bins, probabilities and sign coins are read from torchvision's policy
classes (``_AUGMENTATION_SPACE``, ``_policies``), and most ops run through the policy's own
dispatcher. Three kinds are computed here, because torchvision's kernels build small
constant tensors from Python lists on every call (on CUDA a blocking host-to-device copy):
ShearX/Y, TranslateX/Y and Rotate (torchvision's inverse affine matrix and grid convention,
one matrix per image; nearest sampling, zero fill), Sharpness (its 3x3 blend, kernel cached
on the device) and AutoContrast (``torch.where`` instead of boolean-mask writes). The tests
check each against torchvision's single-image op, pixel for pixel. Host-to-device copies use
pinned memory and ``non_blocking``: a CUDA batch is augmented without a device sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Action", "BatchedRandAugment", "BatchedAutoAugment", "apply_actions", "to_device"]

# Ops done here rather than through torchvision's dispatcher (see the module docstring).
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_IDENTITY = "Identity"
# torchvision's sharpness kernel: 1 at the 8 neighbours, 5 in the centre, normalised.
_SHARP_EDGE, _SHARP_CENTRE = 1.0 / 13.0, 5.0 / 13.0


@dataclass(frozen=True)
class Action:
    """One op with its final, signed magnitude (what torchvision's dispatcher receives)."""

    op: str
    magnitude: float = 0.0


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small CPU tensor to ``device`` without synchronising a CUDA stream.

    A plain ``.to("cuda")`` of pageable memory waits for the stream to drain; from pinned
    memory with ``non_blocking=True`` it is queued like a kernel. The caching host allocator
    keeps the pinned block alive until the copy has run.
    """
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# --------------------------------------------------------------------------- the ops


def _affine_matrix(action: Action, height: int, width: int) -> list[float]:
    """torchvision's inverse affine matrix (6 floats) for a geometric action.

    Same arguments as the policy's ``F.affine`` / ``F.rotate`` calls: shears about the
    top-left corner (``center=[0, 0]``), translations by whole pixels, rotations about the
    centre with the angle negated as ``rotate_image`` does.
    """
    from torchvision.transforms.functional import _get_inverse_affine_matrix

    m, op = action.magnitude, action.op
    if op not in GEOMETRIC:
        raise ValueError(f"{op} is not a geometric op; geometric ops: {', '.join(GEOMETRIC)}")
    shear_deg = math.degrees(math.atan(m)) if op.startswith("Shear") else 0.0
    center = [-0.5 * width, -0.5 * height] if op.startswith("Shear") else [0.0, 0.0]
    shear = [shear_deg, 0.0] if op == "ShearX" else [0.0, shear_deg]
    shift = float(int(m))
    translate = {"TranslateX": [shift, 0.0], "TranslateY": [0.0, shift]}.get(op, [0.0, 0.0])
    angle = -(m % 360) if op == "Rotate" else 0.0
    return _get_inverse_affine_matrix(center, angle, translate, 1.0, shear)


def _affine_batch(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """uint8 (n, C, H, W), one inverse matrix per image (n, 2, 3) -> uint8 (n, C, H, W).

    torchvision's grid convention: output pixel centres at ``(j - (W-1)/2, i - (H-1)/2)``,
    mapped by the matrix, then divided by ``(W/2, H/2)`` for ``grid_sample``; the division
    is folded into ``theta`` by the caller (on the CPU, in float32, as torchvision does).
    """
    n, _, h, w = x.shape
    dev = x.device
    base = torch.empty(1, h, w, 3, dtype=torch.float32, device=dev)  # (1, H, W, 3)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=dev))
    base[..., 1].copy_(
        torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=dev).unsqueeze_(-1)
    )
    base[..., 2].fill_(1.0)
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(theta)  # (n, H*W, 2)
    out = torch.nn.functional.grid_sample(
        x.to(torch.float32), grid.view(n, h, w, 2), mode="nearest", padding_mode="zeros",
        align_corners=False,
    )
    return out.round_().to(x.dtype)


def _sharpness(x: torch.Tensor, factor: float, kernel: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_sharpness on uint8 (n, C, H, W); ``kernel`` (C, 1, 3, 3) cached."""
    if x.shape[-1] <= 2 or x.shape[-2] <= 2:
        return x
    out = x.to(torch.float32, copy=True)
    blurred = torch.nn.functional.conv2d(out, kernel, groups=x.shape[1]).round_()
    inner = out[..., 1:-1, 1:-1]  # the border keeps its pixels, as in PIL
    inner.add_(blurred.sub_(inner), alpha=1.0 - factor)
    return out.clamp_(0, 255).to(x.dtype)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """torchvision's autocontrast on uint8 (n, C, H, W): stretch each channel to 0..255."""
    f = x.to(torch.float32)
    low = f.amin(dim=(-2, -1), keepdim=True)  # (n, C, 1, 1)
    high = f.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    scale = (high - low).mul_(1.0 / 255.0)
    low = torch.where(flat, 0.0, low)
    scale = torch.where(flat, 1.0, scale)
    return f.sub_(low).div_(scale).clamp_(0, 255).to(x.dtype)


# ------------------------------------------------------------------------ the batches


class _Tables:
    """Per image size: the action list, the draw -> action lookup, geometric matrices.

    ``pairs``: the policy's (positive, negative) action of every op it draws from, nested
    as its draws index them; ``lookup`` holds their action ids, one more axis of 2.
    """

    def __init__(self, pairs: list, height: int, width: int) -> None:
        flat = [a for pair in _leaves(pairs) for a in pair]
        # Distinct actions (an unsigned op's two signs are one), geometric ones first.
        unique = list(dict.fromkeys([Action(_IDENTITY), *flat]))
        self.actions = sorted(unique, key=lambda a: a.op not in GEOMETRIC)  # stable
        self.index = {a: i for i, a in enumerate(self.actions)}
        self.lookup = torch.tensor(_ids(pairs, self.index))
        theta = torch.zeros(len(self.actions), 2, 3, dtype=torch.float64)
        for i, a in enumerate(self.actions):
            if a.op in GEOMETRIC:
                theta[i] = torch.tensor(_affine_matrix(a, height, width)).view(2, 3)
        # torchvision: theta (float32) transposed and divided by (W/2, H/2): (A, 3, 2)
        half = torch.tensor([0.5 * width, 0.5 * height], dtype=torch.float32)
        self.theta = theta.to(torch.float32).transpose(1, 2).div(half).contiguous()


class _BatchedPolicy:
    """Shared machinery: action tables per image size, cached device constants."""

    def __init__(self, tv_policy: Any) -> None:
        for attr in ("_AUGMENTATION_SPACE", "_apply_image_or_video_transform"):
            if not hasattr(tv_policy, attr):
                import torchvision

                raise RuntimeError(f"torchvision {torchvision.__version__}: "
                                   f"{type(tv_policy).__name__} has no {attr}; batched "
                                   "augmentation needs torchvision >= 0.19")
        self.tv = tv_policy
        self._tables: dict[tuple[int, int], _Tables] = {}
        self._kernels: dict[tuple[str, int, int], torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 (B, C, H, W) -> uint8 (B, C, H, W), on ``x``'s device."""
        if x.shape[0] == 0:
            return x
        for ids in self.draw(x.shape[0], x.shape[-2], x.shape[-1], generator):
            x = apply_actions(x, ids, self)
        return x

    def _pairs(self, height: int, width: int) -> list:
        raise NotImplementedError

    def tables(self, height: int, width: int) -> _Tables:
        """Actions, lookup and matrices for H x W images (built once per size)."""
        if (height, width) not in self._tables:
            self._tables[height, width] = _Tables(self._pairs(height, width), height, width)
        return self._tables[height, width]

    def _kernel(self, device: torch.device, channels: int) -> torch.Tensor:
        key = (device.type, -1 if device.index is None else device.index, channels)
        if key not in self._kernels:
            k = torch.full((3, 3), _SHARP_EDGE, dtype=torch.float32)
            k[1, 1] = _SHARP_CENTRE
            self._kernels[key] = to_device(k.expand(channels, 1, 3, 3).contiguous(), device)
        return self._kernels[key]

    def _signed(
        self, op: str, bins: int, index: int | None, height: int, width: int
    ) -> tuple[Action, Action]:
        """(positive, negative) action of ``op`` at magnitude bin ``index`` of ``bins``
        (torchvision's tables, scaled to H x W); equal when the op is unsigned."""
        magnitudes_fn, signed = self.tv._AUGMENTATION_SPACE[op]
        mags = magnitudes_fn(bins, height, width)
        m = 0.0 if mags is None else float(mags[index])
        return Action(op, m), Action(op, -m if signed and mags is not None else m)

    def apply(self, x: torch.Tensor, action: Action) -> torch.Tensor:
        """One non-geometric action on a uint8 sub-batch (n, C, H, W)."""
        if action.op == _IDENTITY:
            return x
        if action.op == "Sharpness":
            return _sharpness(x, 1.0 + action.magnitude, self._kernel(x.device, x.shape[1]))
        if action.op == "AutoContrast":
            return _autocontrast(x)
        return self.tv._apply_image_or_video_transform(
            x, action.op, action.magnitude, interpolation=self.tv.interpolation, fill=self.tv._fill
        )


def apply_actions(x: torch.Tensor, ids: torch.Tensor, policy: _BatchedPolicy) -> torch.Tensor:
    """Apply action ``ids[i]`` (int64 (B,) on the CPU, indices into
    ``policy.tables(H, W).actions``) to image ``i`` of the uint8 batch ``x`` (B, C, H, W),
    grouped by action."""
    b, _, h, w = x.shape
    tables = policy.tables(h, w)
    n_actions = len(tables.actions)
    order = ids.argsort(stable=True)  # (B,) batch sorted by action
    counts = torch.bincount(ids, minlength=n_actions).tolist()  # CPU: no device sync
    xs = x.index_select(0, to_device(order, x.device))  # (B, C, H, W) sorted
    pieces = []
    # Geometric actions come first in every table: one grid_sample for all of them.
    n_geo = sum(c for a, c in zip(tables.actions, counts) if a.op in GEOMETRIC)
    if n_geo:
        theta = tables.theta[ids[order[:n_geo]]]  # (n_geo, 3, 2)
        pieces.append(_affine_batch(xs[:n_geo], to_device(theta, x.device)))
    start = n_geo
    for action, count in zip(tables.actions, counts):
        if count == 0 or action.op in GEOMETRIC:
            continue
        pieces.append(policy.apply(xs[start : start + count], action))
        start += count
    out = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
    return out.index_select(0, to_device(order.argsort(), x.device))  # original order


def _leaves(pairs: list) -> list[tuple[Action, Action]]:
    return [leaf for p in pairs for leaf in (_leaves(p) if isinstance(p, list) else [p])]


def _ids(pairs: list, index: dict[Action, int]) -> list:
    return [_ids(p, index) if isinstance(p, list) else [index[a] for a in p] for p in pairs]


class BatchedRandAugment(_BatchedPolicy):
    """RandAugment(num_ops, magnitude) with an independent draw per image, batched.

    Per round (``num_ops`` of them; 2 in the CCT recipe) every image draws one of
    torchvision's 14 ops uniformly and, for ops with a signed magnitude, a fair sign coin;
    the magnitude is bin ``magnitude`` (9 in the recipe) of ``num_magnitude_bins``
    (torchvision's tables, scaled to H x W).
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31):
        from torchvision.transforms import v2

        super().__init__(v2.RandAugment(num_ops=num_ops, magnitude=magnitude,
                                        num_magnitude_bins=num_magnitude_bins))
        self.num_ops = num_ops
        self.ops = list(self.tv._AUGMENTATION_SPACE)  # torchvision's order and op list

    def _pairs(self, height: int, width: int) -> list:
        bins, magnitude = self.tv.num_magnitude_bins, self.tv.magnitude
        return [self._signed(op, bins, magnitude, height, width) for op in self.ops]  # (n_ops, 2)

    def draw(self, batch: int, height: int, width: int, generator: torch.Generator) -> list:
        """Action ids (B,) per round, int64 on the CPU."""
        lookup = self.tables(height, width).lookup  # (n_ops, 2)
        rounds = []
        for _ in range(self.num_ops):
            op = torch.randint(len(self.ops), (batch,), generator=generator)
            negative = (torch.rand(batch, generator=generator) <= 0.5).long()
            rounds.append(lookup[op, negative])
        return rounds


class BatchedAutoAugment(_BatchedPolicy):
    """AutoAugment with torchvision's learned ``policy`` ("CIFAR10", "SVHN" or "IMAGENET"),
    an independent draw per image: every image draws one of the policy's sub-policies
    uniformly; each of its two steps is applied with the step's probability, with a fair sign
    coin for signed magnitudes."""

    def __init__(self, policy: str = "CIFAR10"):
        from torchvision.transforms import v2

        super().__init__(v2.AutoAugment(v2.AutoAugmentPolicy[policy]))
        self.policies = list(self.tv._policies)  # [((op, p, bin), (op, p, bin)), ...]
        self.steps = len(self.policies[0])
        self.probability = torch.tensor(
            [[p for _, p, _ in sub] for sub in self.policies], dtype=torch.float32
        )  # (n_policies, steps)

    def _pairs(self, height: int, width: int) -> list:
        # (n_policies, steps, 2); torchvision's AutoAugment has 10 magnitude bins
        return [
            [self._signed(op, 10, bin_, height, width) for op, _, bin_ in sub]
            for sub in self.policies
        ]

    def draw(self, batch: int, height: int, width: int, generator: torch.Generator) -> list:
        """Action ids (B,) per step, int64 on the CPU (Identity where a step is skipped)."""
        tables = self.tables(height, width)
        lookup, identity = tables.lookup, tables.index[Action(_IDENTITY)]
        which = torch.randint(len(self.policies), (batch,), generator=generator)
        rounds = []
        for step in range(self.steps):
            applied = torch.rand(batch, generator=generator) <= self.probability[which, step]
            negative = (torch.rand(batch, generator=generator) <= 0.5).long()
            rounds.append(torch.where(applied, lookup[which, step, negative], identity))
        return rounds

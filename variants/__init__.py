"""Registry of pluggable attention functions (pure torch; no harness imports).

Add a variant with one decorator::

    from variants import register_attention

    @register_attention("my_variant", params={"alpha": 1.0})
    def my_variant(q, k, v, *, mask=None, bias=None, dropout_p=0.0, scale=None, alpha=1.0):
        ...  # (B, H, N, D) in, (B, H, N, Dv) out; see variants/_base.py

or from another package through the ``ablate.variants`` entry-point group, or from a file
with ``ablate run --variant-file my_variants.py``. An alpha schedule (``--alpha-schedule``)
plugs in the same way: ``@register_schedule("name")`` or the ``ablate.schedules`` group.
"""

# Importing the built-in modules registers them.
from variants import (  # noqa: F401
    laser,
    laser_remix,
    softmax,
    softmax_v,
    softmax_v_scaled,
    value_rmsnorm,
)
from variants._base import AttentionFn, masked_token_softmax, sdpa_mask
from variants._learned import LearnedAlpha
from variants._registry import (
    ENTRY_POINT_GROUP,
    SCHEDULES,
    AlphaSchedule,
    AttentionEntry,
    Registry,
    VariantSpec,
    get_attention,
    get_schedule,
    list_attention,
    list_schedules,
    load_variant_file,
    load_variant_file_once,
    parse_variant,
    register_attention,
    register_schedule,
)

__all__ = [
    "AttentionFn", "LearnedAlpha", "AttentionEntry", "Registry", "VariantSpec",
    "register_attention", "get_attention", "list_attention", "load_variant_file",
    "load_variant_file_once",
    "parse_variant", "masked_token_softmax", "sdpa_mask", "ENTRY_POINT_GROUP",
    "AlphaSchedule", "SCHEDULES", "register_schedule", "get_schedule", "list_schedules",
]

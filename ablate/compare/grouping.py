"""Which runs may be pooled into one group, and what a group lost.

A group's runs are repeats of one experiment that differ only by seed. Pooling runs that
differ in anything else (learning rate, epochs, data set) would mix two experiments and
make the spread meaningless, so :func:`check_pooling` refuses it unless the user names the
keys to pool over (``--pool-over lr,epochs``).

A run's *config* is its params (the effective configuration: every config field that
applied, with its resolved value, ``variant`` and ``variant.<param>``), minus run-local keys
(:data:`RUN_LOCAL_KEYS`: where the run was stored or shown, not what was trained) and
derived facts (:data:`DERIVED_KEYS`, ``data.*``, ``init.*``: computed from the config and
the data; they vary only when a config key does). Tags (``optuna.*``, ``mlflow.*``, ...) are
never config. By default the groups are every config key that varies, seed excepted: the
finest grouping that never pools different experiments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ablate.compare.select import RunRecord, join_names
from ablate.config import config_fields
from ablate.exceptions import ConfigError

__all__ = ["MISSING_VALUE", "ALL_RUNS", "RUN_LOCAL_KEYS", "LOST_KINDS", "parse_keys", "lookup",
           "config_view", "varying_keys", "default_group_by", "following_keys", "confounders",
           "check_pooling", "assign_groups", "lost_counts"]  # fmt: skip

MISSING_VALUE = "(none)"
ALL_RUNS = "all runs"  # the one group's label when nothing but the seed varies
LOST_KINDS = ("failed", "pruned", "running")
# Config fields that say where and how a run was executed or stored, never what was trained:
RUN_LOCAL_KEYS = frozenset({
    "device", "quiet", "data_dir", "download", "checkpoint_dir", "tracking_uri", "experiment",
    "run_name", "variant_file", "checkpoint_upload_every", "system_metrics",
    "system_metrics_interval", "compile",  # torch.compile fuses kernels: the same model
})  # fmt: skip
DERIVED_KEYS = frozenset({"n_params", "n_trainable", "steps_per_epoch"})
DERIVED_PREFIXES = ("data.", "init.")
POOLED = "seed"  # repeats of one experiment differ by seed: always pooled
VARIANT_PARAM = "variant."  # a variant's parameters: params variant.<name>
# What a variant is: keys that may follow ``variant`` between groups without confounding
# it (softmax has no alpha schedule, softmax_v anneals alpha: one treatment).
VARIANT_FAMILY = ("variant", "variant.", "alpha_", "apply_to", "best_from")
_FIELD_ORDER = {f.name: i for i, f in enumerate(config_fields())}


def parse_keys(keys: str | Sequence[str] | None, option: str) -> tuple[str, ...]:
    """``"a, b"`` or ``["a", "b"]`` -> ``("a", "b")``; None or empty -> ``()``."""
    if keys is None:
        return ()
    parts = keys.split(",") if isinstance(keys, str) else [str(k) for k in keys]
    out = tuple(dict.fromkeys(k.strip() for k in parts if k.strip()))
    if isinstance(keys, str) and keys.strip() and not out:
        raise ConfigError(f"{option}: give comma-separated names, e.g. variant,apply_to")
    return out


def lookup(key: str, run: RunRecord) -> str | None:
    """A group-by value: params first (the config), then tags; ``params.x`` / ``tags.x``
    force one side."""
    if key.startswith("tags."):
        return run.tags.get(key[len("tags.") :])
    if key.startswith("params."):
        return run.params.get(key[len("params.") :])
    return run.params.get(key, run.tags.get(key))


def _is_variant(key: str) -> bool:
    return key.removeprefix("params.") == "variant"


def group_value(key: str, run: RunRecord, keys: Sequence[str] = ()) -> str:
    """A group-by value as a label shows it: ``variant`` with its parameters, as the user
    wrote it (``softmax_v:alpha=learned,alpha_shape=head``), since two groups of one variant
    differ by them; a parameter that is itself one of the group-by ``keys`` (``--x alpha``)
    is left to its own key."""
    value = lookup(key, run) or MISSING_VALUE
    if _is_variant(key) and value != MISSING_VALUE:
        params = sorted((k[len(VARIANT_PARAM):], v) for k, v in run.params.items()
                        if k.startswith(VARIANT_PARAM) and not _covered(k, keys))  # fmt: skip
        value += ":" + ",".join(f"{k}={v}" for k, v in params) if params else ""
    return value


def _label(run: RunRecord, keys: Sequence[str]) -> str:
    return "/".join(group_value(k, run, keys) for k in keys) if keys else ALL_RUNS


def _covered(key: str, keys: Sequence[str]) -> bool:
    return key in keys or f"params.{key}" in keys


def config_view(run: RunRecord) -> dict[str, str]:
    """The run's config keys and values (params), seed excluded."""
    return {
        k: v for k, v in run.params.items()
        if not (k in RUN_LOCAL_KEYS or k in DERIVED_KEYS or k.startswith(DERIVED_PREFIXES)
                or k == POOLED)
    }  # fmt: skip


def _order(keys) -> list[str]:
    return sorted(keys, key=lambda k: (_FIELD_ORDER.get(k, len(_FIELD_ORDER)), k))


def varying_keys(views: Sequence[Mapping[str, str]]) -> dict[str, list[str]]:
    """Config keys with more than one value across ``views`` -> their sorted values (a key
    some runs lack counts as the value ``(none)``), in config-field order."""
    values = {k: sorted({v.get(k, MISSING_VALUE) for v in views}) for v in views for k in v}
    return {k: values[k] for k in _order(k for k in values if len(values[k]) > 1)}


def _configured(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """Runs with a recorded config (a run that failed before logging any has none)."""
    return [r for r in runs if config_view(r)]


def default_group_by(runs: Sequence[RunRecord], pool_over: Sequence[str] = ()) -> tuple[str, ...]:
    """The varying config keys (seed and ``pool_over`` excepted) that split some group:
    ``alpha_schedule`` that follows ``variant`` adds no split and is left out."""
    views = [config_view(r) for r in _configured(runs)]
    for view, run in zip(views, _configured(runs)):  # a variant with its parameters, one key
        if "variant" in view:
            view["variant"] = group_value("variant", run)
        for key in [k for k in view if k.startswith(VARIANT_PARAM)]:
            del view[key]
    keys: list[str] = []
    for key in varying_keys(views):
        if _covered(key, pool_over):
            continue
        before = {tuple(v.get(k, MISSING_VALUE) for k in keys) for v in views}
        after = {tuple(v.get(k, MISSING_VALUE) for k in [*keys, key]) for v in views}
        if len(after) > len(before):
            keys.append(key)
    return tuple(keys)


def following_keys(
    runs: Sequence[RunRecord], group_by: Sequence[str], pool_over: Sequence[str] = ()
) -> tuple[str, ...]:
    """Config keys that differ between groups without being group-by keys (a variant's
    parameters are in its label already)."""
    varying = varying_keys([config_view(r) for r in _configured(runs)])
    labelled = any(_is_variant(k) for k in group_by)
    return tuple(k for k in varying if not (_covered(k, group_by) or _covered(k, pool_over)
                                            or labelled and k.startswith(VARIANT_PARAM)))


def confounders(following: Sequence[str], group_by: Sequence[str]) -> tuple[str, ...]:
    """The following keys that are not part of the compared treatment: groups that also
    differ in lr or epochs measure the combination, so their differences get no star. Keys
    of the variant's family follow a ``variant`` grouping without confounding it."""
    by_variant = any(k.removeprefix("params.").startswith(VARIANT_FAMILY) for k in group_by)
    return tuple(k for k in following if not (by_variant and k.startswith(VARIANT_FAMILY)))


def _check_keys_exist(runs: Sequence[RunRecord], keys: Sequence[str], option: str) -> None:
    """A key that no run knows is a typo, not a group called "(none)"."""
    for key in keys:
        if all(lookup(key, r) is None for r in runs):
            available = join_names(k for r in runs for k in config_view(r))
            raise ConfigError(f"{option}: no selected run has a param or tag {key!r}; config "
                              f"keys: {available}")  # fmt: skip


def _shown(values: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


def check_pooling(
    runs: Sequence[RunRecord], group_by: Sequence[str], pool_over: Sequence[str] = ()
) -> None:
    """Refuse groups whose runs differ in a config key other than the seed and ``pool_over``:
    one line naming every such key, its values, and the two ways out."""
    members: dict[str, list[RunRecord]] = {}
    for run in _configured(runs):
        members.setdefault(_label(run, group_by), []).append(run)
    offending: dict[str, set[str]] = {}
    example = ""
    for label, group in members.items():
        for key, values in varying_keys([config_view(r) for r in group]).items():
            if not (_covered(key, group_by) or _covered(key, pool_over)):
                offending.setdefault(key, set()).update(values)
                example = example or label
    if not offending:
        return
    order = _order(offending)
    listed = "; ".join(f"{k} ({_shown(sorted(offending[k]))})" for k in order)
    where = f" (e.g. group {example!r})" if group_by else ""
    raise ConfigError(f"runs in one group differ in {listed}{where}; group by them "
                      f"(--group-by {','.join([*group_by, *order])}) or pool over them "
                      f"(--pool-over {','.join(order)})")  # fmt: skip


def assign_groups(
    runs: Sequence[RunRecord], group_by: Sequence[str] | None, pool_over: Sequence[str] = ()
) -> tuple[str, ...]:
    """Validate the grouping (None: the default) and set ``group`` / ``group_values`` of
    every run in place, the lost ones included; returns the group-by keys used (empty:
    one group)."""
    _check_keys_exist(runs, pool_over, "--pool-over")
    if group_by is None:
        keys = default_group_by(runs, pool_over)
    else:
        keys = tuple(group_by)
        _check_keys_exist(runs, keys, "--group-by")
        both = sorted(set(keys) & set(pool_over))
        if both:
            raise ConfigError(f"{', '.join(both)}: cannot both group by and pool over a key; drop "
                              "it from --group-by or --pool-over")  # fmt: skip
    check_pooling(runs, keys, pool_over)
    for run in runs:
        run.group_values = {k: group_value(k, run, keys) for k in keys}
        run.group = _label(run, keys)
    return keys


def lost_counts(runs: Sequence[RunRecord]) -> dict[str, dict[str, int]]:
    """group -> {failed, pruned, running}: runs left out (FAILED, KILLED, pruned, RUNNING)
    and runs without a number (diverged, NaN end point: failed). Dropping them silently
    would hide that a variant diverges more often, and compare the survivors only."""
    counts: dict[str, dict[str, int]] = {}
    for run in runs:
        kind = "pruned" if run.pruned else "running" if run.status == "RUNNING" else "failed"
        counts.setdefault(run.group, dict.fromkeys(LOST_KINDS, 0))[kind] += 1
    return counts

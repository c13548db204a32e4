"""Which runs may be pooled into one group: explicit grouping for `ablate compare`.

A group's runs are treated as repeats of one experiment that differ only by seed. Pooling
runs that differ in anything else (learning rate, epochs, data set) would mix two
experiments and make the spread meaningless, so :func:`check_pooling` refuses it unless
the user names the keys to pool over (``--pool-over lr,epochs``).

A run's *config* is its params (every ``RunConfig`` field) plus the config tags that the
trainer copies into tags, minus:

* run-local keys (:data:`RUN_LOCAL_KEYS`): where the run was stored or displayed, not what
  was trained;
* derived keys (:data:`DERIVED_KEYS`, ``data.*``, ``init.*``): facts computed from the config
  and the data (set sizes, parameter counts, the resolved checkpoint); they vary only when a
  config key varies, which is caught already, and some hold machine-specific paths.

The default grouping is every config key that varies across the selected runs, seed
excepted: the finest grouping that never pools different experiments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ablate.compare.select import RunRecord, join_names
from ablate.config import config_fields
from ablate.exceptions import ConfigError

__all__ = [
    "MISSING_VALUE",
    "ALL_RUNS",
    "RUN_LOCAL_KEYS",
    "DERIVED_KEYS",
    "CONFIG_TAGS",
    "parse_keys",
    "lookup",
    "config_view",
    "varying_keys",
    "default_group_by",
    "following_keys",
    "check_pooling",
    "assign_groups",
]

MISSING_VALUE = "(none)"
ALL_RUNS = "all runs"  # the one group's label when nothing but the seed varies

# Keys that say where and how a run was executed or stored, never what was trained, so two
# runs that differ only in them are repeats of the same experiment:
RUN_LOCAL_KEYS = frozenset(
    {
        "device",  # which machine ran it (results may differ in the last digits, not design)
        "quiet",  # progress bars
        "data_dir",  # where the same data set lives on that machine
        "download",  # whether missing files were fetched
        "checkpoint_dir",  # where checkpoints were written
        "tracking_uri",  # which MLflow store it was logged to
        "experiment",  # which MLflow experiment it was logged under
        "run_name",  # display name
        "compile",  # torch.compile fuses kernels; it computes the same model
        "variant_file",  # a path to the file defining the variant; the variant name is kept
    }
)
# Computed from the config (and the data), logged for the record; see the module docstring.
DERIVED_KEYS = frozenset({"n_params", "n_trainable", "steps_per_epoch"})
DERIVED_PREFIXES = ("data.", "init.")
# Config fields the trainer also copies into tags (ablate.tracking.RUN_TAGS); runs logged
# without params (or by other tools) are still grouped by these.
CONFIG_TAGS = ("variant", "apply_to", "model", "dataset", "task", "alpha_schedule")
POOLED = "seed"  # repeats of one experiment differ by seed: always pooled
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


def lookup(key: str, tags: Mapping[str, str], params: Mapping[str, str]) -> str | None:
    """Group-by value: tags first, then params; ``tags.x`` / ``params.x`` force one side."""
    if key.startswith("tags."):
        return tags.get(key[len("tags.") :])
    if key.startswith("params."):
        return params.get(key[len("params.") :])
    if key in tags:
        return tags[key]
    return params.get(key)


def _covered(key: str, keys: Sequence[str]) -> bool:
    return key in keys or f"params.{key}" in keys or f"tags.{key}" in keys


def _is_config_key(key: str) -> bool:
    return not (
        key in RUN_LOCAL_KEYS
        or key in DERIVED_KEYS
        or key.startswith(DERIVED_PREFIXES)
        or key == POOLED
    )


def config_view(run: RunRecord) -> dict[str, str]:
    """The run's config keys and values (params over the config tags), seed excluded."""
    view = {k: run.tags[k] for k in CONFIG_TAGS if k in run.tags}
    view.update(run.params)
    return {k: v for k, v in view.items() if _is_config_key(k)}


def _values(views: Sequence[Mapping[str, str]], key: str) -> list[str]:
    return sorted({v.get(key, MISSING_VALUE) for v in views})


def varying_keys(views: Sequence[Mapping[str, str]]) -> dict[str, list[str]]:
    """Config keys with more than one value across ``views`` -> their sorted values
    (a key some runs lack counts as the value ``(none)``), in config-field order."""
    keys = {k for v in views for k in v}
    out = {k: _values(views, k) for k in keys}
    varying = [k for k, values in out.items() if len(values) > 1]
    varying.sort(key=lambda k: (_FIELD_ORDER.get(k, len(_FIELD_ORDER)), k))
    return {k: out[k] for k in varying}


def default_group_by(runs: Sequence[RunRecord], pool_over: Sequence[str] = ()) -> tuple[str, ...]:
    """The config keys that vary across ``runs`` (seed and ``pool_over`` excepted), minus
    those that add no split: ``alpha_schedule`` is dropped when it follows ``variant``
    (every softmax run has ``none``), so groups get short labels and the same runs."""
    views = [config_view(r) for r in runs]
    keys: list[str] = []
    for key in varying_keys(views):
        if _covered(key, pool_over):
            continue
        before = {tuple(v.get(k, MISSING_VALUE) for k in keys) for v in views}
        after = {tuple(v.get(k, MISSING_VALUE) for k in [*keys, key]) for v in views}
        if len(after) > len(before):  # the key splits some group: keep it
            keys.append(key)
    return tuple(keys)


def following_keys(
    runs: Sequence[RunRecord], group_by: Sequence[str], pool_over: Sequence[str] = ()
) -> tuple[str, ...]:
    """Config keys that differ between groups without being group-by keys: they follow
    the groups (``alpha_schedule`` with ``variant``) and are reported next to them."""
    varying = varying_keys([config_view(r) for r in runs])
    return tuple(k for k in varying if not (_covered(k, group_by) or _covered(k, pool_over)))


def _check_keys_exist(runs: Sequence[RunRecord], keys: Sequence[str], option: str) -> None:
    """A key that no run knows is a typo, not a group called "(none)"."""
    for key in keys:
        if all(lookup(key, r.tags, r.params) is None for r in runs):
            available = {k for r in runs for k in r.tags if not k.startswith("mlflow.")}
            available |= {k for r in runs for k in r.params}
            raise ConfigError(
                f"{option}: no selected run has a tag or param {key!r}; "
                f"available: {join_names(available)}"
            )


def _shown(values: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


def check_pooling(
    runs: Sequence[RunRecord], group_by: Sequence[str], pool_over: Sequence[str] = ()
) -> None:
    """Refuse groups whose runs differ in a config key other than the seed.

    Args:
        runs: the selected runs.
        group_by: the keys that define a group.
        pool_over: keys the user explicitly allows to vary inside a group.

    Raises:
        ConfigError: one line naming every offending key, its values inside the groups,
            and the two ways out (group by it, or pool over it).
    """
    labels: dict[tuple[str, ...], list[RunRecord]] = {}
    for run in runs:
        key = tuple(lookup(k, run.tags, run.params) or MISSING_VALUE for k in group_by)
        labels.setdefault(key, []).append(run)
    offending: dict[str, set[str]] = {}
    example = ""
    for members in labels.values():
        varying = varying_keys([config_view(r) for r in members])
        for key, values in varying.items():
            if _covered(key, group_by) or _covered(key, pool_over):
                continue
            offending.setdefault(key, set()).update(values)
            example = example or "/".join(
                lookup(k, members[0].tags, members[0].params) or MISSING_VALUE for k in group_by
            )
    if not offending:
        return
    order = sorted(offending, key=lambda k: (_FIELD_ORDER.get(k, len(_FIELD_ORDER)), k))
    listed = "; ".join(f"{k} ({_shown(sorted(offending[k]))})" for k in order)
    where = f" (e.g. group {example!r})" if group_by else ""
    suggestion = ",".join([*group_by, *order])
    raise ConfigError(
        f"runs in one group differ in {listed}{where}; group by them "
        f"(--group-by {suggestion}) or pool over them (--pool-over {','.join(order)})"
    )


def assign_groups(
    runs: Sequence[RunRecord],
    group_by: Sequence[str] | None,
    pool_over: Sequence[str] = (),
) -> tuple[str, ...]:
    """Validate the grouping, then set ``run.group`` and ``run.group_values`` in place.

    Args:
        runs: the selected runs.
        group_by: keys defining a group; None for the default (every varying config key).
        pool_over: keys allowed to vary inside a group.

    Returns:
        The group-by keys used (empty when nothing but the seed varies: one group).
    """
    _check_keys_exist(runs, pool_over, "--pool-over")
    if group_by is None:
        keys = default_group_by(runs, pool_over)
    else:
        keys = tuple(group_by)
        _check_keys_exist(runs, keys, "--group-by")
        both = sorted(set(keys) & set(pool_over))
        if both:
            raise ConfigError(
                f"{', '.join(both)}: cannot both group by and pool over a key; drop it from "
                "--group-by or --pool-over"
            )
    check_pooling(runs, keys, pool_over)
    for run in runs:
        values = {k: lookup(k, run.tags, run.params) or MISSING_VALUE for k in keys}
        run.group_values = values
        run.group = "/".join(values[k] for k in keys) if keys else ALL_RUNS
    return keys

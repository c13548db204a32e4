"""Fine-tuning: start from pretrained weights, then freeze, decay and adapt them.

:func:`ablate.trial.run.resolve` reads ``--init-from`` once (:func:`load_source`: an
official CCT ``.pth``, one of our checkpoints, ``runs:/RUN_ID[/PATH]`` or a run id, a logged
model ``models:/NAME/VERSION``, ``@ALIAS`` or ``models:/<model_id>``; always without
executing pickled code). ``ablate finetune`` continues what the source computed
(:meth:`SourceWeights.continuation`). The trial runner then calls two hooks:

1. :func:`prepare_model` on the freshly built model: loads the weights (head replaced when
   the class count differs, positional embedding interpolated when the resolution differs),
   says whether the run starts computing what the source computed, freezes, adds LoRA
   adapters; returns what it did, logged as ``init.*`` tags;
2. :func:`lr_scale_fn` for layer-wise learning-rate decay.

The weights with adapters merged (official key names) are the run's logged models
(:mod:`ablate.tracking.models`).

Stages, as freezing and layer decay see them (L encoder blocks; :mod:`.stages`): the
embedding stage (depth 0: ``tokenizer.*``, ``embedder.*``, ``classifier.positional_emb`` /
``class_emb``), block i (depth i + 1), the head (depth L + 1: ``classifier.norm``,
``attention_pool``, ``fc``). ``--freeze tokenizer`` freezes the embedding stage, ``--freeze
encoder`` all but ``attention_pool`` and ``fc`` (a linear probe); with LoRA only the
adapters and that head train. Layer decay multiplies the learning rate of depth d by
``layer_decay ** (L + 1 - d)``.
"""

from __future__ import annotations

from ablate.finetune.hooks import prepare_model
from ablate.finetune.sources import (
    DEFAULT_RUN_ARTIFACT,
    SourceSpec,
    SourceWeights,
    load_source,
    parse_source,
)
from ablate.finetune.stages import HEAD_PREFIXES, freeze_parameters, lr_scale_fn, parameter_depth

__all__ = [
    "SourceSpec", "SourceWeights", "parse_source", "load_source", "prepare_model", "lr_scale_fn",
    "freeze_parameters", "parameter_depth", "HEAD_PREFIXES", "DEFAULT_RUN_ARTIFACT",
]

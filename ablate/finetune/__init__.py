"""Fine-tuning: start from pretrained weights, freeze / decay / adapt, export merged weights.

:func:`ablate.trial.resolve.resolve` reads ``--init-from`` once (:func:`load_source`; the
weights' channel count converts the data, e.g. the 1-channel digits become 3-channel for an
RGB checkpoint). The trial runner then calls three hooks when fine-tuning is asked for
(``--init-from``, ``--freeze``, ``--layer-decay`` or ``--lora-rank``):

1. :func:`prepare_model` on the freshly built model: loads ``--init-from`` (head replaced
   when the class count differs, positional embedding interpolated when the resolution
   differs), freezes, adds LoRA adapters; returns what it did, logged as ``init.*`` params;
2. :func:`lr_scale_fn` for layer-wise learning-rate decay;
3. :func:`export_model` at the end: the final weights with adapters merged, saved as our
   checkpoint (plain official key names), so they load into a model without adapters.

Modules: :mod:`.sources` (reading ``--init-from``), :mod:`.stages` (model stages, freezing,
layer decay), :mod:`.hooks` (the three hooks, LoRA wiring).

Sources (``--init-from``):

- a file: an official Compact-Transformers ``.pth`` (a plain state dict) or one of our
  checkpoints (``best.pt`` / ``last.pt`` / ``model.pt``: a dict with ``model``, ``arch``,
  ``name``); always read with ``torch.load(weights_only=True)``;
- an MLflow run: ``runs:/RUN_ID`` (its ``checkpoints/best.pt``), ``runs:/RUN_ID/PATH``
  (that artifact) or a bare 32-character run id, fetched from the run's tracking server
  (``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``).

Model stages, as freezing and layer decay see them (L encoder blocks):

- embedding stage (depth 0): ``tokenizer.*``, ``embedder.*`` (text word vectors),
  ``classifier.positional_emb``, ``classifier.class_emb``;
- block i (depth i + 1): ``classifier.blocks.{i}.*``;
- head (depth L + 1): everything after the blocks: ``classifier.norm``,
  ``classifier.attention_pool`` and ``classifier.fc``.

``--freeze tokenizer`` freezes the embedding stage; ``--freeze encoder`` freezes everything
except the pooling + classifier head (``attention_pool`` and ``fc``): a linear probe on
sequence-pooled features. With LoRA only the adapters and that same head train. Layer decay
multiplies the learning rate of depth d by ``layer_decay ** (L + 1 - d)``: head 1, block i
``layer_decay ** (L - i)``, embeddings ``layer_decay ** (L + 1)``.
"""

from __future__ import annotations

from ablate.finetune.hooks import export_model, prepare_model
from ablate.finetune.sources import (
    DEFAULT_RUN_ARTIFACT,
    SourceSpec,
    SourceWeights,
    load_source,
    parse_source,
)
from ablate.finetune.stages import (
    HEAD_PREFIXES,
    freeze_parameters,
    lr_scale_fn,
    parameter_depth,
)

__all__ = [
    "SourceSpec",
    "SourceWeights",
    "parse_source",
    "load_source",
    "prepare_model",
    "lr_scale_fn",
    "export_model",
    "freeze_parameters",
    "parameter_depth",
    "HEAD_PREFIXES",
    "DEFAULT_RUN_ARTIFACT",
]

"""ablate: attention-variant ablations for compact transformers.

Heavy dependencies (mlflow, optuna, matplotlib, pandas) are imported only by the modules
that need them, so ``import ablate`` stays fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name: str):
    if name in ("create_model", "list_models"):
        from ablate import models

        return getattr(models, name)
    raise AttributeError(f"module 'ablate' has no attribute {name!r}")

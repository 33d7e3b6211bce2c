"""The course's networks and ``build_model(kind, **config)``, which rebuilds any of them from its ``config``.

Every model stores its constructor arguments as ``model.config`` (a dict), so a checkpoint needs only
``(model_kind(model), model.config)`` plus the weights.
"""

from __future__ import annotations

from torch import nn

from .._checks import fail
from .autoencoder import Autoencoder
from .classifier import Classifier
from .embeddings import timestep_embedding
from .flow import FlowVelocity
from .mlp import MLP
from .tiny_unet import TinyUNet
from .unet import UNet
from .v_prediction import VPrediction

MODEL_KINDS: dict[str, type[nn.Module]] = {
    "tiny_unet": TinyUNet,
    "unet": UNet,
    "mlp": MLP,
    "classifier": Classifier,
    "autoencoder": Autoencoder,
    "v_prediction": VPrediction,
    "flow": FlowVelocity,
}


def build_model(kind: str, **config) -> nn.Module:
    """A fresh model of ``kind`` (one of MODEL_KINDS) built with ``config`` (JSON lists become tuples)."""
    if kind not in MODEL_KINDS:
        fail("kind", kind, f"known model kinds are {', '.join(sorted(MODEL_KINDS))}")
    cls = MODEL_KINDS[kind]
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    except TypeError as err:  # an unknown or missing keyword
        fail("config", config, f"not a valid configuration for {cls.__name__}: {err}")


def model_kind(model: nn.Module) -> str:
    """The MODEL_KINDS key of ``model`` (unwrapping DistributedDataParallel / torch.compile)."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    for kind, cls in MODEL_KINDS.items():
        if type(model) is cls:
            return kind
    fail(
        "model",
        type(model).__name__,
        f"expected one of {', '.join(c.__name__ for c in MODEL_KINDS.values())}",
    )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "MODEL_KINDS",
    "Autoencoder",
    "Classifier",
    "FlowVelocity",
    "MLP",
    "TinyUNet",
    "UNet",
    "VPrediction",
    "build_model",
    "count_parameters",
    "model_kind",
    "timestep_embedding",
]

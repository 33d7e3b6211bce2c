"""diffusion_course: the package behind every notebook of the course.

Submodules are imported on first use (``dc.sampling``, ``dc.data`` …),
so ``import diffusion_course`` stays fast.
"""

from __future__ import annotations

import importlib

from .profiles import Profile, get_profile, resolve_device
from .schedules import NoiseSchedule, cosine_schedule, linear_schedule, make_schedule, scaled_linear_schedule

__version__ = "0.1.0"

_SUBMODULES = {
    "bridge",
    "checkpoints",
    "classifier_training",
    "cli",
    "configs",
    "data",
    "evaluation",
    "exercises",
    "generation",
    "interpolation",
    "latent",
    "lessons",
    "metrics",
    "models",
    "oracle",
    "parameterizations",
    "profiles",
    "sampling",
    "schedules",
    "training",
    "viz",
    "widgets",
}

__all__ = [
    "NoiseSchedule",
    "Profile",
    "cosine_schedule",
    "get_profile",
    "linear_schedule",
    "make_schedule",
    "resolve_device",
    "scaled_linear_schedule",
    *sorted(_SUBMODULES),
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'diffusion_course' has no attribute {name!r}")

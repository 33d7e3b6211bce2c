"""Run-size profiles: ``quick`` (CPU, CI, laptops) and ``full`` (CUDA).

The profile is picked from the hardware unless ``DIFFUSION_COURSE_PROFILE`` says otherwise, so the same
notebook runs small on a laptop and big on a GPU server without edits. Notebooks keep their sizes
visible with ``P.pick(quick=..., full=...)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ._checks import check_choice, fail

PROFILES = ("quick", "full")
ENV_VAR = "DIFFUSION_COURSE_PROFILE"


@dataclass(frozen=True)
class Profile:
    name: str
    device: torch.device

    @property
    def is_full(self) -> bool:
        return self.name == "full"

    def pick(self, *, quick, full):
        """The value for this profile."""
        return full if self.is_full else quick

    def __str__(self) -> str:
        return f"profile={self.name} device={self.device}"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else MPS, else CPU; anything else is checked to exist."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        fail("device", device, "use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        fail("device", device, "CUDA is not available on this machine; use 'auto' or 'cpu'")
    return dev


def get_profile(name: str | None = None, device: str | torch.device = "auto") -> Profile:
    """The active profile: ``name``, else $DIFFUSION_COURSE_PROFILE, else full on CUDA and quick elsewhere."""
    dev = resolve_device(device)
    if name is None:
        env = os.environ.get(ENV_VAR, "").strip()
        if env:
            check_choice(ENV_VAR, env, PROFILES)
            name = env
        else:
            name = "full" if dev.type == "cuda" else "quick"
    check_choice("name", name, PROFILES)
    return Profile(name=name, device=dev)

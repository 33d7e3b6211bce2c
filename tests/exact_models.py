"""Exact ε-models with closed forms, for sampler tests (no training, no oracle mixture needed)."""

import torch


def exact_eps_model(x0: torch.Tensor, schedule):
    """The ε-model of δ(x0): ε = (x_t − √ᾱ_t x0)/√(1−ᾱ_t), so x̂₀ ≡ x0 everywhere."""

    def model(x, t):
        ab = schedule.alpha_bar.to(x.dtype)[t].reshape(-1, *[1] * (x.ndim - 1))
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()

    return model

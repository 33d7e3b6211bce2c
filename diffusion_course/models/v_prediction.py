r"""A network that predicts v (Salimans & Ho 2022), presented to the samplers as an ε-model.

With α_t = √ᾱ_t and σ_t = √(1 − ᾱ_t), x_t = α_t x_0 + σ_t ε and

    v = α_t ε − σ_t x_0,   so   ε = α_t v + σ_t x_t   and   x̂₀ = α_t x_t − σ_t v.

``VPrediction(net="unet", schedule="linear", T=1000, **unet_config)`` holds the inner network in ``.net``
(``predict_v`` calls it) and returns ε from ``forward``, so every sampler, guidance and the scorer apply
unchanged. Where α_t → 0 an ε-model's x̂₀ = (x_t − σ_t ε)/α_t multiplies its error by 1/α_t (160 at
t = 999 of the linear schedule); a v-model's x̂₀ stays a bounded combination. That is why the one-step
students of progressive distillation predict v.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, fail

DENOISERS = ("unet", "tiny_unet", "mlp")  # the kinds whose output can be read as v


class VPrediction(nn.Module):
    """ε(x_t, t, y) = α_t · net(x_t, t, y) + σ_t · x_t, where ``net`` (kind ``net``) predicts v."""

    def __init__(self, net: str = "unet", schedule: str = "linear", T: int = 1000, **net_config):
        super().__init__()
        from ..schedules import SCHEDULES, make_schedule
        from . import build_model

        check_choice("net", net, DENOISERS)
        check_choice("schedule", schedule, SCHEDULES)
        self.net = build_model(net, **net_config)
        alpha_bar = make_schedule(schedule, T).alpha_bar
        if float(alpha_bar.min()) <= 0.0:
            fail("schedule", schedule, "needs ᾱ_t > 0 at every t")
        # float64 roots, cast once: buffers follow .to(device); not stored (the config rebuilds them)
        self.register_buffer("alpha", alpha_bar.sqrt().float(), persistent=False)
        self.register_buffer("sigma", (1.0 - alpha_bar).sqrt().float(), persistent=False)
        self.num_classes = getattr(self.net, "num_classes", None)
        self.config = {"net": net, "schedule": schedule, "T": T, **self.net.config}

    def predict_v(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, t, labels) if labels is not None else self.net(x, t)

    def scales(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(α_t, σ_t) shaped (B, 1, …, 1) like ``like``."""
        t = torch.as_tensor(t, device=self.alpha.device).long().expand(like.shape[0])
        shape = (-1, *([1] * (like.ndim - 1)))
        return self.alpha[t].reshape(shape).to(like.dtype), self.sigma[t].reshape(shape).to(like.dtype)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None, *, predict: str = "eps"
    ) -> torch.Tensor:
        """ε (``predict="eps"``, what samplers call) or the network's v (``predict="v"``, for training
        through a DistributedDataParallel wrapper, which only forwards ``forward``)."""
        v = self.predict_v(x, t, labels)
        if predict == "v":
            return v
        check_choice("predict", predict, ("eps", "v"))
        alpha, sigma = self.scales(t, x)
        return alpha * v + sigma * x


__all__ = ["VPrediction"]

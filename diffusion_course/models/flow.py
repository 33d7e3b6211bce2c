r"""A network that predicts the flow-matching velocity of the linear (rectified-flow) path.

With x₀ the data, ε ~ N(0, I) and t ∈ [0, 1] (1 = noise),

    x_t = (1 − t) x₀ + t ε,      u = dx_t/dt = ε − x₀,

and the network u_θ(x_t, t, y) is trained to regress u (``training.diffusion_loss``). Its marginal
velocity E[ε − x₀ | x_t] moves samples of N(0, I) at t = 1 to the data at t = 0 along dx/dt = u_θ
(``sampling.flow``). x̂₀ = x_t − t u and ε̂ = x_t + (1 − t) u (``parameterizations``).

``FlowVelocity(net="unet", **net_config)`` holds the inner network in ``.net`` and feeds it the time as
1000 t (a real number; the sinusoidal embedding takes any real time), so the same U-Net and MLP serve both
kinds of model and see times on the scale they were designed for.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_image_batch, fail
from ..parameterizations import flow_eps_from_velocity, vp_to_flow

NETS = ("unet", "tiny_unet", "mlp")  # the kinds whose output can be read as a velocity
TIME_SCALE = 1000.0  # the inner network sees 1000 t


class FlowVelocity(nn.Module):
    """u_θ(x_t, t, y) = net(x_t, 1000 t, y), t ∈ [0, 1] a number or a floating tensor (B,)."""

    velocity_model = True  # called with real times t ∈ [0, 1] (see is_velocity_model)

    def __init__(self, net: str = "unet", **net_config):
        super().__init__()
        from . import build_model

        check_choice("net", net, NETS)
        self.net = build_model(net, **net_config)
        self.net.continuous_time = True
        self.num_classes = getattr(self.net, "num_classes", None)
        self.config = {"net": net, **self.net.config}

    def forward(self, x: torch.Tensor, t, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = check_image_batch("x", x)
        t = flow_times(t, x.shape[0], x.device)
        time = TIME_SCALE * t
        return self.net(x, time, labels) if labels is not None else self.net(x, time)


class FlowAsEps:
    """A velocity model presented as an ε-model on a discrete VP ``schedule`` (``flow_matching_schedule``), so
    every VP sampler (DDIM, DPM-Solver++, UniPC, the SDE samplers, …) and guidance run on a flow model:

        x_lin = x / (a + σ),   t = σ / (a + σ),   u = flow(x_lin, t, y),   ε = x_lin + (1 − t) u

    with a = √ᾱ_t, σ = √(1 − ᾱ_t) (``parameterizations.vp_to_flow`` and ``flow_eps_from_velocity``). The same
    (x̂₀, ε) pair underlies both, so DDIM η = 0 through this wrapper is the flow's Euler on the mapped grid.
    """

    def __init__(self, flow, schedule):
        if float(schedule.alpha_bar.min()) <= 0.0:
            fail("schedule", schedule.name, "needs ᾱ_t > 0 at every t (x̂₀ is undefined at pure noise)")
        self.flow, self.schedule = flow, schedule
        self.num_classes = getattr(flow, "num_classes", None)

    def __call__(self, x: torch.Tensor, t, labels: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or t.is_floating_point():
            fail("t", t, "expected integer timestep indices of the VP schedule (a LongTensor (B,))")
        alpha_bar = self.schedule.alpha_bar[t.to("cpu").long().expand(x.shape[0])]
        x_lin, time = vp_to_flow(x, alpha_bar)
        u = self.flow(x_lin, time) if labels is None else self.flow(x_lin, time, labels=labels)
        return flow_eps_from_velocity(x_lin, u, time)

    def __repr__(self) -> str:
        return f"FlowAsEps({type(self.flow).__name__}, schedule={self.schedule.name!r}, T={self.schedule.T})"


def is_velocity_model(model) -> bool:
    """Whether ``model``, or the model inside its wrappers (``.model``: CFG, EvalCounter), is a velocity
    model called with real times (``velocity_model = True``), not an ε-model called with timestep indices."""
    for _ in range(8):
        if getattr(type(model), "velocity_model", False):
            return True
        if not hasattr(model, "model"):
            return False
        model = model.model
    return False


def flow_times(t, batch: int, device=None) -> torch.Tensor:
    """t as a float32 tensor (batch,) in [0, 1], from a number or a floating tensor () or (batch,)."""
    if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
        fail("t", t, "expected a time in [0, 1]: a number or a floating tensor (B,)")
    if isinstance(t, torch.Tensor) and not t.is_floating_point():
        fail("t", t, "expected flow times in [0, 1] as a floating tensor (integer timestep indices belong to "
             "ε-models on a discrete schedule)")  # fmt: skip
    t = torch.as_tensor(t, dtype=torch.float32, device=device)
    t = t.expand(batch) if t.ndim == 0 else t
    if t.ndim != 1 or t.shape[0] != batch:
        fail("t", t, f"expected a number or shape ({batch},), one time per sample")
    if not (torch.isfinite(t).all() and (t >= 0).all() and (t <= 1).all()):
        fail(f"t (min {float(t.min()):.4g}, max {float(t.max()):.4g})", t, "every time must lie in [0, 1]")
    return t


__all__ = ["FlowAsEps", "FlowVelocity", "flow_times", "is_velocity_model"]

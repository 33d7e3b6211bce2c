r"""Noise schedules and the forward process.

Index convention (used everywhere in the course): timesteps are ``t ∈ {0, …, T−1}``.

    α_t = 1 − β_t,            ᾱ_t = ∏_{s=0}^{t} α_s,
    q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I),
    SNR(t) = ᾱ_t / (1 − ᾱ_t).

So ``t = 0`` is already one noising step away from the data; "clean" (ᾱ = 1) is the state
*after* the last sampled step, not an index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from ._checks import check_float, check_image_batch, check_int, check_timesteps_tensor, fail

SCHEDULES = ("linear", "cosine", "scaled_linear")


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete variance schedule given by its ``betas`` (float64, shape (T,)).

    Every 0 < β_t < 1; the last one may be exactly 1, which makes ᾱ_{T−1} = 0 (zero terminal SNR).
    """

    betas: torch.Tensor
    name: str = "custom"

    def __post_init__(self):
        b = self.betas
        if not isinstance(b, torch.Tensor):
            b = torch.as_tensor(b)
        if b.ndim != 1 or b.numel() < 1:
            fail("betas", b, "expected a 1-D tensor with T ≥ 1 entries")
        if not b.is_floating_point():
            fail("betas", b, "expected floating-point values")
        b = b.detach().to(device="cpu", dtype=torch.float64)
        if not torch.isfinite(b).all():
            fail("betas", b, "every β_t must be finite")
        bad = (b <= 0) | (b > 1) | ((b == 1) & (torch.arange(b.numel()) < b.numel() - 1))
        if bad.any():
            i = int(bad.nonzero()[0])
            fail(f"betas[{i}]", float(b[i]), "each β_t must lie in (0, 1); only the last may equal 1")
        object.__setattr__(self, "betas", b)

    @property
    def T(self) -> int:
        return self.betas.numel()

    @cached_property
    def alphas(self) -> torch.Tensor:
        """α_t = 1 − β_t."""
        return 1.0 - self.betas

    @cached_property
    def alpha_bar(self) -> torch.Tensor:
        """ᾱ_t = ∏_{s≤t} α_s."""
        return torch.cumprod(self.alphas, dim=0)

    @cached_property
    def alpha_bar_prev(self) -> torch.Tensor:
        """ᾱ_{t−1}, with ᾱ_{−1} = 1 (the clean data)."""
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])

    @cached_property
    def snr(self) -> torch.Tensor:
        """SNR(t) = ᾱ_t / (1 − ᾱ_t) (inf where ᾱ_t = 1, 0 where ᾱ_t = 0)."""
        return self.alpha_bar / (1.0 - self.alpha_bar)

    @cached_property
    def log_snr(self) -> torch.Tensor:
        """λ_t = log ᾱ_t − log(1 − ᾱ_t)."""
        return torch.log(self.alpha_bar) - torch.log1p(-self.alpha_bar)

    @cached_property
    def sigmas(self) -> torch.Tensor:
        """σ_t = √((1 − ᾱ_t)/ᾱ_t), the noise level of the variance-exploding frame x/√ᾱ."""
        return torch.sqrt((1.0 - self.alpha_bar) / self.alpha_bar)

    @cached_property
    def posterior_variance(self) -> torch.Tensor:
        """β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t, the variance of q(x_{t−1} | x_t, x_0)."""
        return (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar) * self.betas

    def terminal_signal(self) -> float:
        """√ᾱ_{T−1}: how much of x_0 is left at the last step (0 means pure noise)."""
        return float(self.alpha_bar[-1].sqrt())

    def gather(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] as a tensor shaped (B, 1, …, 1), with ``like``'s dtype and device."""
        out = values.to(like.device)[t.to(like.device)].to(like.dtype)
        return out.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(
        self,
        x0: torch.Tensor,
        t: torch.Tensor | int,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Jump straight to step t: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, ε ~ N(0, I)."""
        check_image_batch("x0", x0)
        t = check_timesteps_tensor("t", t, self.T, x0.shape[0])
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        elif noise.shape != x0.shape:
            fail("noise", noise, f"expected the same shape as x0, {tuple(x0.shape)}")
        # Roots in float64: in float32, 1 − ᾱ_0 = 1 − 0.9999 is off by 1.7e-4 relative.
        signal = self.gather(self.alpha_bar.sqrt(), t, x0)
        noise_scale = self.gather((1.0 - self.alpha_bar).sqrt(), t, x0)
        return signal * x0 + noise_scale * noise

    def q_step(
        self,
        x_prev: torch.Tensor,
        t: torch.Tensor | int,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One step of the chain: x_t = √α_t x_{t−1} + √β_t ε (x_{−1} is the data x_0)."""
        check_image_batch("x_prev", x_prev)
        t = check_timesteps_tensor("t", t, self.T, x_prev.shape[0])
        if noise is None:
            noise = torch.randn(x_prev.shape, generator=generator, device=x_prev.device, dtype=x_prev.dtype)
        a = self.gather(self.alphas, t, x_prev)
        return a.sqrt() * x_prev + (1.0 - a).sqrt() * noise

    def q_chain(self, x0: torch.Tensor, t: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Run the chain step by step from x_0 to x_t (t+1 steps: indices 0..t)."""
        t = check_int("t", t, low=0, high=self.T - 1)
        x = x0
        for s in range(t + 1):
            x = self.q_step(x, s, generator=generator)
        return x

    def rescale_zero_terminal_snr(self) -> NoiseSchedule:
        """Lin et al. (2023), Algorithm 1: shift and scale √ᾱ so that ᾱ_{T−1} = 0 and ᾱ_0 is kept."""
        if self.T < 2:
            fail("T", self.T, "rescaling needs T ≥ 2")
        s = self.alpha_bar.sqrt()
        s0, sT = s[0].clone(), s[-1].clone()
        s = (s - sT) * s0 / (s0 - sT)
        ab = s**2
        alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
        return NoiseSchedule(1.0 - alphas, name=f"{self.name}+zero_snr")

    def __repr__(self) -> str:
        return f"NoiseSchedule(name={self.name!r}, T={self.T}, √ᾱ_(T−1)={self.terminal_signal():.3g})"


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """Ho et al. (2020): β_t linear from ``beta_start`` to ``beta_end``."""
    T = check_int("T", T, low=1)
    beta_start = check_float("beta_start", beta_start, low=0.0, high=1.0, low_open=True)
    beta_end = check_float("beta_end", beta_end, low=0.0, high=1.0, low_open=True)
    return NoiseSchedule(torch.linspace(beta_start, beta_end, T, dtype=torch.float64), name="linear")


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Nichol & Dhariwal (2021): f(u) = cos²((u/T + s)/(1 + s) · π/2), β_t = min(1 − f(t+1)/f(t), max_β)."""
    T = check_int("T", T, low=1)
    s = check_float("s", s, low=0.0)
    max_beta = check_float("max_beta", max_beta, low=0.0, high=1.0, low_open=True)
    u = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return NoiseSchedule(betas, name="cosine")


def scaled_linear_schedule(
    T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> NoiseSchedule:
    """Stable Diffusion's schedule: √β_t linear from √beta_start to √beta_end."""
    T = check_int("T", T, low=1)
    beta_start = check_float("beta_start", beta_start, low=0.0, high=1.0, low_open=True)
    beta_end = check_float("beta_end", beta_end, low=0.0, high=1.0, low_open=True)
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    return NoiseSchedule(betas, name="scaled_linear")


def flow_matching_schedule(T: int = 1000) -> NoiseSchedule:
    """The VP chain of the straight path x_t = (1 − t) x₀ + t ε at t_k = (k + 1)/(T + 1), k = 0..T−1:
    ᾱ_k = (1 − t_k)² / ((1 − t_k)² + t_k²), the signal-to-noise ratio of x_t (a VP state at ᾱ is the flow
    state at t = σ/(a + σ) scaled by a + σ). It lets the VP samplers run a flow model through
    ``models.FlowAsEps``; t stops short of 1, where ᾱ = 0 and x̂₀ from ε is undefined (ᾱ_{T−1} ≈ 1e-6 for
    T = 1000)."""
    T = check_int("T", T, low=1)
    t = torch.arange(1, T + 1, dtype=torch.float64) / (T + 1)
    alpha_bar = (1 - t) ** 2 / ((1 - t) ** 2 + t**2)
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    return NoiseSchedule(1.0 - alpha_bar / previous, name="flow")


def make_schedule(name: str = "linear", T: int = 1000, zero_terminal_snr: bool = False) -> NoiseSchedule:
    """A schedule by name: ``linear``, ``cosine`` or ``scaled_linear`` (optionally rescaled to zero SNR)."""
    builders = {"linear": linear_schedule, "cosine": cosine_schedule, "scaled_linear": scaled_linear_schedule}
    if name not in builders:
        fail("name", name, f"known schedules are {', '.join(SCHEDULES)}")
    schedule = builders[name](T)
    return schedule.rescale_zero_terminal_snr() if zero_terminal_snr else schedule

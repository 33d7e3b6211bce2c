"""Slider app for notebook 06: choose the number of steps and the timestep strategy, see grid and samples."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from .. import viz
from .._checks import check_choice, check_float, check_image_batch, check_int
from ..lessons.eta import check_independent_start
from ..sampling import STRATEGIES, ddim_sample, timestep_grid, visits_last
from .core import App, make_app


def steps_app(
    eps_model,
    schedule,
    x_T: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    steps: int = 10,
    strategy: str = "trailing",
    eta: float = 0.0,
    max_steps: int = 50,
    seed: int = 0,
) -> App:
    """DDIM(η) from one fixed ``x_T`` on the grid ``timestep_grid(T, steps, strategy)``.

    Left: √ᾱ_t against t with the visited timesteps marked (the first one in red when it is not T−1, i.e.
    when the sampler treats pure noise as if it were x at a less noisy level). Right: the samples. x_T and the
    generator's seed are fixed, so only the grid changes between positions; results are cached.
    """
    x_T = check_image_batch("x_T", x_T, ndim=4)
    max_steps = check_int("max_steps", max_steps, low=1, high=schedule.T)
    steps = check_int("steps", steps, low=1, high=max_steps)
    strategy = check_choice("strategy", strategy, STRATEGIES)
    eta = check_float("eta", eta, low=0.0)
    seed = check_int("seed", seed)
    if eta > 0:
        check_independent_start(x_T, seed)
    T = schedule.T
    sqrt_ab = schedule.alpha_bar.sqrt().numpy()
    cache: dict[tuple[int, str], torch.Tensor] = {}

    def samples(steps: int, strategy: str) -> torch.Tensor:
        if (steps, strategy) not in cache:
            ts = timestep_grid(T, steps, strategy)
            generator = torch.Generator(device=x_T.device).manual_seed(seed)
            out = ddim_sample(eps_model, x_T, schedule, ts, eta=eta, generator=generator, labels=labels)
            cache[steps, strategy] = out.detach().cpu()
        return cache[steps, strategy]

    def draw(steps: int, strategy: str):
        ts = timestep_grid(T, steps, strategy)
        x0 = samples(steps, strategy)
        starts_at_last = visits_last(T, steps, strategy)
        fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.2), width_ratios=(1.0, 1.6))
        left.plot(range(T), sqrt_ab, color="0.6", lw=1, label="√ᾱ_t")
        t_list = ts.tolist()
        left.plot(t_list, sqrt_ab[t_list], "o", ms=3, color="tab:blue", label="visited")
        first = t_list[0]
        left.plot([first], [sqrt_ab[first]], "o", ms=7, color="tab:green" if starts_at_last else "tab:red",
                  label=f"first step t = {first}")  # fmt: skip
        left.set_xlabel("t")
        left.set_ylabel("√ᾱ_t (signal kept)")
        left.set_xlim(-10, T + 10)
        left.legend(fontsize=8)
        left.grid(alpha=0.3)
        verdict = (
            "starts at T−1" if starts_at_last else f"skips T−1 (√ᾱ = {sqrt_ab[first]:.3f} at t = {first})"
        )
        left.set_title(f"{strategy}, {steps} steps: {verdict}", fontsize=9)
        viz.show_images(x0, nrow=min(8, x0.shape[0]), ax=right)
        right.set_title(f"DDIM η = {eta:g}, {steps} model calls per sample", fontsize=9)
        fig.tight_layout()
        plt.close(fig)
        state = {
            "steps": steps,
            "strategy": strategy,
            "timesteps": t_list,
            "visits_last": starts_at_last,
            "samples": x0.numpy(),
        }
        return fig, state

    controls = {
        "steps": widgets.IntSlider(
            value=steps, min=1, max=max_steps, description="steps", continuous_update=False
        ),
        "strategy": widgets.Dropdown(options=list(STRATEGIES), value=strategy, description="strategy"),
    }
    return make_app(controls, draw, title="Skipping steps: which timesteps the sampler visits")

"""Slider app for notebook 05: move η and watch two runs from the same x_T agree (η = 0) or drift apart."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from .. import viz
from .._checks import check_float, check_image_batch, check_int, fail
from ..lessons.eta import check_independent_start
from ..sampling import ddim_sample, ddim_sigma, timestep_grid
from .core import App, make_app


def eta_app(
    eps_model,
    schedule,
    x_T: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    steps: int = 10,
    eta: float = 0.0,
    seeds: tuple[int, int] = (0, 1),
    strategy: str = "trailing",
    max_eta: float = 1.0,
) -> App:
    """DDIM(η) with ``steps`` steps from one fixed ``x_T``, run twice with the generators seeded ``seeds``.

    Each redraw shows both runs (one row each), their difference, and the mean per-pixel variance across
    them, V = mean_p (x⁽¹⁾[p] − x⁽²⁾[p])² / 2 (the unbiased variance of two runs): 0 at η = 0, growing with η.
    x_T and the seeds are fixed, so every slider position is reproducible; results are cached per η.
    """
    x_T = check_image_batch("x_T", x_T, ndim=4)
    steps = check_int("steps", steps, low=1, high=schedule.T)
    max_eta = check_float("max_eta", max_eta, low=0.0, low_open=True)
    eta = check_float("eta", eta, low=0.0, high=max_eta)
    seeds = tuple(check_int("seeds[]", s) for s in seeds)
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        fail("seeds", seeds, "expected two different seeds, one per run")
    for seed in seeds:
        check_independent_start(x_T, seed)
    ts = timestep_grid(schedule.T, steps, strategy)
    first_sigma_ab = (
        float(schedule.alpha_bar[ts[0]]),
        float(schedule.alpha_bar[ts[1]]) if steps > 1 else 1.0,
    )
    cache: dict[float, torch.Tensor] = {}

    def runs(eta: float) -> torch.Tensor:
        key = round(eta, 6)
        if key not in cache:
            out = []
            for seed in seeds:
                generator = torch.Generator(device=x_T.device).manual_seed(seed)
                out.append(
                    ddim_sample(eps_model, x_T, schedule, ts, eta=eta, generator=generator, labels=labels)
                )
            cache[key] = torch.stack(out).detach().cpu()
        return cache[key]

    def draw(eta: float):
        pair = runs(eta)
        variance = float(pair.double().var(dim=0).mean())
        n = x_T.shape[0]
        fig, ax = plt.subplots(figsize=(1.1 * n + 0.6, 4.0))
        difference = (pair[0] - pair[1]).abs() - 1.0  # |x⁽¹⁾ − x⁽²⁾| ∈ [0, 2] shown as black (0) to white (2)
        tiles = torch.cat([pair[0], pair[1], difference])
        row_labels = [""] * (3 * n)
        row_labels[0], row_labels[n], row_labels[2 * n] = (
            f"seed {seeds[0]}",
            f"seed {seeds[1]}",
            "|difference|",
        )
        viz.show_images(tiles, nrow=n, ax=ax, labels=row_labels)
        sigma = ddim_sigma(*first_sigma_ab, eta)
        ax.set_title(
            f"DDIM-{steps}, η = {eta:.2f}: two runs from the same x_T\n"
            f"σ at the first step = {sigma:.3f}, variance across runs = {variance:.4f}",
            fontsize=10,
        )
        fig.tight_layout()
        plt.close(fig)
        state = {
            "eta": eta,
            "variance": variance,
            "identical": bool(torch.equal(pair[0], pair[1])),
            "samples": pair.numpy(),
        }
        return fig, state

    controls = {
        "eta": widgets.FloatSlider(
            value=eta, min=0.0, max=max_eta, step=0.1, description="eta", continuous_update=False,
            readout_format=".1f",
        ),
    }  # fmt: skip
    return make_app(controls, draw, title="DDIM's η: how much fresh noise each step adds")

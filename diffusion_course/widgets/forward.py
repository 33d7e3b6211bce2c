"""Slider app for notebook 01: scrub t through the forward process."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from .. import viz
from .._checks import check_image_batch, check_int, fail
from ..schedules import SCHEDULES, NoiseSchedule, make_schedule
from .core import App, make_app


def forward_process_app(
    image: torch.Tensor, schedule: str | NoiseSchedule = "linear", t: int = 250, seed: int = 0
) -> App:
    """Scrub t ∈ {0, …, T−1} through q(x_t | x_0): x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε and its pixel histogram.

    ``image``: one image in [−1, 1], (C, H, W) or (1, C, H, W). The noise ε is drawn once (from ``seed``),
    so moving the slider changes only ᾱ_t and every position is reproducible. The dropdown switches
    between the linear, cosine and scaled-linear schedules (with the same T); a ``NoiseSchedule`` passed
    in is offered under its own name.
    """
    x0 = image[None] if isinstance(image, torch.Tensor) and image.ndim == 3 else image
    check_image_batch("image", x0, ndim=4)
    if x0.shape[0] != 1:
        fail("image", image, "expected one image, (C, H, W) or (1, C, H, W)")
    x0 = x0.detach().to("cpu", torch.float32)
    if isinstance(schedule, NoiseSchedule):
        schedules = {name: make_schedule(name, schedule.T) for name in SCHEDULES}
        schedules[schedule.name] = schedule
        first = schedule.name
    else:
        schedules = {name: make_schedule(name) for name in SCHEDULES}
        if schedule not in schedules:
            fail("schedule", schedule, f"choose one of {', '.join(SCHEDULES)} or pass a NoiseSchedule")
        first = schedule
    T = schedules[first].T
    t = check_int("t", t, low=0, high=T - 1)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(check_int("seed", seed)))

    def draw(t: int, schedule: str):
        s = schedules[schedule]
        x_t = s.q_sample(x0, t, noise)
        alpha_bar, snr = float(s.alpha_bar[t]), float(s.snr[t])
        fig, (left, right) = plt.subplots(1, 2, figsize=(7.5, 3.0), width_ratios=(1, 1.7))
        viz.show_images(x_t, ax=left, title="x_t")
        viz.histogram_vs_normal(x_t, ax=right, ymax=1.0)
        right.set_title("pixel values of x_t")
        fig.suptitle(
            f"{schedule}: t = {t},  ᾱ_t = {alpha_bar:.4f},  √ᾱ_t = {alpha_bar**0.5:.4f},  SNR = {snr:.3g}"
        )
        fig.tight_layout()
        plt.close(fig)
        state = {
            "t": t,
            "schedule": schedule,
            "alpha_bar": alpha_bar,
            "snr": snr,
            "x_t": x_t[0].numpy(),
            "mean": float(x_t.mean()),
            "std": float(x_t.std()),
        }
        return fig, state

    controls = {
        "t": widgets.IntSlider(value=t, min=0, max=T - 1, description="t"),
        "schedule": widgets.Dropdown(options=list(schedules), value=first, description="schedule"),
    }
    return make_app(controls, draw, title="The forward process q(x_t | x_0)")

"""The trajectory scrubber (notebook 03) and the frames of a trajectory animation.

A sampler run with ``return_trajectory=True`` records, for each visited timestep, the state x_t it started
from and the clean image x̂₀ = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t it predicted there (see
:class:`~diffusion_course.sampling.Trajectory`). Showing the two side by side is the clearest picture of
sampling: x̂₀ settles on a digit long before the noise has left x_t.
"""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid

from .. import viz
from .._checks import check_int, fail
from ..sampling import Trajectory
from ..schedules import NoiseSchedule
from .core import App, make_app


def _check_trajectory(trajectory) -> int:
    """The number of recorded steps N, after checking that ``trajectory`` holds N steps of image batches."""
    if not isinstance(trajectory, Trajectory):
        fail(
            "trajectory",
            type(trajectory).__name__,
            "expected a Trajectory (a sampler's return_trajectory=True)",
        )
    n = len(trajectory)
    if n == 0 or len(trajectory.xs) != n + 1 or trajectory.timesteps.numel() != n:
        fail(
            "trajectory",
            f"{trajectory.timesteps.numel()} timesteps, {len(trajectory.xs)} states, {n} x0_preds",
            "expected N ≥ 1 timesteps, N + 1 states and N predictions",
        )
    x = trajectory.xs[0]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        fail(
            "trajectory",
            f"states of shape {tuple(x.shape)}",
            "expected image batches (B, C, H, W), C = 1 or 3",
        )
    return n


def trajectory_app(
    trajectory: Trajectory,
    step: int = 0,
    max_images: int = 8,
    nrow: int = 4,
    schedule: NoiseSchedule | None = None,
    title: str = "Sampling trajectory: x_t and the x̂₀ predicted from it",
) -> App:
    """Scrub through a recorded trajectory: a slider over the steps i = 0 … N−1 shows x_t at t = timesteps[i]
    (``xs[i]``) next to the x̂₀ predicted there (``x0_preds[i]``); i = N shows the sampler's output.

    Shows the first ``max_images`` images, ``nrow`` per row. With ``schedule`` the title also gives ᾱ_t.
    """
    n = _check_trajectory(trajectory)
    step = check_int("step", step, low=0, high=n)
    max_images = check_int("max_images", max_images, low=1)
    nrow = check_int("nrow", nrow, low=1)
    ts = trajectory.timesteps.tolist()
    xs = [x[:max_images].detach().to("cpu", torch.float32) for x in trajectory.xs]
    x0s = [x[:max_images].detach().to("cpu", torch.float32) for x in trajectory.x0_preds]

    def draw(step: int):
        final = step == n
        x_t = xs[step]
        x0_pred = xs[n] if final else x0s[step]
        t = None if final else ts[step]
        fig, (left, right) = plt.subplots(1, 2, figsize=(8.0, 2.2 + 0.9 * ((len(x_t) - 1) // nrow + 1)))
        viz.show_images(x_t, nrow=nrow, ax=left, title="output x_0" if final else f"x_t, t = {t}")
        viz.show_images(
            x0_pred, nrow=nrow, ax=right, title="output x_0" if final else "x̂₀ predicted at this t"
        )
        where = "the output (after the last step)" if final else f"step {step + 1} of {n}: t = {t}"
        if schedule is not None and not final:
            where += f",  ᾱ_t = {float(schedule.alpha_bar[t]):.4g}"
        fig.suptitle(where)
        fig.tight_layout()
        plt.close(fig)
        state = {
            "step": step,
            "t": t,
            "x_t": x_t.numpy(),
            "x0_pred": x0_pred.numpy(),
            "x_t_std": float(x_t.std()),
            "x0_pred_std": float(x0_pred.std()),
        }
        return fig, state

    controls = {"step": widgets.IntSlider(value=step, min=0, max=n, description="step")}
    return make_app(controls, draw, title=title)


def side_by_side(left: torch.Tensor, right: torch.Tensor, nrow: int = 4, gap: int = 6) -> torch.Tensor:
    """One image (C, H, W) in [−1, 1]: the grid of ``left`` and the grid of ``right`` next to each other,
    with a white gap of ``gap`` pixels (white = 1)."""
    if left.shape != right.shape:
        fail("right", tuple(right.shape), f"expected the shape of left, {tuple(left.shape)}")
    nrow = check_int("nrow", nrow, low=1)
    gap = check_int("gap", gap, low=0)
    grids = [
        make_grid(x.detach().to("cpu", torch.float32), nrow=nrow, padding=2, pad_value=1.0)
        for x in (left, right)
    ]
    space = torch.ones(grids[0].shape[0], grids[0].shape[1], gap)
    return torch.cat([grids[0], space, grids[1]], dim=2)


def trajectory_frames(
    trajectory: Trajectory, frames: int = 8, max_images: int = 4, nrow: int = 2
) -> tuple[list[torch.Tensor], list[str]]:
    """``frames`` evenly spaced steps of a trajectory as images for :func:`diffusion_course.viz.animate`:
    each frame is x_t (left) and the x̂₀ predicted from it (right), then a last frame with the output.

    Returns (frames, titles); pass them as ``viz.animate(frames, titles=titles, nrow=1)``.
    """
    n = _check_trajectory(trajectory)
    frames = check_int("frames", frames, low=1)
    max_images = check_int("max_images", max_images, low=1)
    picks = sorted({round(i * (n - 1) / max(frames - 1, 1)) for i in range(frames)})
    out, titles = [], []
    for i in picks:
        out.append(side_by_side(trajectory.xs[i][:max_images], trajectory.x0_preds[i][:max_images], nrow))
        titles.append(f"t = {int(trajectory.timesteps[i])}:  x_t (left),  x̂₀ (right)")
    final = trajectory.xs[n][:max_images]
    out.append(side_by_side(final, final, nrow))
    titles.append("output x_0 (after the last step)")
    return out, titles

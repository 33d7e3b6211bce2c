r"""Pictures for the notebooks: image grids, schedule curves, histograms and animations.

Images come in the course's range [−1, 1], shaped (B, C, H, W) (a single (C, H, W) or (H, W) image is
fine too); for display they are mapped to [0, 1] by (x + 1)/2 and values outside [−1, 1] (noisy x_t) are
clipped, on the picture only.

Every plotting function returns the matplotlib ``Figure``. When it makes the figure itself (``ax=None``)
it closes it in pyplot before returning, so Jupyter shows it exactly once (as the cell's result) and
nothing piles up in headless runs. Given an ``ax``, it draws there and leaves that figure alone (end the
line with ``;`` if that figure would otherwise be shown twice).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.animation import FuncAnimation
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._checks import check_choice, check_int, fail
from .schedules import NoiseSchedule

QUANTITIES = ("alpha_bar", "sqrt_alpha_bar", "snr", "log_snr")
_QUANTITY_LABEL = {
    "alpha_bar": r"$\bar\alpha_t$",
    "sqrt_alpha_bar": r"$\sqrt{\bar\alpha_t}$ (signal kept)",
    "snr": r"SNR$(t) = \bar\alpha_t / (1-\bar\alpha_t)$",
    "log_snr": r"$\log \mathrm{SNR}(t)$",
}


def _as_batch(images) -> torch.Tensor:
    """(B, C, H, W) float on the CPU from (B, C, H, W), (C, H, W) or (H, W)."""
    if not isinstance(images, torch.Tensor):
        fail("images", type(images).__name__, "expected a torch.Tensor of images in [−1, 1]")
    x = images.detach()
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        fail("images", images, "expected (B, C, H, W), (C, H, W) or (H, W) with C = 1 or 3 and B ≥ 1")
    if not x.is_floating_point():
        fail("images", images, "expected floating-point images in [−1, 1]")
    return x.to("cpu", torch.float32)


def image_grid(images, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """Tile images (in [−1, 1]) into one picture in [0, 1]: (H', W') for grey images, (H', W', 3) for colour.

    Image i sits in row i // nrow, column i % nrow (``torchvision.utils.make_grid``), with ``padding``
    white pixels between tiles.
    """
    from torchvision.utils import make_grid

    x = _as_batch(images)
    nrow = check_int("nrow", nrow, low=1)
    padding = check_int("padding", padding, low=0)
    unit = (x.clamp(-1.0, 1.0) + 1.0) / 2.0
    grid = make_grid(unit, nrow=nrow, padding=padding, pad_value=1.0)
    return grid[0].numpy() if x.shape[1] == 1 else grid.permute(1, 2, 0).numpy()


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes, bool]:
    """(figure, axes, made_here): a new figure when ``ax`` is None."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax, True
    if not isinstance(ax, Axes):
        fail("ax", type(ax).__name__, "expected a matplotlib Axes or None")
    return ax.figure, ax, False


def _done(fig: Figure, made_here: bool) -> Figure:
    if made_here:
        fig.tight_layout()
        plt.close(fig)
    return fig


def show_images(
    images,
    nrow: int = 8,
    title: str | None = None,
    ax: Axes | None = None,
    labels: Sequence[str] | None = None,
    padding: int = 2,
) -> Figure:
    """Show a batch of images in [−1, 1] as one grid; ``labels`` (one per image) are written on the tiles."""
    x = _as_batch(images)
    grid = image_grid(x, nrow=nrow, padding=padding)
    n, (_, _, h, w) = x.shape[0], x.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    if labels is not None and len(labels) != n:
        fail("labels", list(labels), f"expected one label per image ({n})")
    fig, ax, made_here = _axes(ax, (min(12.0, 0.6 + 1.4 * cols), 0.5 + 1.4 * rows))
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    if labels is not None:
        for i, label in enumerate(labels):
            left, top = (i % cols) * (w + padding) + padding, (i // cols) * (h + padding) + padding
            ax.text(
                left + 0.5, top + 0.5, str(label), color="yellow", fontsize=8, ha="left", va="top",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.0, "linewidth": 0},
            )  # fmt: skip
    return _done(fig, made_here)


def _named_schedules(schedules) -> dict[str, NoiseSchedule]:
    if isinstance(schedules, NoiseSchedule):
        return {schedules.name: schedules}
    if isinstance(schedules, Mapping):
        named = dict(schedules)
    elif isinstance(schedules, Sequence) and not isinstance(schedules, str):
        named = {getattr(s, "name", str(i)): s for i, s in enumerate(schedules)}
    else:
        named = {}
    if not named or not all(isinstance(s, NoiseSchedule) for s in named.values()):
        fail(
            "schedules", schedules, "expected a NoiseSchedule, a list of them or a dict name → NoiseSchedule"
        )
    return named


def plot_schedules(schedules, ax: Axes | None = None, quantity: str = "alpha_bar") -> Figure:
    r"""Plot one quantity of each schedule against t ∈ {0, …, T−1}.

    ``quantity``: ``alpha_bar`` (ᾱ_t), ``sqrt_alpha_bar`` (√ᾱ_t), ``snr`` (ᾱ_t/(1 − ᾱ_t), log y axis) or
    ``log_snr`` (λ_t = log ᾱ_t − log(1 − ᾱ_t)). Where ᾱ_t = 0 (zero terminal SNR) SNR is 0 and
    log SNR is −∞: those points are left off the log-scale plots.
    """
    check_choice("quantity", quantity, QUANTITIES)
    named = _named_schedules(schedules)
    fig, ax, made_here = _axes(ax, (5.5, 3.5))
    for label, schedule in named.items():
        values = {
            "alpha_bar": schedule.alpha_bar,
            "sqrt_alpha_bar": schedule.alpha_bar.sqrt(),
            "snr": schedule.snr,
            "log_snr": schedule.log_snr,
        }[quantity].numpy()
        t = np.arange(schedule.T)
        shown = np.isfinite(values) & ((values > 0) if quantity == "snr" else True)
        ax.plot(t[shown], values[shown], label=label)
    if quantity == "snr":
        ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel(_QUANTITY_LABEL[quantity])
    ax.grid(alpha=0.3)
    ax.legend()
    return _done(fig, made_here)


def histogram_vs_normal(
    x, ax: Axes | None = None, bins: int = 60, xlim: float = 4.0, ymax: float | None = None
) -> Figure:
    """Density histogram of the values of ``x`` on [−xlim, xlim], with the N(0, 1) density on top.

    Values outside the range are counted in the outermost bins, so the bars always sum to density 1.
    """
    if isinstance(x, torch.Tensor):
        values = x.detach().to("cpu", torch.float64).reshape(-1).numpy()
    else:
        values = np.asarray(x, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        fail("x", x, "expected at least one finite value")
    bins = check_int("bins", bins, low=1)
    fig, ax, made_here = _axes(ax, (4.5, 3.0))
    ax.hist(
        np.clip(values, -xlim, xlim), bins=bins, range=(-xlim, xlim), density=True, alpha=0.6,
        label=f"values: mean {values.mean():.2f}, std {values.std():.2f}",
    )  # fmt: skip
    u = np.linspace(-xlim, xlim, 400)
    ax.plot(u, np.exp(-(u**2) / 2) / math.sqrt(2 * math.pi), color="black", lw=1.5, label="N(0, 1)")
    ax.set_xlim(-xlim, xlim)
    if ymax is not None:
        ax.set_ylim(0, ymax)
    ax.set_xlabel("value")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, loc="upper right")
    return _done(fig, made_here)


def animate(frames, interval: int = 200, titles: Sequence[str] | None = None, nrow: int = 8):
    """An ``IPython.display.HTML`` player (``FuncAnimation.to_jshtml``) stepping through ``frames``.

    ``frames``: a sequence of image batches in [−1, 1] (each shown as a grid, e.g. the states of a sampling
    trajectory) or one tensor with the frame index first. ``titles``: one per frame.
    """
    from IPython.display import HTML

    if isinstance(frames, torch.Tensor):
        frames = list(frames.unbind(0))
    if not isinstance(frames, Sequence) or len(frames) == 0:
        fail("frames", type(frames).__name__, "expected a non-empty list of image tensors")
    interval = check_int("interval", interval, low=1)
    if titles is not None and len(titles) != len(frames):
        fail("titles", list(titles), f"expected one title per frame ({len(frames)})")
    grids = [image_grid(frame, nrow=nrow) for frame in frames]
    if len({g.shape for g in grids}) != 1:
        fail("frames", [tuple(g.shape) for g in grids], "every frame must have the same shape")
    height, width = grids[0].shape[:2]
    scale = 4.0 / max(height, width)
    fig, ax = plt.subplots(figsize=(max(2.0, width * scale), max(2.0, height * scale) + 0.4))
    image = ax.imshow(grids[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()

    def show(i: int):
        image.set_data(grids[i])
        if titles is not None:
            ax.set_title(titles[i])
        return (image,)

    show(0)
    animation = FuncAnimation(fig, show, frames=len(grids), interval=interval, blit=False)
    html = animation.to_jshtml()
    plt.close(fig)
    return HTML(html)

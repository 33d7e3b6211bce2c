"""Slider app for notebook 07: the guidance scale, the digit and the guidance rescale φ."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from .. import viz
from .._checks import check_float, check_int, fail
from ..sampling.ddim import ddim_sample
from ..sampling.guidance import CFG
from ..sampling.timesteps import timestep_grid
from ..schedules import NoiseSchedule
from ..scoring import wilson_interval
from .core import App, make_app


def guidance_app(
    model,
    schedule: NoiseSchedule,
    *,
    classifier=None,
    scale: float = 3.0,
    digit: int = 3,
    rescale: float = 0.0,
    n: int = 8,
    steps: int = 10,
    seed: int = 0,
    max_scale: float = 30.0,
    shape: tuple[int, ...] | None = None,
) -> App:
    """Sample ``n`` images of one class with DDIM (η = 0, ``steps`` steps) under ε̃ = ε_u + s(ε_c − ε_u).

    Controls: the scale s (0 = unconditional, 1 = conditional, up to ``max_scale``), the class (``digit``)
    and the rescale φ of :class:`~diffusion_course.sampling.guidance.CFG`. x_T is drawn once from ``seed``,
    so only the guidance changes as you move a control, and every position is reproducible; results are
    cached, so going back is instant. With a ``classifier`` the title shows how many samples it reads as
    the requested class. ``last_state`` holds the samples and their pixel statistics (``saturated``: the
    fraction of pixels outside [−1, 1]). ``shape`` is one sample's shape (default: from the model's
    ``config``, ``(in_channels, image_size, image_size)``, else (1, 28, 28)).
    """
    num_classes = getattr(model, "num_classes", None)
    if not num_classes:
        fail("model", type(model).__name__, "expected a conditional ε-model (num_classes = K, null class K)")
    if not isinstance(schedule, NoiseSchedule):
        fail("schedule", type(schedule).__name__, "expected a NoiseSchedule")
    n = check_int("n", n, low=1, high=64)
    steps = check_int("steps", steps, low=1, high=schedule.T)
    digit = check_int("digit", digit, low=0, high=num_classes - 1)
    max_scale = check_float("max_scale", max_scale, low=0.0, low_open=True)
    scale = check_float("scale", scale, low=0.0, high=max_scale)
    rescale = check_float("rescale", rescale, low=0.0, high=1.0)
    parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    device = parameter.device if parameter is not None else torch.device("cpu")
    shape = _sample_shape(model) if shape is None else tuple(check_int("shape[i]", d, low=1) for d in shape)
    x_T = torch.randn((n, *shape), generator=torch.Generator().manual_seed(check_int("seed", seed)))
    x_T = x_T.to(device)
    grid = timestep_grid(schedule.T, steps)
    cache: dict[tuple, torch.Tensor] = {}

    def draw(scale: float, digit: int, rescale: float):
        key = (round(scale, 6), digit, round(rescale, 6))
        if key not in cache:
            labels = torch.full((n,), digit, dtype=torch.long, device=device)
            cache[key] = ddim_sample(
                CFG(model, scale, rescale=rescale), x_T, schedule, grid, labels=labels
            ).cpu()
        x = cache[key]
        state = {
            "scale": scale,
            "digit": digit,
            "rescale": rescale,
            "images": x.numpy(),
            "saturated": float((x.abs() > 1).float().mean()),
            "pixel_std": float(x.std()),
        }
        title = f"s = {scale:g} (w = {scale - 1:g}), digit {digit}, φ = {rescale:g}"
        if classifier is not None:
            with torch.no_grad():
                pred = classifier(x.to(_device_of(classifier))).argmax(dim=1).cpu()
            correct = int((pred == digit).sum())
            low, high = wilson_interval(correct, n)
            state["accuracy"], state["accuracy_interval"] = correct / n, (low, high)
            title += f": classifier reads {correct}/{n} as {digit} (95 % interval {low:.2f}–{high:.2f})"
        fig, ax = plt.subplots(figsize=(min(12.0, 1.3 * min(n, 8) + 0.6), 1.6 * ((n + 7) // 8) + 0.5))
        viz.show_images(x.clamp(-1, 1), nrow=8, ax=ax)
        ax.set_title(f"{title}\n{100 * state['saturated']:.1f} % of pixels outside [−1, 1]", fontsize=9)
        fig.tight_layout()
        plt.close(fig)
        return fig, state

    controls = {
        "scale": widgets.FloatSlider(value=scale, min=0.0, max=max_scale, step=0.5, description="scale s"),
        "digit": widgets.Dropdown(options=list(range(num_classes)), value=digit, description="digit"),
        "rescale": widgets.FloatSlider(value=rescale, min=0.0, max=1.0, step=0.1, description="rescale φ"),
    }
    return make_app(controls, draw, title=f"Classifier-free guidance (DDIM, {steps} steps)")


def _sample_shape(model) -> tuple[int, ...]:
    config = getattr(model, "config", None)
    config = config if isinstance(config, dict) else {}
    if "dim" in config:  # the MLP on 2-D points
        return (config["dim"],)
    size = config.get("image_size", 28)
    return (config.get("in_channels", 1), size, size)


def _device_of(module) -> torch.device:
    parameter = next(module.parameters(), None) if isinstance(module, torch.nn.Module) else None
    return parameter.device if parameter is not None else torch.device("cpu")

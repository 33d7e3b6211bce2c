"""Slider apps for the notebooks, built so that they can be tested without a browser or a kernel.

The pattern: an app is a ``draw(**values) -> (figure, state)`` function plus named ipywidgets controls.
:func:`make_app` wires every control to :meth:`App.render`, which calls ``draw`` with the controls' current
values, shows the figure in the app's ``Output`` and records what it drew in ``last_state`` (plain numbers
and arrays) and ``renders``. Without a kernel an ``Output`` captures nothing, so tests set
``app.controls["t"].value = …`` and assert on ``app.last_state``::

    def my_app(...) -> App:
        def draw(t, schedule):
            fig = ...                       # a closed pyplot figure (see diffusion_course.viz)
            return fig, {"t": t, ...}       # what a test can check
        return make_app({"t": widgets.IntSlider(...), "schedule": widgets.Dropdown(...)}, draw)

In a notebook, put the app as the last line of a cell (it displays its widget) that starts with
``# NBVAL_IGNORE_OUTPUT``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display
from matplotlib.figure import Figure

from . import viz
from ._checks import check_image_batch, check_int, fail
from .schedules import SCHEDULES, NoiseSchedule, make_schedule


@dataclass(eq=False)
class App:
    """A slider app: display ``widget``; ``controls`` by name; ``output`` shows the latest figure.

    ``render()`` redraws from the controls' values and records ``last_state`` (what was drawn, for tests),
    ``last_figure`` and the number of ``renders``.
    """

    widget: widgets.Widget
    controls: dict[str, widgets.ValueWidget]
    output: widgets.Output
    draw: Callable[..., tuple[Figure, dict[str, Any]]]
    last_state: dict[str, Any] = field(default_factory=dict)
    last_figure: Figure | None = None
    renders: int = 0

    def values(self) -> dict[str, Any]:
        """The controls' current values by name."""
        return {name: control.value for name, control in self.controls.items()}

    def render(self, change=None) -> dict[str, Any]:
        """Draw with the current values, show the figure in ``output`` and return the recorded state."""
        figure, state = self.draw(**self.values())
        self.last_figure, self.last_state = figure, dict(state)
        self.renders += 1
        with self.output:
            self.output.clear_output(wait=True)
            display(figure)
        return self.last_state

    def _ipython_display_(self):
        display(self.widget)


def make_app(
    controls: Mapping[str, widgets.ValueWidget],
    draw: Callable[..., tuple[Figure, dict[str, Any]]],
    title: str | None = None,
) -> App:
    """An :class:`App` whose ``draw`` reruns whenever a control's value changes; drawn once now."""
    if not controls or not all(isinstance(c, widgets.ValueWidget) for c in controls.values()):
        fail("controls", dict(controls), "expected a dict name → ipywidgets control (IntSlider, Dropdown, …)")
    output = widgets.Output()
    header = [widgets.HTML(f"<b>{title}</b>")] if title else []
    box = widgets.VBox([*header, widgets.HBox(list(controls.values())), output])
    app = App(widget=box, controls=dict(controls), output=output, draw=draw)
    for control in app.controls.values():
        control.observe(app.render, names="value")
    app.render()
    return app


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

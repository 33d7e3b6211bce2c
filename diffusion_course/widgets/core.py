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
from IPython.display import display
from matplotlib.figure import Figure

from .._checks import fail


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

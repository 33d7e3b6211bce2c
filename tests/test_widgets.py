"""Slider apps, headless: moving a control reruns draw and the recorded state follows."""

import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from diffusion_course import widgets  # noqa: E402
from diffusion_course.schedules import linear_schedule, make_schedule  # noqa: E402


@pytest.fixture
def digit():
    x = -torch.ones(1, 28, 28)
    x[:, 6:22, 12:16] = 1.0  # a "1"
    return x


def test_make_app_renders_once_then_on_every_change():
    calls = []

    def draw(a, b):
        calls.append((a, b))
        return matplotlib.figure.Figure(), {"sum": a + b}

    app = widgets.make_app({"a": ipywidgets.IntSlider(value=1), "b": ipywidgets.IntSlider(value=2)}, draw)
    assert app.renders == 1 and app.last_state == {"sum": 3}
    app.controls["a"].value = 10
    assert app.renders == 2 and app.last_state == {"sum": 12} and calls[-1] == (10, 2)
    assert isinstance(app.widget, ipywidgets.VBox) and app.output in app.widget.children
    with pytest.raises(ValueError, match="controls"):
        widgets.make_app({"a": "not a widget"}, draw)


def test_forward_process_app_follows_the_slider_and_is_reproducible(digit):
    app = widgets.forward_process_app(digit, "linear", t=0, seed=3)
    first = app.last_state
    assert first["t"] == 0 and first["schedule"] == "linear" and app.renders == 1
    assert app.controls["t"].max == 999

    app.controls["t"].value = 999
    late = app.last_state
    assert app.renders == 2 and late["t"] == 999
    assert late["alpha_bar"] < 1e-4 < 0.99 < first["alpha_bar"]
    assert abs(late["std"] - 1.0) < 0.15  # almost pure noise

    # x_t is exactly q_sample with the app's fixed noise draw
    noise = torch.randn((1, 1, 28, 28), generator=torch.Generator().manual_seed(3))
    expected = linear_schedule(1000).q_sample(digit[None], 999, noise)[0].numpy()
    assert np.array_equal(late["x_t"], expected)

    app.controls["t"].value = 0
    assert np.array_equal(app.last_state["x_t"], first["x_t"])


def test_forward_process_app_switches_schedule(digit):
    app = widgets.forward_process_app(digit, t=500)
    linear = app.last_state
    app.controls["schedule"].value = "cosine"
    cosine = app.last_state
    assert cosine["schedule"] == "cosine" and cosine["t"] == 500
    assert cosine["alpha_bar"] == pytest.approx(float(make_schedule("cosine").alpha_bar[500]))
    assert cosine["alpha_bar"] > linear["alpha_bar"]  # the cosine schedule destroys signal more slowly
    assert set(app.controls["schedule"].options) == {"linear", "cosine", "scaled_linear"}


def test_forward_process_app_accepts_a_custom_schedule_and_checks_input(digit):
    zero = make_schedule("linear", T=100, zero_terminal_snr=True)
    app = widgets.forward_process_app(digit[None], zero, t=99)
    assert app.controls["schedule"].value == "linear+zero_snr" and app.controls["t"].max == 99
    assert app.last_state["alpha_bar"] == 0.0
    with pytest.raises(ValueError, match="schedule"):
        widgets.forward_process_app(digit, "quadratic")
    with pytest.raises(ValueError, match="image"):
        widgets.forward_process_app(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="t"):
        widgets.forward_process_app(digit, t=1000)

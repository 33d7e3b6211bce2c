"""The η app (notebook 05) and the steps app (notebook 06), headless: moving a control redraws and the state
follows the package's samplers."""

import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from diffusion_course import widgets  # noqa: E402
from diffusion_course.sampling import ddim_sample, timestep_grid  # noqa: E402
from diffusion_course.schedules import linear_schedule  # noqa: E402

SCHEDULE = linear_schedule(1000)


class GaussianPixels:
    """Exact ε for data x_0 ~ N(label/10, s²) per pixel: ε* = √(1−ᾱ) (x − √ᾱ m) / (ᾱ s² + 1 − ᾱ)."""

    num_classes = 10

    def __init__(self, s=0.5):
        self.s = s
        self.calls = 0

    def __call__(self, x, t, labels=None):
        self.calls += 1
        ab = SCHEDULE.alpha_bar.to(x.dtype)[t].view(-1, 1, 1, 1)
        m = torch.zeros_like(ab) if labels is None else (labels.to(x.dtype) / 10).view(-1, 1, 1, 1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * m) / (ab * self.s**2 + 1 - ab)


@pytest.fixture
def x_T():
    return torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1000))


def test_eta_app_runs_agree_at_eta_0_and_drift_apart_as_eta_grows(x_T):
    labels = torch.tensor([0, 3, 5, 9])
    app = widgets.eta_app(GaussianPixels(), SCHEDULE, x_T, labels, steps=10, eta=0.0)
    slider = app.controls["eta"]
    assert isinstance(slider, ipywidgets.FloatSlider) and slider.description == "eta"
    assert app.renders == 1 and isinstance(app.last_figure, Figure)
    first = app.last_state
    assert first["eta"] == 0.0 and first["identical"] and first["variance"] == 0.0
    expected = ddim_sample(GaussianPixels(), x_T, SCHEDULE, timestep_grid(1000, 10), eta=0.0, labels=labels)
    assert np.array_equal(first["samples"][0], expected.numpy())

    variances = []
    for eta in (0.3, 0.6, 1.0):
        slider.value = eta
        state = app.last_state
        assert state["eta"] == pytest.approx(eta) and not state["identical"]
        variances.append(state["variance"])
    assert app.renders == 4
    assert 0 < variances[0] < variances[2]  # (with 10 big steps the growth need not be monotone)
    # run 2 is DDIM(η = 1) from the same x_T with the generator seeded 1
    g = torch.Generator().manual_seed(1)
    run2 = ddim_sample(
        GaussianPixels(), x_T, SCHEDULE, timestep_grid(1000, 10), eta=1.0, generator=g, labels=labels
    )
    assert np.array_equal(app.last_state["samples"][1], run2.numpy())

    slider.value = 0.0
    assert app.last_state["identical"] and np.array_equal(app.last_state["samples"], first["samples"])


def test_eta_app_caches_samples_per_eta(x_T):
    model = GaussianPixels()
    app = widgets.eta_app(model, SCHEDULE, x_T, steps=5, eta=0.5)
    calls = model.calls
    assert calls == 2 * 5  # two runs of five steps
    app.controls["eta"].value = 0.0
    app.controls["eta"].value = 0.5
    assert model.calls == calls + 10 and app.renders == 3


def test_eta_app_rejects_bad_input(x_T):
    with pytest.raises(ValueError, match="seeds"):
        widgets.eta_app(GaussianPixels(), SCHEDULE, x_T, seeds=(1, 1))
    with pytest.raises(ValueError, match="eta"):
        widgets.eta_app(GaussianPixels(), SCHEDULE, x_T, eta=1.5)
    with pytest.raises(ValueError, match="x_T"):
        widgets.eta_app(GaussianPixels(), SCHEDULE, x_T[0])
    with pytest.raises(ValueError, match="steps"):
        widgets.eta_app(GaussianPixels(), SCHEDULE, x_T, steps=0)


def test_steps_app_follows_steps_and_strategy(x_T):
    app = widgets.steps_app(GaussianPixels(), SCHEDULE, x_T, steps=10, strategy="trailing")
    state = app.last_state
    assert state["timesteps"] == timestep_grid(1000, 10, "trailing").tolist() and state["visits_last"]
    assert isinstance(app.controls["strategy"], ipywidgets.Dropdown)
    expected = ddim_sample(GaussianPixels(), x_T, SCHEDULE, timestep_grid(1000, 10), eta=0.0)
    assert np.array_equal(state["samples"], expected.numpy())

    app.controls["strategy"].value = "leading"
    state = app.last_state
    assert state["strategy"] == "leading" and state["timesteps"][0] == 900 and not state["visits_last"]

    app.controls["steps"].value = 25
    state = app.last_state
    assert app.renders == 3 and len(state["timesteps"]) == 25 and state["timesteps"][0] == 960
    expected = ddim_sample(GaussianPixels(), x_T, SCHEDULE, timestep_grid(1000, 25, "leading"), eta=0.0)
    assert np.array_equal(state["samples"], expected.numpy())

    app.controls["strategy"].value = "quadratic"
    assert (
        app.last_state["timesteps"][0] == timestep_grid(1000, 25, "quadratic")[0]
        and not app.last_state["visits_last"]
    )


def test_steps_app_with_eta_uses_the_seed(x_T):
    labels = torch.tensor([1, 2, 3, 4])
    app = widgets.steps_app(GaussianPixels(), SCHEDULE, x_T, labels, steps=4, eta=1.0, seed=7)
    g = torch.Generator().manual_seed(7)
    expected = ddim_sample(
        GaussianPixels(), x_T, SCHEDULE, timestep_grid(1000, 4), eta=1.0, generator=g, labels=labels
    )
    assert np.array_equal(app.last_state["samples"], expected.numpy())


def test_steps_app_rejects_bad_input(x_T):
    with pytest.raises(ValueError, match="strategy"):
        widgets.steps_app(GaussianPixels(), SCHEDULE, x_T, strategy="uniform")
    with pytest.raises(ValueError, match="steps"):
        widgets.steps_app(GaussianPixels(), SCHEDULE, x_T, steps=60, max_steps=50)
    with pytest.raises(ValueError, match="eta"):
        widgets.steps_app(GaussianPixels(), SCHEDULE, x_T, eta=-1.0)


def test_apps_refuse_a_start_drawn_from_their_own_seed():
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="first z would equal x_T"):
        widgets.eta_app(GaussianPixels(), SCHEDULE, x_T, seeds=(0, 1))
    with pytest.raises(ValueError, match="first z would equal x_T"):
        widgets.steps_app(GaussianPixels(), SCHEDULE, x_T, eta=0.5, seed=0)
    widgets.steps_app(GaussianPixels(), SCHEDULE, x_T, eta=0.0, seed=0)  # deterministic: no z is drawn

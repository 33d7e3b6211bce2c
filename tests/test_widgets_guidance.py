"""The guidance app, headless: moving the scale, the digit or φ reruns the sampler; the state follows."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from diffusion_course import widgets  # noqa: E402
from diffusion_course.exercises.guidance import ToyClassModel  # noqa: E402
from diffusion_course.models import build_model  # noqa: E402
from diffusion_course.schedules import linear_schedule  # noqa: E402


@pytest.fixture
def model():
    return ToyClassModel(num_classes=10, seed=1)


def test_guidance_app_follows_its_controls(model):
    schedule = linear_schedule(1000)
    app = widgets.guidance_app(model, schedule, scale=1.0, digit=3, n=4, steps=5, seed=0)
    first = app.last_state
    assert app.renders == 1 and first["scale"] == 1.0 and first["digit"] == 3 and first["rescale"] == 0.0
    assert first["images"].shape == (4, 1, 28, 28) and "accuracy" not in first
    assert app.controls["digit"].options == tuple(range(10)) and app.controls["scale"].max == 30.0

    app.controls["scale"].value = 20.0
    strong = app.last_state
    assert app.renders == 2 and strong["scale"] == 20.0
    assert not np.allclose(strong["images"], first["images"])
    assert strong["pixel_std"] > first["pixel_std"]  # big s blows the samples up: saturation

    app.controls["rescale"].value = 1.0
    assert app.renders == 3 and app.last_state["rescale"] == 1.0
    assert app.last_state["pixel_std"] < strong["pixel_std"]  # the rescale pulls the spread back

    app.controls["digit"].value = 7
    assert app.renders == 4 and app.last_state["digit"] == 7
    assert not np.allclose(app.last_state["images"], strong["images"])

    # back to the start: the cached samples are the same ones
    app.controls["digit"].value, app.controls["rescale"].value, app.controls["scale"].value = 3, 0.0, 1.0
    assert np.array_equal(app.last_state["images"], first["images"])


def test_guidance_app_with_a_classifier_reports_accuracy(model):
    classifier = build_model("classifier", in_channels=1, num_classes=10, width=4, feature_dim=8).eval()
    app = widgets.guidance_app(model, linear_schedule(100), classifier=classifier, n=3, steps=3)
    assert 0.0 <= app.last_state["accuracy"] <= 1.0
    low, high = app.last_state["accuracy_interval"]
    assert low <= app.last_state["accuracy"] <= high
    assert "classifier reads" in app.last_figure.axes[0].get_title()


def test_guidance_app_is_reproducible_and_checks_its_arguments(model):
    schedule = linear_schedule(100)
    a = widgets.guidance_app(model, schedule, n=2, steps=2, seed=5).last_state["images"]
    b = widgets.guidance_app(model, schedule, n=2, steps=2, seed=5).last_state["images"]
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="^model=.*conditional"):
        widgets.guidance_app(lambda x, t: x, schedule)
    with pytest.raises(ValueError, match="^digit=10"):
        widgets.guidance_app(model, schedule, digit=10)
    with pytest.raises(ValueError, match="^scale=31"):
        widgets.guidance_app(model, schedule, scale=31.0)
    with pytest.raises(ValueError, match="^schedule="):
        widgets.guidance_app(model, "linear")
    small = widgets.guidance_app(model, schedule, n=1, steps=1, shape=(3, 6, 6))
    assert small.last_state["images"].shape == (1, 3, 6, 6)

"""The flow-vs-VP app (notebook 11), headless: moving a control redraws, and the state is what the package's
samplers return for the same start."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from diffusion_course import widgets  # noqa: E402
from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture  # noqa: E402
from diffusion_course.parameterizations import MixtureVelocity  # noqa: E402
from diffusion_course.sampling import run_flow_sampler, run_sampler  # noqa: E402
from diffusion_course.schedules import linear_schedule  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEDULE = linear_schedule(1000)


@pytest.fixture(scope="module")
def app():
    x_1 = torch.randn(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    oracle = GaussianMixtureOracle(toy_mixture(), SCHEDULE)
    return widgets.flow_vs_vp_app(MixtureVelocity(toy_mixture()), oracle, SCHEDULE, x_1, nfe=10, max_nfe=20,
                                  reference_steps=200), x_1, oracle  # fmt: skip


def test_state_is_the_samplers_output_at_the_budget(app):
    app, x_1, oracle = app
    for sampler, nfe, steps in (("euler", 10, 10), ("heun", 10, 5), ("midpoint", 7, 3)):
        app.controls["sampler"].value = sampler
        app.controls["nfe"].value = nfe
        state = app.last_state
        assert state["steps"] == steps and state["used_nfe"] <= nfe
        flow = run_flow_sampler(sampler, MixtureVelocity(toy_mixture()), x_1, steps)
        vp = run_sampler(sampler, oracle, x_1, SCHEDULE, steps)
        assert torch.equal(torch.from_numpy(state["flow"]), flow) and torch.equal(
            torch.from_numpy(state["VP"]), vp
        )


def test_more_evaluations_mean_less_error_on_both_paths(app):
    app, _, _ = app
    app.controls["sampler"].value = "euler"
    app.controls["nfe"].value = 2
    coarse = dict(app.last_state)
    app.controls["nfe"].value = 20
    fine = app.last_state
    assert fine["flow_error"] < coarse["flow_error"] and fine["VP_error"] < coarse["VP_error"]
    assert app.last_figure is not None and app.renders >= 3


def test_bad_arguments_are_refused():
    x_1 = torch.randn(4, 2)
    oracle = GaussianMixtureOracle(toy_mixture(), SCHEDULE)
    with pytest.raises(ValueError, match="sampler='ddim'"):
        widgets.flow_vs_vp_app(MixtureVelocity(toy_mixture()), oracle, SCHEDULE, x_1, sampler="ddim")
    with pytest.raises(ValueError, match="nfe=50"):
        widgets.flow_vs_vp_app(MixtureVelocity(toy_mixture()), oracle, SCHEDULE, x_1, nfe=50, max_nfe=40)

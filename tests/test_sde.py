"""The reverse-time SDE (Euler–Maruyama) and the predictor–corrector sampler."""

import math

import pytest
import torch

from diffusion_course.generation import EvalCounter
from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import ddim_sample, pc_sample, run_sampler, sde_sample, timestep_grid
from diffusion_course.sampling.registry import nfe
from diffusion_course.schedules import cosine_schedule, linear_schedule
from tests.test_ddpm import assert_mixture_statistics

pytestmark = pytest.mark.usefixtures("one_thread")


class PointMass(torch.nn.Module):
    """The exact ε of data that is always c."""

    def __init__(self, c, schedule):
        super().__init__()
        self.c, self.schedule, self.num_classes = c, schedule, None

    def forward(self, x, t):
        ab = self.schedule.alpha_bar[t].to(x).reshape(-1, *([1] * (x.ndim - 1)))
        return (x - ab.sqrt() * self.c) / (1 - ab).sqrt()


@pytest.mark.parametrize("sampler", [sde_sample, pc_sample])
@pytest.mark.parametrize("steps", [1, 3, 50])
def test_the_exact_one_point_eps_gives_the_point_back(sampler, steps):
    schedule = linear_schedule(1000)
    c = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    x_T = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = sampler(PointMass(c, schedule), x_T, schedule, timestep_grid(1000, steps),
                  generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert torch.allclose(out, c.expand(64, 2), atol=1e-9)


def test_one_euler_maruyama_step_is_the_formula():
    schedule = linear_schedule(100)
    x_T = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    model = lambda x, t: torch.tanh(x)  # noqa: E731
    ts = [60, 20]
    out, traj = sde_sample(model, x_T, schedule, ts, generator=torch.Generator().manual_seed(3),
                           return_trajectory=True)  # fmt: skip
    ab_t, ab_prev = float(schedule.alpha_bar[60]), float(schedule.alpha_bar[20])
    h = math.log(ab_prev / ab_t)
    z = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = x_T + h * (0.5 * x_T - torch.tanh(x_T) / math.sqrt(1 - ab_t)) + math.sqrt(h) * z
    assert torch.allclose(traj.xs[1], expected, atol=1e-12)
    x = traj.xs[1]
    assert torch.allclose(out, (x - math.sqrt(1 - ab_prev) * torch.tanh(x)) / math.sqrt(ab_prev))


@pytest.mark.parametrize("name, steps", [("sde", 200), ("pc", 100)])
def test_oracle_samples_have_the_mixture_statistics(name, steps):
    mixture, schedule = toy_mixture(), cosine_schedule(200)
    g = torch.Generator().manual_seed(0)
    x_T = mixture.noised(float(schedule.alpha_bar[-1])).sample(4000, generator=g)
    x = run_sampler(name, GaussianMixtureOracle(mixture, schedule), x_T, schedule, steps, generator=g)
    assert_mixture_statistics(x, mixture)


def test_the_corrector_pulls_a_wrong_model_back_towards_the_data():
    """With ε scaled by 0.8 (a model that under-denoises), the Langevin corrector's samples land closer to
    the mixture's covariance than the deterministic DDIM's and the plain SDE's, at the same steps."""
    mixture, schedule = toy_mixture(), cosine_schedule(200)
    oracle = GaussianMixtureOracle(mixture, schedule)
    wrong = lambda x, t: 0.8 * oracle(x, t)  # noqa: E731
    x_T = mixture.noised(float(schedule.alpha_bar[-1])).sample(
        4000, generator=torch.Generator().manual_seed(0)
    )
    ts = timestep_grid(200, 50)
    outs = {
        "ddim": ddim_sample(wrong, x_T, schedule, ts),
        "sde": sde_sample(wrong, x_T, schedule, ts, generator=torch.Generator().manual_seed(1)),
        "pc": pc_sample(wrong, x_T, schedule, ts, generator=torch.Generator().manual_seed(1)),
    }
    error = {k: float((torch.cov(v.T) - mixture.covariance()).norm()) for k, v in outs.items()}
    assert error["pc"] < error["sde"] < error["ddim"], error


def test_same_seed_same_samples_and_the_evaluation_count():
    schedule = linear_schedule(100)
    oracle = GaussianMixtureOracle(toy_mixture(), schedule)
    x_T = torch.randn(16, 2)
    grid = timestep_grid(100, 7)
    a, b = (
        pc_sample(oracle, x_T, schedule, grid, generator=torch.Generator().manual_seed(5)) for _ in range(2)
    )
    assert torch.equal(a, b)
    counter = EvalCounter(oracle)
    pc_sample(counter, x_T, schedule, timestep_grid(100, 7), generator=torch.Generator().manual_seed(5))
    assert counter.rows == 16 * nfe("pc", 7) == 16 * 13
    counter = EvalCounter(oracle)
    sde_sample(counter, x_T, schedule, timestep_grid(100, 7), generator=torch.Generator().manual_seed(5))
    assert counter.rows == 16 * nfe("sde", 7) == 16 * 7


@pytest.mark.parametrize("snr", [0.0, -1.0, float("nan")])
def test_pc_names_a_bad_snr(snr):
    schedule = linear_schedule(10)
    with pytest.raises(ValueError, match="snr"):
        pc_sample(lambda x, t: x, torch.randn(2, 2), schedule, [5, 2], snr=snr)

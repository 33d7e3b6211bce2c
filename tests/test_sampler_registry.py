import pytest
import torch

from diffusion_course.sampling import ddim_sample, timestep_grid
from diffusion_course.sampling.registry import SAMPLERS, nfe, run_sampler
from diffusion_course.schedules import linear_schedule


def eps_zero(x, t):
    return torch.zeros_like(x)


def test_run_sampler_matches_a_direct_call():
    s = linear_schedule(100)
    x_T = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    a = run_sampler("ddim", eps_zero, x_T, s, 10, strategy="linspace", eta=0.5,
                    generator=torch.Generator().manual_seed(1))  # fmt: skip
    b = ddim_sample(eps_zero, x_T, s, timestep_grid(100, 10, "linspace"), eta=0.5,
                    generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert torch.equal(a, b)
    assert {"ddpm", "ddim"} <= set(SAMPLERS)
    assert nfe("ddim", 50) == 50
    import diffusion_course.sampling  # noqa: F401  (registers the solvers)

    assert nfe("heun", 10) == 19 and nfe("dpmpp2m", 10) == 10  # Heun's last step has no correction


def test_run_sampler_errors():
    s = linear_schedule(10)
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="^sampler='plms'.*known samplers"):
        run_sampler("plms", eps_zero, x, s, 5)
    with pytest.raises(ValueError, match="^eta=0.5.*'ddpm' takes"):
        run_sampler("ddpm", eps_zero, x, s, 5, eta=0.5)
    with pytest.raises(ValueError, match="^steps=11"):
        run_sampler("ddim", eps_zero, x, s, 11)

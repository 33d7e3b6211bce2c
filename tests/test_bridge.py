"""diffusers' schedulers driving course ε-models: where the definitions agree (to float32 rounding) and each
documented difference, reproduced with its size and direction. Uses the exact 2-D oracle, so every number is
about the samplers alone."""

import math
import sys

import pytest
import torch

from diffusion_course.bridge import check_diffusers_installed

# a learner without diffusers skips these; under CI (CI=true) a missing diffusers fails instead
if not check_diffusers_installed():
    pytest.skip("diffusers is not installed", allow_module_level=True)

# diffusers' schedulers call np.array() on torch tensors, which newer numpy flags; harmless here
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

import diffusers  # noqa: E402

from diffusion_course import linear_schedule, scaled_linear_schedule  # noqa: E402
from diffusion_course.bridge import (  # noqa: E402
    INSTALL_HINT,
    ddim_landing_points,
    diffusers_available,
    diffusers_config_from,
    diffusers_ddim_prev_timestep,
    make_diffusers_scheduler,
    require_diffusers,
    run_diffusers_scheduler,
    use_float64_alpha_bar,
)
from diffusion_course.exercises.bridge import DDIM_DEFAULTS  # noqa: E402
from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture  # noqa: E402
from diffusion_course.sampling import (  # noqa: E402
    ddim_sample,
    ddim_step,
    ddpm_sample,
    dpmpp_2m_sample,
    euler_sample,
    timestep_grid,
)
from diffusion_course.sampling.common import alpha_bar_at  # noqa: E402

S1000 = linear_schedule(1000)
S100 = linear_schedule(100)
S20 = linear_schedule(20, beta_end=0.2)  # all-steps runs: few steps, ᾱ_19 = 0.13
ORACLE = {n: GaussianMixtureOracle(toy_mixture(), s) for n, s in ((1000, S1000), (100, S100), (20, S20))}


def x_T(n=64, dtype=torch.float32, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


def max_diff(a, b):
    return float((a.double() - b.double()).abs().max())


# ---------------------------------------------------------------- config and construction


def test_config_holds_the_agreeing_options():
    config = diffusers_config_from(S100, timestep_spacing="linspace")
    assert config["num_train_timesteps"] == 100 and config["prediction_type"] == "epsilon"
    assert config["trained_betas"] == S100.betas.tolist()
    assert config["clip_sample"] is False and config["set_alpha_to_one"] is True
    assert config["variance_type"] == "fixed_small" and config["timestep_spacing"] == "linspace"
    assert config["algorithm_type"] == "dpmsolver++" and config["solver_order"] == 2
    assert config["final_sigmas_type"] == "zero" and config["lower_order_final"] is True
    for kind, cls in [
        ("ddpm", diffusers.DDPMScheduler),
        ("ddim", diffusers.DDIMScheduler),
        ("dpmpp2m", diffusers.DPMSolverMultistepScheduler),
        ("euler", diffusers.EulerDiscreteScheduler),
    ]:
        scheduler = make_diffusers_scheduler(kind, S100)
        assert type(scheduler) is cls and scheduler.config.num_train_timesteps == 100
        # diffusers holds β in float32: equal to ours to float32 rounding, not bitwise
        assert scheduler.betas.dtype == torch.float32
        torch.testing.assert_close(scheduler.alphas_cumprod.double(), S100.alpha_bar, rtol=1e-6, atol=0)
    assert type(make_diffusers_scheduler("HeunDiscreteScheduler", S100)).__name__ == "HeunDiscreteScheduler"


def test_defaults_that_the_config_overrides():
    """The defaults documented in docs/DIFFUSERS.md, read from the installed version."""
    ddim, ddpm = diffusers.DDIMScheduler(), diffusers.DDPMScheduler()
    assert ddim.config.clip_sample is True and ddpm.config.clip_sample is True
    assert ddim.config.timestep_spacing == "leading" and ddpm.config.timestep_spacing == "leading"
    assert ddim.config.set_alpha_to_one is True and ddpm.config.variance_type == "fixed_small"
    dpm, euler = diffusers.DPMSolverMultistepScheduler(), diffusers.EulerDiscreteScheduler()
    assert dpm.config.timestep_spacing == "linspace" and euler.config.timestep_spacing == "linspace"
    assert dpm.config.lower_order_final is True and dpm.config.final_sigmas_type == "zero"
    # the exercise checker's copy of DDIMScheduler's defaults matches the installed version
    import inspect

    params = inspect.signature(diffusers.DDIMScheduler.__init__).parameters
    for key, value in DDIM_DEFAULTS.items():
        assert params[key].default == value, key


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: make_diffusers_scheduler("ddim", S100, clip_samples=False), ["clip_samples", "takes none"]),
        (lambda: make_diffusers_scheduler("ddim", S100, variance_type="fixed_small"), ["variance_type"]),
        (lambda: make_diffusers_scheduler("plms", S100), ["kind='plms'", "'ddim'"]),
        (lambda: diffusers_config_from("linear"), ["schedule", "NoiseSchedule"]),
        (lambda: diffusers_ddim_prev_timestep(1000, 1000, 10), ["t=1000", "0..999"]),
        (lambda: diffusers_ddim_prev_timestep(5, 10, 11), ["steps=11"]),
        (lambda: use_float64_alpha_bar(make_diffusers_scheduler("euler", S100), S100), ["EulerDiscrete"]),
        (lambda: use_float64_alpha_bar(make_diffusers_scheduler("ddim", S100), S1000), ["T = 100"]),
    ],
)
def test_bad_input_is_named(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_driver_refuses_what_an_index_model_cannot_take():
    oracle = ORACLE[1000]
    euler = make_diffusers_scheduler("euler", S1000, timestep_spacing="linspace")
    with pytest.raises(ValueError, match="fractional timestep"):  # (T−1)/(S−1) = 999/49
        run_diffusers_scheduler(euler, oracle, x_T(8), steps=50)
    ddim = make_diffusers_scheduler("ddim", S1000)
    with pytest.raises(ValueError, match="either steps or timesteps"):
        run_diffusers_scheduler(ddim, oracle, x_T(8), steps=10, timesteps=[999, 0])
    with pytest.raises(ValueError, match="no custom timesteps"):
        run_diffusers_scheduler(ddim, oracle, x_T(8), timesteps=[999, 500, 0])
    with pytest.raises(ValueError, match="unconditional"):
        run_diffusers_scheduler(ddim, oracle, x_T(8), labels=torch.zeros(8, dtype=torch.long), steps=5)
    with pytest.raises(ValueError, match="x_T"):
        run_diffusers_scheduler(ddim, oracle, torch.full((4, 2), math.nan), steps=5)


def test_missing_diffusers_is_reported_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` raise ImportError
    assert not diffusers_available()
    with pytest.raises(ImportError, match="diffusers"):
        require_diffusers()
    with pytest.raises(ImportError) as err:
        make_diffusers_scheduler("ddim", S100)
    assert INSTALL_HINT in str(err.value)


# ---------------------------------------------------------------- where the definitions agree


@pytest.mark.parametrize("T, steps", [(1000, 10), (1000, 25), (100, 20)])
def test_ddim_trailing_agrees_when_steps_divide_T(T, steps):
    schedule, oracle = (S1000, ORACLE[1000]) if T == 1000 else (S100, ORACLE[100])
    scheduler = make_diffusers_scheduler("ddim", schedule)
    theirs, visited = run_diffusers_scheduler(scheduler, oracle, x_T(), steps=steps, return_timesteps=True)
    assert torch.equal(visited, timestep_grid(T, steps, "trailing"))
    ours = ddim_sample(oracle, x_T(), schedule, visited)
    assert max_diff(theirs, ours) < 1e-5
    # the remaining difference is diffusers' float32 ᾱ: with ours swapped in, float64 runs agree to rounding
    use_float64_alpha_bar(scheduler, schedule)
    theirs64 = run_diffusers_scheduler(scheduler, oracle, x_T(dtype=torch.float64), steps=steps)
    ours64 = ddim_sample(oracle, x_T(dtype=torch.float64), schedule, visited)
    assert max_diff(theirs64, ours64) < 1e-12


def test_ddim_linspace_agrees_only_with_all_steps_and_leading_agrees_on_its_grid():
    scheduler = make_diffusers_scheduler("ddim", S20, timestep_spacing="linspace")
    theirs = run_diffusers_scheduler(scheduler, ORACLE[20], x_T(), steps=20)
    assert max_diff(theirs, ddim_sample(ORACLE[20], x_T(), S20, timestep_grid(20, 20, "linspace"))) < 1e-5
    oracle = ORACLE[100]
    scheduler = make_diffusers_scheduler("ddim", S100, timestep_spacing="leading")
    theirs, visited = run_diffusers_scheduler(scheduler, oracle, x_T(), steps=10, return_timesteps=True)
    assert torch.equal(visited, timestep_grid(100, 10, "leading"))
    assert max_diff(theirs, ddim_sample(oracle, x_T(), S100, visited)) < 1e-5


def test_ddim_eta_one_draws_the_same_noise():
    oracle = ORACLE[1000]
    scheduler = make_diffusers_scheduler("ddim", S1000)
    theirs = run_diffusers_scheduler(scheduler, oracle, x_T(), generator=gen(), steps=10, eta=1.0)
    ours = ddim_sample(oracle, x_T(), S1000, timestep_grid(1000, 10), eta=1.0, generator=gen())
    assert max_diff(theirs, ours) < 1e-4
    other_seed = ddim_sample(oracle, x_T(), S1000, timestep_grid(1000, 10), eta=1.0, generator=gen(2))
    assert max_diff(theirs, other_seed) > 0.1  # so the agreement is not an accident


def test_ddpm_all_steps_fixed_small_same_noise():
    oracle = ORACLE[20]
    scheduler = make_diffusers_scheduler("ddpm", S20)
    theirs = run_diffusers_scheduler(scheduler, oracle, x_T(dtype=torch.float64), generator=gen())
    ours = ddpm_sample(oracle, x_T(dtype=torch.float64), S20, generator=gen())
    # float32 ᾱ: diffusers recomputes β_t = 1 − ᾱ_t/ᾱ_(t−1) in float32 (≈ 1e-3 relative for β ≈ 1e-4)
    assert max_diff(theirs, ours) < 1e-4
    other_seed = ddpm_sample(oracle, x_T(dtype=torch.float64), S20, generator=gen(2))
    assert max_diff(theirs, other_seed) > 0.1  # the same z's, not just the same distribution
    use_float64_alpha_bar(scheduler, S20)
    theirs = run_diffusers_scheduler(scheduler, oracle, x_T(dtype=torch.float64), generator=gen())
    assert max_diff(theirs, ours) < 1e-12
    # a strided DDPM (its previous timestep is the next grid point) agrees too
    scheduler = use_float64_alpha_bar(make_diffusers_scheduler("ddpm", S1000), S1000)
    theirs, visited = run_diffusers_scheduler(
        scheduler, ORACLE[1000], x_T(dtype=torch.float64), generator=gen(), steps=10, return_timesteps=True
    )
    ours = ddpm_sample(ORACLE[1000], x_T(dtype=torch.float64), S1000, visited, generator=gen())
    assert max_diff(theirs, ours) < 1e-8  # ᾱ_t/ᾱ_prev and 1 − … are formed in another order


@pytest.mark.parametrize("steps", [10, 20])
def test_dpm_solver_pp_2m_agrees(steps):
    oracle = ORACLE[1000]
    for lower_order_final in (True, False):  # irrelevant with final_sigmas_type="zero" (forced first order)
        scheduler = make_diffusers_scheduler("dpmpp2m", S1000, lower_order_final=lower_order_final)
        theirs, visited = run_diffusers_scheduler(
            scheduler, oracle, x_T(), steps=steps, return_timesteps=True
        )
        assert torch.equal(visited, timestep_grid(1000, steps, "trailing"))
        ours = dpmpp_2m_sample(oracle, x_T(), S1000, visited)
        assert max_diff(theirs, ours) < 1e-5


def test_dpm_solver_with_labels():
    oracle = GaussianMixtureOracle(toy_mixture(), S1000, conditional=True)
    labels = torch.arange(8) % 4
    scheduler = make_diffusers_scheduler("dpmpp2m", S1000)
    theirs = run_diffusers_scheduler(scheduler, oracle, x_T(8), labels=labels, steps=10)
    ours = dpmpp_2m_sample(oracle, x_T(8), S1000, timestep_grid(1000, 10), labels=labels)
    assert max_diff(theirs, ours) < 1e-5
    assert max_diff(theirs, dpmpp_2m_sample(oracle, x_T(8), S1000, timestep_grid(1000, 10))) > 0.01


def test_euler_agrees_from_the_exact_start_and_is_ddim():
    oracle = ORACLE[1000]
    scheduler = make_diffusers_scheduler("euler", S1000)
    ts = timestep_grid(1000, 10)
    exact_start = x_T() * float((1 / S1000.alpha_bar[ts[0]]).sqrt())  # x̃ = x/√ᾱ, the σ frame
    theirs = run_diffusers_scheduler(scheduler, oracle, exact_start, steps=10, scale_initial=False)
    assert max_diff(theirs, euler_sample(oracle, x_T(), S1000, ts)) < 1e-5
    assert max_diff(theirs, ddim_sample(oracle, x_T(), S1000, ts)) < 1e-5


# ---------------------------------------------------------------- documented differences


def diffusers_rule_ddim(oracle, x, schedule, grid, final_alpha_bar=1.0):
    """DDIM as diffusers computes it: from each grid t to ᾱ at t − T // S (final ᾱ when negative)."""
    T, S = schedule.T, len(grid)
    for t in grid.tolist():
        prev = diffusers_ddim_prev_timestep(t, T, S)
        ab_prev = alpha_bar_at(schedule, prev) if prev >= 0 else final_alpha_bar
        eps = oracle(x, torch.full((x.shape[0],), t))
        x, _ = ddim_step(x, eps, alpha_bar_at(schedule, t), ab_prev, 0.0)
    return x


@pytest.mark.parametrize("spacing, steps", [("linspace", 10), ("trailing", 15)])
def test_ddim_previous_timestep_is_t_minus_T_over_S(spacing, steps):
    oracle = ORACLE[1000]
    scheduler = make_diffusers_scheduler("ddim", S1000, timestep_spacing=spacing)
    theirs, grid = run_diffusers_scheduler(scheduler, oracle, x_T(), steps=steps, return_timesteps=True)
    landing = ddim_landing_points(grid, 1000)
    off_grid = [(t, land, nxt) for t, land, nxt in landing if land != nxt]
    assert off_grid, landing
    if spacing == "linspace":
        assert landing[0] == (999, 899, 888) and landing[-2] == (111, 11, 0)
    ours = ddim_sample(oracle, x_T(), S1000, grid)
    assert max_diff(theirs, ours) > 0.01  # a different sampler on the same grid
    assert max_diff(theirs, diffusers_rule_ddim(oracle, x_T(), S1000, grid)) < 1e-5  # and this is the rule


def test_leading_never_visits_T_minus_1():
    for steps in (2, 10, 50):
        scheduler = make_diffusers_scheduler("ddim", S1000, timestep_spacing="leading")
        scheduler.set_timesteps(steps)
        first = int(scheduler.timesteps[0])
        assert first == 1000 - 1000 // steps < 999
        assert math.sqrt(S1000.alpha_bar[first]) > 1.2 * math.sqrt(S1000.alpha_bar[999])
        assert int(scheduler.timesteps[-1]) == 0  # and spends its last step on ᾱ_0 → 1
    scheduler = make_diffusers_scheduler("ddim", S1000, timestep_spacing="leading")
    theirs = run_diffusers_scheduler(scheduler, ORACLE[1000], x_T(), steps=10)
    trailing = ddim_sample(ORACLE[1000], x_T(), S1000, timestep_grid(1000, 10))
    assert max_diff(theirs, trailing) > 0.01


def test_set_alpha_to_one_false_stops_at_alpha_bar_0():
    oracle = ORACLE[1000]
    ts = timestep_grid(1000, 10)
    scheduler = make_diffusers_scheduler("ddim", S1000, set_alpha_to_one=False)
    theirs = run_diffusers_scheduler(scheduler, oracle, x_T(dtype=torch.float64), steps=10)
    ours, traj = ddim_sample(oracle, x_T(dtype=torch.float64), S1000, ts, return_trajectory=True)
    ab0 = float(S1000.alpha_bar[0])
    eps_last = oracle(traj.xs[-2], torch.full((64,), int(ts[-1])))
    expected = math.sqrt(ab0) * ours + math.sqrt(1 - ab0) * eps_last  # x at ᾱ_0, not at ᾱ = 1
    assert max_diff(theirs, expected) < 1e-5
    gap = (theirs - ours).norm(dim=1).mean()
    assert 0.5 * math.sqrt(1 - ab0) < gap < 2 * math.sqrt(1 - ab0)  # ≈ 0.01


def test_clip_sample_clamps_every_output_into_minus_one_one():
    oracle = ORACLE[1000]
    ours = ddim_sample(oracle, x_T(500), S1000, timestep_grid(1000, 10))
    for kind in ("ddim", "ddpm"):
        scheduler = make_diffusers_scheduler(kind, S1000, clip_sample=True)
        theirs = run_diffusers_scheduler(scheduler, oracle, x_T(500), generator=gen(), steps=10)
        assert float(theirs.abs().max()) <= 1.0  # the last step returns the clamped x̂₀
    assert (ours.abs() > 1).any(dim=1).double().mean() > 0.1  # the toy mixture has mass beyond ±1
    scheduler = make_diffusers_scheduler("ddim", S1000, clip_sample=True)
    assert max_diff(run_diffusers_scheduler(scheduler, oracle, x_T(500), steps=10), ours) > 0.3


def test_dpm_solver_final_step_options():
    oracle = ORACLE[1000]
    ours = dpmpp_2m_sample(oracle, x_T(), S1000, timestep_grid(1000, 10))
    gaps = {}
    for lower_order_final in (True, False):
        scheduler = make_diffusers_scheduler(
            "dpmpp2m", S1000, final_sigmas_type="sigma_min", lower_order_final=lower_order_final
        )
        theirs = run_diffusers_scheduler(scheduler, oracle, x_T(), steps=10)
        gaps[lower_order_final] = float((theirs - ours).norm(dim=1).mean())
    # first order to σ_min: stops at ᾱ_0, a gap of ≈ √(1 − ᾱ_0) = 0.01; second order there: unstable
    assert gaps[True] < 0.03 and gaps[False] > 0.1


def test_dpm_solver_and_ddim_spacings_of_the_same_name_differ():
    grids = {}
    for kind in ("ddim", "dpmpp2m"):
        for spacing in ("linspace", "leading"):
            scheduler = make_diffusers_scheduler(kind, S1000, timestep_spacing=spacing)
            scheduler.set_timesteps(10)
            grids[kind, spacing] = scheduler.timesteps.tolist()
    assert grids["ddim", "linspace"] == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert grids["dpmpp2m", "linspace"] == [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
    assert grids["ddim", "leading"][:2] == [900, 800] and grids["dpmpp2m", "leading"][:2] == [900, 810]


def test_euler_starts_from_sigma_max_instead_of_the_exact_frame():
    scheduler = make_diffusers_scheduler("euler", S100)
    scheduler.set_timesteps(10)
    sigma_max = math.sqrt((1 - S100.alpha_bar[99]) / S100.alpha_bar[99])
    assert float(scheduler.init_noise_sigma) == pytest.approx(sigma_max, rel=1e-5)  # not √(σ² + 1)
    theirs = run_diffusers_scheduler(scheduler, ORACLE[100], x_T(), steps=10)
    ours = euler_sample(ORACLE[100], x_T(), S100, timestep_grid(100, 10))
    assert math.sqrt(sigma_max**2 + 1) / sigma_max > 1.2  # ᾱ_99 = 0.36 for linear T = 100
    assert max_diff(theirs, ours) > 0.1
    # the effect shrinks as σ_max grows: Stable Diffusion's schedule (σ_max ≈ 14.6)
    sd = scaled_linear_schedule(1000)
    scheduler = make_diffusers_scheduler("euler", sd)
    oracle = GaussianMixtureOracle(toy_mixture(), sd)
    theirs = run_diffusers_scheduler(scheduler, oracle, x_T(), steps=10)
    gap = max_diff(theirs, euler_sample(oracle, x_T(), sd, timestep_grid(1000, 10)))
    assert 1e-4 < gap < 0.05


# --- flow matching: FlowMatchEulerDiscreteScheduler --------------------------------------------------------


def test_flow_match_euler_is_our_flow_euler_on_the_same_grid():
    from diffusion_course.bridge import make_flow_scheduler, run_diffusers_flow_scheduler
    from diffusion_course.parameterizations import MixtureVelocity
    from diffusion_course.sampling import flow_time_grid, run_flow_sampler

    velocity = MixtureVelocity(toy_mixture())
    x_1 = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    ours = run_flow_sampler("euler", velocity, x_1, 10)
    theirs, sigmas = run_diffusers_flow_scheduler(make_flow_scheduler(), velocity, x_1,
                                                  sigmas=flow_time_grid(10)[:-1])  # fmt: skip
    assert torch.allclose(sigmas, flow_time_grid(10), atol=1e-6)
    assert float((ours - theirs).abs().max()) < 1e-5  # the scheduler steps in float32
    # its own grid ends the last interior step at σ = 1/1000, not 1/10: a different discretisation
    default, default_sigmas = run_diffusers_flow_scheduler(make_flow_scheduler(), velocity, x_1, steps=10)
    assert math.isclose(float(default_sigmas[-2]), 0.001, rel_tol=1e-4) and float(default_sigmas[0]) == 1.0
    assert float((ours - default).abs().max()) > 1e-2
    ours_there = run_flow_sampler("euler", velocity, x_1, times=default_sigmas)
    assert float((ours_there - default).abs().max()) < 1e-5
    # the shift maps t ↦ s t / (1 + (s − 1) t), as flow_time_grid does
    _, shifted = run_diffusers_flow_scheduler(make_flow_scheduler(shift=3.0), velocity, x_1,
                                              sigmas=flow_time_grid(4)[:-1])  # fmt: skip
    assert torch.allclose(shifted, flow_time_grid(4, shift=3.0), atol=1e-6)

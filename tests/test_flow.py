"""Flow matching: the velocity model, its loss, the flow ODE samplers and their tie to DDIM."""

import json
import math
import re

import pytest
import torch

from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.cli import main
from diffusion_course.generation import EvalCounter, generate_samples
from diffusion_course.models import FlowVelocity, build_model
from diffusion_course.models.flow import FlowAsEps
from diffusion_course.oracle import GaussianMixture, GaussianMixtureOracle, toy_mixture
from diffusion_course.parameterizations import (
    MixtureVelocity,
    flow_time_from_alpha_bar,
    mixture_flow_velocity,
)
from diffusion_course.sampling import CFG, flow_time_grid, run_flow_sampler, run_sampler, timestep_grid
from diffusion_course.sampling.registry import FLOW_SAMPLERS, SAMPLERS, get_sampler
from diffusion_course.schedules import flow_matching_schedule, make_schedule
from diffusion_course.training import (
    TrainConfig,
    diffusion_loss,
    flow_matching_loss,
    flow_time_samples,
    train,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(net="mlp", dim=2, hidden=16, depth=1, time_dim=8)


def gaussian(mean=(0.5, -1.0), std=0.3) -> GaussianMixture:
    """One Gaussian N(μ, s²I): the flow map is x_t = (1−t) μ + √((1−t)² s² + t²) x_1, so x_0 = μ + s x_1."""
    cov = (std**2 * torch.eye(2, dtype=torch.float64))[None]
    return GaussianMixture(torch.tensor([mean], dtype=torch.float64), cov, torch.ones(1, dtype=torch.float64))


# --- the model -------------------------------------------------------------------------------------------


def test_flow_velocity_feeds_its_network_1000_t():
    torch.manual_seed(0)
    model = FlowVelocity(**SMALL)
    x = torch.randn(3, 2)
    t = torch.tensor([0.0, 0.25, 1.0])
    assert torch.equal(model(x, t), model.net(x, 1000.0 * t))
    assert torch.equal(model(x, 0.5), model.net(x, torch.full((3,), 500.0)))
    assert model.config["net"] == "mlp" and build_model("flow", **model.config).config == model.config


@pytest.mark.parametrize(
    "t, match",
    [
        (torch.tensor([1, 2, 3]), "floating tensor"),
        (torch.tensor([0.1, 1.5, 0.2]), r"\[0, 1\]"),
        (torch.tensor([0.1, 0.2]), r"shape \(3,\)"),
        ("half", "a time in"),
        (-0.1, r"\[0, 1\]"),
    ],
)
def test_flow_velocity_refuses_bad_times(t, match):
    with pytest.raises(ValueError, match=match):
        FlowVelocity(**SMALL)(torch.randn(3, 2), t)


def test_eps_networks_still_refuse_real_times():
    with pytest.raises(ValueError, match="integer timestep"):
        build_model("mlp", dim=2, hidden=8, depth=1)(torch.randn(2, 2), torch.tensor([0.5, 0.2]))


# --- the loss --------------------------------------------------------------------------------------------


class Recorder(torch.nn.Module):
    """Returns zero and keeps what it was called with."""

    num_classes = 3

    def forward(self, x, t, labels=None):
        self.seen = (x, t, labels)
        return torch.zeros_like(x)


@pytest.mark.parametrize("flow_time", ["logit_normal", "uniform"])
def test_flow_matching_loss_is_the_velocity_regression_of_its_draws(flow_time):
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    model = Recorder()
    loss = flow_matching_loss(model, x0, torch.zeros(64, dtype=torch.long), 0.5,
                              torch.Generator().manual_seed(1), flow_time)  # fmt: skip
    # replay the draws: t, then ε, then the label dropout
    g = torch.Generator().manual_seed(1)
    t = flow_time_samples(64, flow_time, g)
    eps = torch.randn(64, 2, generator=g)
    dropped = torch.rand(64, generator=g) < 0.5
    x_seen, t_seen, labels_seen = model.seen
    assert torch.equal(t_seen, t)
    assert torch.allclose(x_seen, (1 - t[:, None]) * x0 + t[:, None] * eps)
    assert torch.equal(labels_seen, torch.where(dropped, 3, 0))
    assert math.isclose(float(loss), float((eps - x0).pow(2).mean()), rel_tol=1e-6)


def test_logit_normal_times_are_sigmoid_of_a_standard_normal():
    t = flow_time_samples(200_000, "logit_normal", torch.Generator().manual_seed(0))
    logit = torch.log(t / (1 - t))
    assert abs(float(logit.mean())) < 0.01 and abs(float(logit.std()) - 1) < 0.01
    u = flow_time_samples(200_000, "uniform", torch.Generator().manual_seed(0))
    assert abs(float(u.mean()) - 0.5) < 0.005 and float(u.min()) >= 0 and float(u.max()) < 1
    with pytest.raises(ValueError, match="flow_time"):
        flow_time_samples(3, "beta")
    with pytest.raises(ValueError, match="flow_time"):
        TrainConfig(flow_time="lognormal")


def test_the_marginal_velocity_minimises_the_conditional_loss():
    """E‖(ε − x₀) − u(x_t)‖² = E‖u* − u‖² + C: the exact u* scores below any perturbation of it, and the gap
    is E‖δ‖² (the cross term vanishes because u* = E[ε − x₀ | x_t])."""
    mixture = toy_mixture()
    g = torch.Generator().manual_seed(0)
    x0 = mixture.sample(40_000, generator=g)
    t = ((torch.arange(40_000) % 50 + 0.5) / 50).double()  # 50 times, 800 points each (one solve per time)
    eps = torch.randn(40_000, 2, generator=g, dtype=torch.float64)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * eps
    exact = mixture_flow_velocity(mixture, x_t, t)
    delta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    loss_exact = (eps - x0 - exact).pow(2).sum(1)
    loss_off = (eps - x0 - exact - delta).pow(2).sum(1)
    gap = loss_off - loss_exact
    half = 1.96 * float(gap.std()) / math.sqrt(gap.numel())
    assert abs(float(gap.mean()) - float(delta.pow(2).sum())) < max(half, 1e-3)
    assert float(gap.mean()) - half > 0


def test_diffusion_loss_trains_a_flow_model_on_its_own_objective():
    model = FlowVelocity(**SMALL)
    x0 = torch.randn(16, 2)
    a = diffusion_loss(model, x0, None, generator=torch.Generator().manual_seed(3))
    b = flow_matching_loss(model, x0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="min_snr_gamma"):
        diffusion_loss(model, x0, None, min_snr_gamma=5.0)


def test_training_a_flow_model_on_the_mixture_learns_its_velocity():
    mixture = toy_mixture()
    points = mixture.sample(4096, generator=torch.Generator().manual_seed(0)).float()
    torch.manual_seed(0)
    model = FlowVelocity(net="mlp", dim=2, hidden=64, depth=2, time_dim=16)
    x = torch.randn(512, 2, generator=torch.Generator().manual_seed(1))
    t = torch.full((512,), 0.5)
    exact = mixture_flow_velocity(mixture, x.double(), 0.5).float()
    with torch.no_grad():
        before = float((model(x, t) - exact).pow(2).mean())
    config = TrainConfig(steps=400, batch_size=256, lr=3e-3, warmup_steps=20, ema_decay=0.99, log_every=400)
    result = train(model, points, None, None, config, progress=False)
    after = float((result.ema_model(x, t) - exact).pow(2).mean())
    assert after < 0.25 * before, (before, after)


# --- the samplers ----------------------------------------------------------------------------------------


def test_flow_samplers_are_registered_with_their_nfe():
    assert sorted(FLOW_SAMPLERS) == ["euler", "heun", "midpoint"]
    assert [FLOW_SAMPLERS[n].nfe(10) for n in ("euler", "heun", "midpoint")] == [10, 19, 20]
    assert {"euler", "heun", "midpoint"} <= set(SAMPLERS)  # the same names drive ε-models
    assert FLOW_SAMPLERS["euler"].diffusers == "FlowMatchEulerDiscreteScheduler"
    with pytest.raises(
        ValueError, match=r"known flow samplers \(for a flow model\) are euler, heun, midpoint"
    ):
        get_sampler("ddim", path="flow")


@pytest.mark.parametrize("name", ["euler", "heun", "midpoint"])
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_counted_evaluations_equal_the_declared_nfe(name, steps):
    counter = EvalCounter(MixtureVelocity(toy_mixture()))
    x = torch.randn(5, 2, dtype=torch.float64)
    out, traj = run_flow_sampler(name, counter, x, steps, return_trajectory=True)
    assert counter.rows == 5 * FLOW_SAMPLERS[name].nfe(steps)
    assert len(traj) == steps and len(traj.xs) == steps + 1 and torch.equal(traj.xs[-1], out)
    assert torch.equal(traj.timesteps, flow_time_grid(steps)[:-1])


def test_flow_time_grid_is_uniform_then_shifted():
    assert torch.allclose(flow_time_grid(4), torch.tensor([1, 0.75, 0.5, 0.25, 0], dtype=torch.float64))
    shifted = flow_time_grid(4, shift=3.0)
    assert shifted[0] == 1 and shifted[-1] == 0 and math.isclose(float(shifted[2]), 0.75)
    with pytest.raises(ValueError, match="shift"):
        flow_time_grid(4, shift=0.0)


@pytest.mark.parametrize("times", [[1.0, 0.5], [0.5, 0.7, 0.0], [1.2, 0.0], [[1.0, 0.0]]])
def test_bad_grids_are_refused(times):
    with pytest.raises(ValueError, match="times"):
        run_flow_sampler(
            "euler", MixtureVelocity(toy_mixture()), torch.randn(2, 2), times=torch.tensor(times)
        )


@pytest.mark.parametrize("name, order", [("euler", 1), ("heun", 2), ("midpoint", 2)])
def test_error_on_one_gaussian_falls_with_the_order_of_the_method(name, order):
    """x_0 = μ + s x_1 exactly; halving h divides the error by at least about 2^order (midpoint does better
    on this linear ODE: its h² error term vanishes here, and the ratio is ≈ 8)."""
    data = gaussian()
    x_1 = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = data.means[0] + 0.3 * x_1
    errors = [float((run_flow_sampler(name, MixtureVelocity(data), x_1, n) - exact).abs().max())
              for n in (8, 16, 32)]  # fmt: skip
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(math.log2(r) > order - 0.3 for r in ratios), (errors, ratios)
    assert name != "euler" or all(math.log2(r) < 1.3 for r in ratios), (errors, ratios)


def test_straight_paths_need_one_euler_step():
    """Data that is one point c: u*(x, t) = (x − c)/t, constant along each path, so one step is exact."""
    f64 = dict(dtype=torch.float64)
    point = GaussianMixture(torch.tensor([[0.3, -0.7]], **f64), 1e-12 * torch.eye(2, **f64)[None],
                            torch.ones(1, **f64))  # fmt: skip
    x_1 = torch.randn(16, 2, dtype=torch.float64)
    out = run_flow_sampler("euler", MixtureVelocity(point), x_1, 1)
    assert torch.allclose(out, point.means.expand(16, 2), atol=1e-6)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_ddim_is_euler_on_the_reparametrised_flow_ode(schedule_name):
    """x_lin = x_vp/(a+σ), t = σ/(a+σ): flow Euler with the exact velocity from x_T/(a+σ) on the mapped grid
    lands where DDIM (η = 0) with the exact ε lands, step for step."""
    schedule = make_schedule(schedule_name, 1000)
    mixture = toy_mixture()
    x_T = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grid = timestep_grid(1000, 10)
    ddim, traj = run_sampler("ddim", GaussianMixtureOracle(mixture, schedule), x_T, schedule, 10, eta=0.0,
                             return_trajectory=True)  # fmt: skip
    ab = schedule.alpha_bar.double()[grid]
    times = torch.cat([flow_time_from_alpha_bar(ab), torch.zeros(1, dtype=torch.float64)])
    scale = ab.sqrt() + (1 - ab).sqrt()
    flow, ftraj = run_flow_sampler("euler", MixtureVelocity(mixture), x_T / scale[0], times=times,
                                   return_trajectory=True)  # fmt: skip
    assert torch.allclose(flow, ddim, atol=1e-9)
    for i in range(1, 10):
        assert torch.allclose(ftraj.xs[i] * scale[i], traj.xs[i], atol=1e-9)


# --- guidance and the model kinds ------------------------------------------------------------------------


def test_guidance_on_a_flow_model_combines_velocities():
    torch.manual_seed(0)
    model = FlowVelocity(net="mlp", dim=2, hidden=16, depth=1, time_dim=8, num_classes=3)
    x, labels = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
    t = torch.full((4,), 0.4)
    u_c, u_u = model(x, t, labels), model(x, t)
    assert torch.allclose(CFG(model, 3.0)(x, t, labels), u_u + 3.0 * (u_c - u_u), atol=1e-6)
    counter = EvalCounter(model)
    a = run_flow_sampler("heun", CFG(counter, 1.0), x, 3, labels=labels)
    b = run_flow_sampler("heun", model, x, 3, labels=labels)
    assert torch.allclose(a, b, atol=1e-6) and counter.rows == 2 * 4 * 5


# --- the command line: the same sampler names for every model kind ---------------------------------------


@pytest.fixture(scope="module")
def flow_checkpoint(tmp_path_factory) -> str:
    """A conditional flow model trained for 4 steps (config test-flow): its stem path."""
    out = tmp_path_factory.mktemp("flow")
    assert main(["train", "--config", "test-flow", "--out", str(out), "--quiet", "--threads", "1"]) == 0
    return str(out / "test-flow")


def test_a_flow_checkpoint_records_no_schedule_and_loads_as_a_velocity_model(flow_checkpoint):
    checkpoint = load_checkpoint(flow_checkpoint, device="cpu")
    assert isinstance(checkpoint.model, FlowVelocity) and checkpoint.schedule is None
    assert (
        checkpoint.info["model"]["kind"] == "flow"
        and checkpoint.info["train_config"]["flow_time"] == "logit_normal"
    )


@pytest.mark.parametrize("sampler", ["euler", "heun", "midpoint"])
@pytest.mark.parametrize("guidance", [None, 2.0])
def test_evaluate_runs_a_flow_model_with_the_sampler_names_of_every_kind(flow_checkpoint, capsys, sampler,
                                                                         guidance):  # fmt: skip
    extra = [] if guidance is None else ["--guidance", str(guidance)]
    argv = ["evaluate", "--checkpoint", flow_checkpoint, "--sampler", sampler, "--steps", "3", "--n", "10"]
    assert main([*argv, "--json", "--quiet", *extra]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["nfe"] == FLOW_SAMPLERS[sampler].nfe(3) * (1 if guidance is None else 2)
    assert record["strategy"] is None and record["sampler"] == sampler
    assert 0.0 <= record["label_accuracy_low"] <= record["label_accuracy"] <= record["label_accuracy_high"]


@pytest.mark.parametrize("sampler", ["euler", "heun", "midpoint"])
def test_the_same_names_run_an_eps_model(sampler):
    checkpoint = load_checkpoint("mnist-cond", device="cpu")
    counter = EvalCounter(checkpoint.model)
    generate_samples(checkpoint, sampler, 2, n=2, eps_model=counter)
    assert counter.rows == 2 * SAMPLERS[sampler].nfe(2)


def test_flow_sampling_counts_evaluations_and_honours_shift(flow_checkpoint):
    checkpoint = load_checkpoint(flow_checkpoint, device="cpu")
    counter = EvalCounter(checkpoint.model)
    a, labels = generate_samples(checkpoint, "heun", 3, n=4, eps_model=counter, guidance=2.0)
    assert counter.rows == 2 * 4 * 5 and labels.tolist() == [0, 1, 2, 3]
    b, _ = generate_samples(checkpoint, "heun", 3, n=4, guidance=2.0, shift=3.0)
    x_1 = torch.randn((4, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    c = run_flow_sampler("heun", CFG(checkpoint.model, 2.0), x_1, 3, shift=3.0, labels=labels)
    assert torch.allclose(b, c, atol=1e-6) and not torch.allclose(a, b)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--sampler", "euler", "--eta", "0.5"], r"eta=0\.5.*flow sampler 'euler' walks flow_time_grid"),
        (["--sampler", "heun", "--strategy", "log"], r"strategy='log'.*flow sampler 'heun'"),
        (["--sampler", "ddim", "--shift", "2"], r"shift=2\.0.*sampler 'ddim' takes the options"),
        (["--sampler", "ddpm", "--steps", "1001"], r"steps=1001.*1\.\.1000"),
    ],
)
def test_what_a_flow_model_cannot_take_is_refused_in_one_line(flow_checkpoint, tmp_path, capsys, argv, match):
    out = str(tmp_path / "grid.png")
    common = ["sample", "--checkpoint", flow_checkpoint, "--steps", "2", "--n", "2", "--out", out, "--quiet"]
    assert main([*common, *argv]) == 2
    assert re.search(match, capsys.readouterr().err)


# --- the VP samplers on a flow model: its own VP chain -----------------------------------------------------


def test_the_flow_chain_has_the_straight_paths_signal_to_noise_ratio():
    schedule = flow_matching_schedule(1000)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1001
    assert schedule.T == 1000 and schedule.name == "flow"
    assert torch.allclose(schedule.alpha_bar, (1 - t) ** 2 / ((1 - t) ** 2 + t**2), rtol=1e-12)
    assert torch.allclose(flow_time_from_alpha_bar(schedule.alpha_bar), t, atol=1e-12)


@pytest.mark.parametrize("t", [0, 400, 999])
def test_flow_as_eps_of_the_exact_velocity_is_the_exact_eps(t):
    schedule = flow_matching_schedule(1000)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(t))
    steps = torch.full((64,), t, dtype=torch.long)
    exact = GaussianMixtureOracle(toy_mixture(), schedule)(x, steps)
    assert torch.allclose(FlowAsEps(MixtureVelocity(toy_mixture()), schedule)(x, steps), exact, atol=1e-12)
    with pytest.raises(ValueError, match="integer timestep indices"):
        FlowAsEps(MixtureVelocity(toy_mixture()), schedule)(x, torch.full((64,), 0.5))


@pytest.mark.parametrize("sampler", sorted(set(SAMPLERS) - set(FLOW_SAMPLERS)))
def test_every_vp_sampler_runs_a_flow_model_with_its_declared_nfe(flow_checkpoint, sampler):
    checkpoint = load_checkpoint(flow_checkpoint, device="cpu")
    for guidance, factor in ((None, 1), (2.0, 2)):
        counter = EvalCounter(checkpoint.model)
        out, _ = generate_samples(checkpoint, sampler, 3, n=2, guidance=guidance, eps_model=counter)
        assert counter.rows == 2 * factor * SAMPLERS[sampler].nfe(3) and torch.isfinite(out).all()


def test_ddim_on_a_flow_model_is_its_euler_on_the_mapped_grid(flow_checkpoint):
    checkpoint = load_checkpoint(flow_checkpoint, device="cpu")
    ddim, labels = generate_samples(checkpoint, "ddim", 6, n=4, seed=3, eta=0.0)
    x_T = torch.randn((4, 1, 28, 28), generator=torch.Generator().manual_seed(3))
    schedule = flow_matching_schedule(1000)
    ab = schedule.alpha_bar[timestep_grid(1000, 6)]
    times = torch.cat([flow_time_from_alpha_bar(ab), torch.zeros(1, dtype=torch.float64)])
    start = x_T / float(ab[0].sqrt() + (1 - ab[0]).sqrt())
    euler = run_flow_sampler("euler", checkpoint.model, start, times=times, labels=labels)
    assert float((ddim - euler).abs().max()) < 1e-4


def test_shift_is_a_flag_for_flow_models_only(flow_checkpoint, tmp_path, capsys):
    out = str(tmp_path / "grid.png")
    common = ["sample", "--steps", "2", "--n", "2", "--out", out, "--quiet", "--shift", "3"]
    assert main([*common, "--checkpoint", flow_checkpoint, "--sampler", "heun"]) == 0
    assert main([*common, "--checkpoint", "mnist-cond", "--sampler", "ddim"]) == 2
    assert re.search(r"shift=3\.0.*sampler 'ddim' takes the options", capsys.readouterr().err)

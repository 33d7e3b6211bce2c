import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from diffusion_course import training
from diffusion_course.checkpoints import load_training_state
from diffusion_course.configs import load_run_data
from diffusion_course.models import MLP, TinyUNet, UNet
from diffusion_course.schedules import linear_schedule
from diffusion_course.training import (
    EMA,
    NonFiniteLossError,
    TrainConfig,
    diffusion_loss,
    stream_seed,
    train,
)

SCHEDULE = linear_schedule(100)
TESTS = Path(__file__).parent


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_run_data("synthetic-digits", 32, seed=0)


@pytest.fixture(scope="module")
def small_digits(digits):
    """The synthetic digits at 16×16: TinyUNet takes any size divisible by 4, at a third of the cost."""
    images, labels = digits
    return torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear", antialias=True), labels


@pytest.fixture(scope="module")
def points():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(256, 2, generator=gen) * 0.3 + 1.0, torch.randint(0, 4, (256,), generator=gen)


def quiet(**changes) -> TrainConfig:
    base = dict(steps=10, batch_size=16, lr=3e-3, warmup_steps=2, log_every=5, device="cpu")
    return TrainConfig(**{**base, **changes})


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------ loss


class Recorder(nn.Module):
    """An ε-model that returns zeros and remembers the t and labels it was called with."""

    def __init__(self, num_classes=None):
        super().__init__()
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.zeros(()))
        self.ts, self.labels = [], []

    def forward(self, x, t, labels=None):
        self.ts.append(t)
        self.labels.append(labels)
        return x * self.weight


def test_diffusion_loss_is_eps_mse_at_uniform_t():
    torch.manual_seed(0)
    model = MLP(hidden=16, depth=1)
    x0 = torch.randn(8, 2)
    loss = diffusion_loss(model, x0, SCHEDULE, generator=torch.Generator().manual_seed(5))
    # the same draws by hand: t first, then ε
    gen = torch.Generator().manual_seed(5)
    t = torch.randint(0, SCHEDULE.T, (8,), generator=gen)
    noise = torch.randn(8, 2, generator=gen)
    ab = SCHEDULE.alpha_bar[t].float()[:, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    assert torch.allclose(loss, ((model(x_t, t) - noise) ** 2).mean(), atol=1e-6)


def test_a_v_predicting_model_is_trained_on_v_with_its_min_snr_weight():
    """VPrediction's loss: ‖v − v_θ‖², v = √ᾱ ε − √(1−ᾱ) x_0, from the same draws as the ε loss; Min-SNR-γ
    weights it by min(SNR, γ)/(SNR + 1)."""
    from diffusion_course.models import VPrediction

    model = VPrediction("mlp", "linear", 100, dim=2, hidden=16, depth=1, time_dim=8)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(3)
    t, noise = torch.randint(0, 100, (64,), generator=g), torch.randn(x0.shape, generator=g)
    ab = SCHEDULE.alpha_bar[t].reshape(-1, 1)
    x_t = (ab.sqrt() * x0 + (1 - ab).sqrt() * noise).float()
    v_target = (ab.sqrt() * noise - (1 - ab).sqrt() * x0).float()
    v = model.net(x_t, t)
    got = diffusion_loss(model, x0, SCHEDULE, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, ((v - v_target) ** 2).mean(), atol=1e-6, rtol=1e-5)
    snr = (ab / (1 - ab)).squeeze(1)
    weight = (snr.clamp(max=5.0) / (snr + 1)).float()
    expected = (weight * (v - v_target).pow(2).mean(1)).mean()
    got = diffusion_loss(model, x0, SCHEDULE, generator=torch.Generator().manual_seed(3), min_snr_gamma=5.0)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_a_v_model_trains_as_well_as_the_eps_model(points):
    """The same MLP trained by the same trainer on the same draws, predicting v and predicting ε: the v-loss
    falls, and DDIM-20 (through ε = α v + σ x) puts the samples' mean as close to the data's as the
    ε-model's."""
    from diffusion_course.models import VPrediction
    from diffusion_course.sampling import ddim_sample, timestep_grid

    x, _ = points
    config = quiet(steps=400, batch_size=64, lr=3e-3, log_every=50)
    x_T = torch.randn(1000, 2, generator=torch.Generator().manual_seed(4))
    errors = {}
    for kind in ("v", "eps"):
        torch.manual_seed(0)
        net = dict(dim=2, hidden=64, depth=2, time_dim=16)
        model = VPrediction("mlp", "linear", 100, **net) if kind == "v" else MLP(**net)
        untrained = copy.deepcopy(model)
        result = train(model, x, None, SCHEDULE, config, progress=False)
        before, after = (float(diffusion_loss(m, x, SCHEDULE, generator=torch.Generator().manual_seed(9)))
                         for m in (untrained, result.ema_model))  # fmt: skip
        assert after < 0.7 * before, (kind, before, after)
        samples = ddim_sample(result.ema_model, x_T, SCHEDULE, timestep_grid(100, 20))
        errors[kind] = float((samples.mean(0) - x.mean(0)).norm())
    assert errors["v"] < 1.5 * errors["eps"] + 0.05, errors


def test_min_snr_weighting_is_min_snr_gamma_over_snr():
    x0 = torch.rand(64, 1, 4, 4) * 2 - 1

    def zero_model(x, t):
        return torch.zeros_like(x)

    def draws(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, SCHEDULE.T, (64,), generator=g), torch.randn(x0.shape, generator=g)

    t, noise = draws(3)
    snr = SCHEDULE.alpha_bar[t] / (1 - SCHEDULE.alpha_bar[t])
    weight = (snr.clamp(max=5.0) / snr).float()
    expected = (weight * noise.pow(2).flatten(1).mean(1)).mean()
    got = diffusion_loss(
        zero_model, x0, SCHEDULE, generator=torch.Generator().manual_seed(3), min_snr_gamma=5.0
    )
    torch.testing.assert_close(got, expected)
    assert 0 < float(weight.min()) < 1 and float(weight.max()) == 1.0  # only the low-noise steps are damped
    plain = diffusion_loss(zero_model, x0, SCHEDULE, generator=torch.Generator().manual_seed(3))
    assert torch.equal(plain, torch.nn.functional.mse_loss(torch.zeros_like(noise), noise))
    with pytest.raises(ValueError, match="^min_snr_gamma=-1.0"):
        diffusion_loss(zero_model, x0, SCHEDULE, min_snr_gamma=-1.0)


def test_diffusion_loss_covers_every_timestep():
    model = Recorder()
    schedule = linear_schedule(10)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        diffusion_loss(model, torch.randn(16, 2), schedule, generator=gen)
    seen = torch.cat(model.ts)
    assert set(seen.tolist()) == set(range(10))
    # a zero model predicts ε̂ = 0, so the loss is E‖ε‖² = 1
    loss = diffusion_loss(model, torch.randn(4096, 2), schedule, generator=gen)
    assert abs(loss.item() - 1.0) < 0.05


def test_label_dropout_uses_the_null_class_at_rate_p_uncond():
    model = Recorder(num_classes=10)
    labels = torch.randint(0, 10, (4000,))
    for p in (0.0, 0.3, 1.0):
        diffusion_loss(model, torch.randn(4000, 2), SCHEDULE, labels, p_uncond=p, generator=torch.Generator())
        seen = model.labels[-1]
        dropped = seen == 10
        assert abs(dropped.float().mean().item() - p) < 0.03
        assert torch.equal(seen[~dropped], labels[~dropped])  # kept labels are untouched
    with pytest.raises(ValueError, match="label dropout needs labels"):
        diffusion_loss(model, torch.randn(4, 2), SCHEDULE, None, p_uncond=0.1)
    with pytest.raises(ValueError, match="unconditional"):
        diffusion_loss(Recorder(), torch.randn(4, 2), SCHEDULE, labels[:4], p_uncond=0.1)


# ------------------------------------------------------------------------------------------------ EMA


def test_ema_update_formula_and_warmup():
    torch.manual_seed(0)
    model = MLP(hidden=4, depth=1)
    ema = EMA(model, decay=0.9, warmup=False)
    start = [p.clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for e, s, p in zip(ema.model.parameters(), start, model.parameters()):
        assert torch.allclose(e, 0.9 * s + 0.1 * p)
        assert not e.requires_grad
    assert not ema.model.training
    warm = EMA(model, decay=0.999, warmup=True)
    decays = []
    for _ in range(3):
        decays.append(warm.current_decay())
        warm.update(model)
    assert decays == pytest.approx([1 / 10, 2 / 11, 3 / 12])
    assert EMA(model, decay=0.5, warmup=True).current_decay() == 0.1  # min(decay, (1+n)/(10+n))


# ------------------------------------------------------------------------------------------------ trainer


def test_loss_decreases_and_ema_follows_the_weights(small_digits):
    images, _ = small_digits
    torch.manual_seed(0)
    model = TinyUNet(base_channels=8, time_dim=16)
    init = [p.detach().clone() for p in model.parameters()]
    result = train(model, images, None, SCHEDULE, quiet(steps=50, ema_decay=0.9), progress=False)
    assert len(result.losses) == 50 and result.step == 50
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.7 * first
    raw, ema = list(result.model.parameters()), list(result.ema_model.parameters())
    assert not all(torch.equal(r, e) for r, e in zip(raw, ema))
    # the EMA has moved from the initial weights towards the trained ones
    dist_init = sum((e - i).norm() ** 2 for e, i in zip(ema, init))
    dist_raw = sum((e - r).norm() ** 2 for e, r in zip(ema, raw))
    assert dist_raw < dist_init
    assert not result.model.training


def small_cond_unet(seed=0):
    torch.manual_seed(seed)
    return UNet(
        base_channels=8, channel_mults=(1, 2, 2), attention_resolutions=(7,), num_classes=10, dropout=0.1
    )


def test_resume_after_interruption_is_bitwise_identical(digits, tmp_path, monkeypatch):
    """Dropout (global RNG), label dropout and noise (noise stream), batches (data stream) resume exactly."""
    images, labels = digits
    config = quiet(steps=8, batch_size=8, p_uncond=0.3, checkpoint_every=3, log_every=2)
    straight = train(small_cond_unet(), images, labels, SCHEDULE, config, progress=False)

    calls = {"n": 0}
    real_loss = training.diffusion_loss

    def crash_at_step_7(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(training, "diffusion_loss", crash_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train(small_cond_unet(), images, labels, SCHEDULE, config, out_dir=tmp_path, progress=False)
    monkeypatch.setattr(training, "diffusion_loss", real_loss)
    assert load_training_state(tmp_path / "train_state.pt")["step"] == 6

    # different initial weights on purpose: everything must come from the state file
    resumed = train(
        small_cond_unet(seed=1), images, labels, SCHEDULE, config, tmp_path, resume=True, progress=False
    )
    assert resumed.step == 8
    assert resumed.losses == straight.losses
    assert same_weights(resumed.model, straight.model)
    assert same_weights(resumed.ema_model, straight.ema_model)


def test_extending_a_finished_run_matches_one_long_run(points, tmp_path):
    x, y = points
    model = lambda: MLP(hidden=16, depth=2, time_dim=8, num_classes=4)  # noqa: E731
    config = quiet(steps=12, p_uncond=0.2)
    torch.manual_seed(0)
    straight = train(model(), x, y, SCHEDULE, config, progress=False)
    torch.manual_seed(0)
    train(model(), x, y, SCHEDULE, config.replace(steps=5), out_dir=tmp_path, progress=False)
    resumed = train(model(), x, y, SCHEDULE, config, out_dir=tmp_path, resume=True, progress=False)
    assert same_weights(resumed.model, straight.model) and same_weights(resumed.ema_model, straight.ema_model)
    assert resumed.losses == straight.losses


def test_a_time_budget_stops_cleanly_and_resume_continues_exactly(points, tmp_path):
    """Stopped by the budget after a whole step: the state is written, and resuming gives the straight run."""
    x, y = points
    model = lambda: MLP(hidden=16, depth=2, time_dim=8, num_classes=4)  # noqa: E731
    config = quiet(steps=12, p_uncond=0.2, log_every=4)
    torch.manual_seed(0)
    straight = train(model(), x, y, SCHEDULE, config, progress=False)
    torch.manual_seed(0)
    cut = train(model(), x, y, SCHEDULE, config, out_dir=tmp_path, progress=False, time_budget=0.0)
    assert cut.stopped == "time budget" and cut.step == 1 and len(cut.losses) == 1
    assert load_training_state(tmp_path / "train_state.pt")["step"] == 1
    resumed = train(model(), x, y, SCHEDULE, config, out_dir=tmp_path, resume=True, progress=False)
    assert resumed.stopped is None and resumed.step == 12
    assert same_weights(resumed.model, straight.model) and same_weights(resumed.ema_model, straight.ema_model)
    assert resumed.losses == straight.losses
    # a budget the run fits in changes nothing
    torch.manual_seed(0)
    roomy = train(model(), x, y, SCHEDULE, config, progress=False, time_budget=3600)
    assert roomy.stopped is None and same_weights(roomy.model, straight.model)


def test_should_stop_and_on_log(points):
    x, y = points
    logged = []

    def on_log(step, losses, ema_model):
        logged.append((step, len(losses)))

    model = MLP(hidden=8, depth=1, num_classes=4)
    config = quiet(steps=20, log_every=3)
    result = train(
        model, x, y, SCHEDULE, config, progress=False, should_stop=lambda: len(logged) == 2, on_log=on_log
    )
    assert result.stopped == "stop requested" and result.step == 6
    assert logged == [(3, 3), (6, 6)]
    for name, value in (
        ("time_budget", -1.0),
        ("time_budget", float("nan")),
        ("should_stop", 3),
        ("on_log", "x"),
    ):
        with pytest.raises(ValueError, match=f"^{name}="):
            train(MLP(hidden=8, depth=1, num_classes=4), x, y, SCHEDULE, quiet(steps=2), **{name: value})


def test_resume_refuses_a_different_run(points, tmp_path):
    x, y = points
    config = quiet(steps=3)
    train(MLP(hidden=8, depth=1, num_classes=4), x, y, SCHEDULE, config, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="config.lr"):
        train(
            MLP(hidden=8, depth=1, num_classes=4),
            x,
            y,
            SCHEDULE,
            config.replace(lr=1e-2),
            tmp_path,
            resume=True,
        )
    with pytest.raises(ValueError, match="model.config"):
        train(MLP(hidden=16, depth=1, num_classes=4), x, y, SCHEDULE, config, tmp_path, resume=True)
    with pytest.raises(ValueError, match="out_dir"):
        train(MLP(hidden=8, depth=1, num_classes=4), x, y, SCHEDULE, config, resume=True)


def test_resume_without_a_state_starts_fresh(points, tmp_path):
    x, _ = points
    torch.manual_seed(0)
    fresh = train(MLP(hidden=8, depth=1), x, None, SCHEDULE, quiet(steps=3), progress=False)
    torch.manual_seed(0)
    resumed = train(
        MLP(hidden=8, depth=1), x, None, SCHEDULE, quiet(steps=3), tmp_path, resume=True, progress=False
    )
    assert same_weights(fresh.model, resumed.model)


class NaNAfter(nn.Module):
    """A working MLP ε-model that outputs NaN from its (n+1)-th call on."""

    def __init__(self, n):
        super().__init__()
        self.inner, self.n, self.calls = MLP(hidden=8, depth=1), n, 0
        self.config = {"nan_after": n}

    def forward(self, x, t, labels=None):
        self.calls += 1
        out = self.inner(x, t)
        return out * float("nan") if self.calls > self.n else out


def test_non_finite_loss_stops_and_names_the_step(points, tmp_path):
    x, _ = points
    with pytest.raises(NonFiniteLossError, match="nan at step 3"):
        train(NaNAfter(3), x, None, SCHEDULE, quiet(steps=10, log_every=5), progress=False)
    with pytest.raises(NonFiniteLossError, match="at step 4"):
        train(NaNAfter(4), x, None, SCHEDULE, quiet(steps=10, checkpoint_every=1), tmp_path, progress=False)
    state = load_training_state(tmp_path / "train_state.pt")  # the last state written holds only finite steps
    assert state["step"] == 4 and all(torch.isfinite(torch.tensor(state["losses"])))
    bad = x.clone()
    bad[:] = float("inf")
    with pytest.raises(NonFiniteLossError, match="step 0"):
        train(MLP(hidden=8, depth=1), bad, None, SCHEDULE, quiet(steps=2), progress=False)


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", 0),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", -1e-3),
        ("weight_decay", -0.1),
        ("warmup_steps", -1),
        ("grad_clip", -1.0),
        ("ema_decay", 1.5),
        ("p_uncond", 1.2),
        ("seed", -1),
        ("log_every", 0),
        ("checkpoint_every", -5),
        ("bf16", "yes"),
        ("channels_last", None),
        ("steps", 2.5),
    ],
)
def test_bad_config_values_raise(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_bad_training_inputs_raise(points):
    x, y = points
    cond = MLP(hidden=8, depth=1, num_classes=4)
    with pytest.raises(ValueError, match="one label per image"):
        train(cond, x, y[:10], SCHEDULE, quiet(), progress=False)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        train(cond, x, y + 4, SCHEDULE, quiet(), progress=False)
    with pytest.raises(ValueError, match="unconditional"):
        train(MLP(hidden=8, depth=1), x, y, SCHEDULE, quiet(), progress=False)
    with pytest.raises(ValueError, match="label dropout"):
        train(cond, x, None, SCHEDULE, quiet(p_uncond=0.1), progress=False)
    with pytest.raises(ValueError, match="TrainConfig"):
        train(cond, x, y, SCHEDULE, {"steps": 3}, progress=False)


def test_cosine_decay_goes_from_lr_to_a_tenth_after_the_warmup():
    config = quiet(steps=110, warmup_steps=10, lr=1e-3, lr_decay="cosine")
    assert training.lr_at(9, config) == pytest.approx(1e-3)
    assert training.lr_at(10, config) == pytest.approx(1e-3)
    assert training.lr_at(60, config) == pytest.approx(1e-3 * (0.1 + 0.45))
    assert training.lr_at(110, config) == pytest.approx(1e-4)
    assert training.lr_at(500, config) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="^lr_decay='linear'"):
        quiet(lr_decay="linear")


def test_cosine_decay_follows_the_time_budget_when_it_runs_ahead_of_the_steps(points, tmp_path, monkeypatch):
    config = quiet(steps=110, warmup_steps=10, lr=1e-3, lr_decay="cosine")
    assert training.lr_at(60, config, time_fraction=0.2) == pytest.approx(1e-3 * (0.1 + 0.45))  # steps lead
    assert training.lr_at(20, config, time_fraction=0.5) == pytest.approx(1e-3 * (0.1 + 0.45))  # time leads
    assert training.lr_at(20, config, time_fraction=3.0) == pytest.approx(1e-4)
    assert training.lr_at(5, config, time_fraction=0.9) == pytest.approx(6e-4)  # the warm-up is by steps
    assert training.lr_at(60, config.replace(lr_decay="none"), time_fraction=0.9) == 1e-3
    # in the trainer: a clock that moves 1 s per reading, a 40 s budget, far fewer steps than configured
    clock = iter(range(10**6))
    monkeypatch.setattr(training.time, "perf_counter", lambda: float(next(clock)))
    x, _ = points
    config = quiet(steps=1000, warmup_steps=2, lr=1e-3, lr_decay="cosine", log_every=1000)
    cut = train(MLP(hidden=8, depth=1), x, None, SCHEDULE, config, tmp_path, progress=False, time_budget=40)
    assert cut.stopped == "time budget" and cut.step < 40
    last_lr = load_training_state(tmp_path / "train_state.pt")["optimizer"]["param_groups"][0]["lr"]
    assert last_lr == pytest.approx(1e-4, rel=0.1)  # the decay ended with the budget, not at step 1000


def test_warmup_is_linear_then_constant():
    config = TrainConfig(lr=1e-3, warmup_steps=4)
    assert [training.lr_at(s, config) for s in range(6)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3]
    )
    assert training.lr_at(0, config.replace(warmup_steps=0)) == 1e-3


def test_bf16_and_channels_last_can_be_forced_on_cpu(small_digits):
    images, _ = small_digits
    result = train(TinyUNet(base_channels=8, time_dim=16), images, None, SCHEDULE,
                   quiet(steps=2, bf16=True, channels_last=True), progress=False)  # fmt: skip
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_ranks_draw_from_different_streams():
    seeds = {stream_seed(0, rank, stream) for rank in range(4) for stream in range(3)}
    assert len(seeds) == 12
    assert stream_seed(7, 1, 2) == stream_seed(7, 1, 2) != stream_seed(8, 1, 2)


@pytest.mark.alone  # two ranks with their ports and gloo threads: not beside the parallel suite's servers
def test_ddp_with_two_gloo_ranks_keeps_identical_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(TESTS / "ddp_worker.py"), str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    written = sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".json", ".done"))
    assert done.returncode == 0, f"{written}\n" + done.stderr[:3000] + "\n…\n" + done.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["weights"] == rank1["weights"] and rank0["ema"] == rank1["ema"]
    assert rank0["budgeted_weights"] == rank1["budgeted_weights"]
    assert rank0["first_input_sum"] != rank1["first_input_sum"]  # each rank trains on its own batches
    assert rank0["losses"] == rank1["losses"]  # the logged loss is the mean over ranks
    # resuming under DDP (3 + 3 steps) ends exactly where 6 straight steps do
    assert rank0["resumed_weights"] == rank0["weights"] and rank0["resumed_ema"] == rank0["ema"]
    assert rank0["resumed_losses"] == rank0["losses"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["train_state.pt"]  # rank 0 only writes
    state = load_training_state(tmp_path / "run" / "train_state.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["data"], state["rng"][1]["data"])


def test_optimizer_step_sets_the_lr_clips_and_refuses_a_non_finite_loss_before_any_update():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    config = quiet(steps=10, lr=1e-2, warmup_steps=4, grad_clip=1e-3)
    optimizer = torch.optim.SGD(model.parameters(), lr=99.0)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    loss = (1e3 * model(torch.ones(2, 3)) + 1e3).pow(2).mean()
    assert training.optimizer_step(model, optimizer, loss, 1, config, "toy") == pytest.approx(loss.item())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 2 / 4)  # warm-up step 2 of 4
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert grad.norm() == pytest.approx(1e-3, rel=1e-4)  # clipped from ~1e6
    update = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
    assert torch.allclose(update, -1e-2 * 2 / 4 * grad, rtol=0, atol=1e-7)  # SGD at the warm-up lr
    weights = [p.detach().clone() for p in model.parameters()]
    nan_loss = model(torch.ones(1, 3)).sum() * float("nan")
    with pytest.raises(NonFiniteLossError, match="toy loss is nan at step 7"):
        training.optimizer_step(model, optimizer, nan_loss, 7, config, "toy")
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))

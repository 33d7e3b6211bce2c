import math

import pytest
import torch

from diffusion_course.checkpoints import load_checkpoint, save_checkpoint
from diffusion_course.distillation import (
    DistillationLoss,
    distill,
    distillation_target,
    student_grid,
    teacher_two_steps,
    v_student,
)
from diffusion_course.models import MLP, VPrediction, build_model, model_kind
from diffusion_course.oracle import GaussianMixtureOracle, toy_mixture
from diffusion_course.sampling import ddim_sample, ddim_step, predict_x0, timestep_grid
from diffusion_course.schedules import linear_schedule
from diffusion_course.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEDULE = linear_schedule(1000)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class PointMass(torch.nn.Module):
    """The exact ε-model of data that is always c: ε(x_t, t) = (x_t − α_t c)/σ_t; DDIM is then exact."""

    def __init__(self, c: torch.Tensor, num_classes=None):
        super().__init__()
        self.c, self.num_classes = c, num_classes

    def forward(self, x, t, labels=None):
        ab = SCHEDULE.alpha_bar[t].to(x).reshape(-1, *([1] * (x.ndim - 1)))
        return (x - ab.sqrt() * self.c) / (1 - ab).sqrt()


@pytest.mark.parametrize("ab_t, ab_end", [(0.1, 0.3), (4e-5, 0.02), (0.5, 0.9999), (0.2, 1.0)])
def test_one_ddim_step_with_the_target_lands_where_aimed(ab_t, ab_end):
    x_t, x_end = rand(5, 1, 4, 4, seed=1), rand(5, 1, 4, 4, seed=2)
    x_tilde = distillation_target(x_t.double(), x_end.double(), ab_t, ab_end)
    eps = (x_t.double() - math.sqrt(ab_t) * x_tilde) / math.sqrt(1 - ab_t)  # the ε that x̃ implies
    landed, x0_pred = ddim_step(x_t.double(), eps, ab_t, ab_end)
    assert torch.allclose(x0_pred, x_tilde, atol=1e-9)
    assert torch.allclose(landed, x_end.double(), atol=1e-9)
    if ab_end == 1.0:
        assert torch.equal(x_tilde, x_end.double())


def test_target_takes_per_sample_alpha_bars():
    x_t, x_end = rand(3, 2, seed=3), rand(3, 2, seed=4)
    ab_t, ab_end = torch.tensor([0.1, 0.5, 0.01], dtype=torch.float64), torch.tensor([0.2, 1.0, 0.3])
    batched = distillation_target(x_t, x_end, ab_t, ab_end)
    for k in range(3):
        one = distillation_target(x_t[k : k + 1], x_end[k : k + 1], float(ab_t[k]), float(ab_end[k]))
        assert torch.allclose(batched[k], one[0], atol=1e-6)


@pytest.mark.parametrize(
    "ab_t, ab_end, match",
    [(0.5, 0.5, "alpha_bar_end"), (0.5, 0.3, "alpha_bar_end"), (1.0, 1.0, "alpha_bar_t"),
     (0.0, 0.5, "alpha_bar_t"), (0.5, 1.5, "alpha_bar_end")],
)  # fmt: skip
def test_target_refuses_steps_that_do_not_go_towards_the_data(ab_t, ab_end, match):
    with pytest.raises(ValueError, match=match):
        distillation_target(rand(2, 2), rand(2, 2), ab_t, ab_end)


@pytest.mark.parametrize("n", [1, 2, 5, 32, 250])
def test_student_grid_is_every_other_teacher_time(n):
    g = student_grid(SCHEDULE, n)
    teacher = timestep_grid(1000, 2 * n)
    assert torch.equal(g.t, timestep_grid(1000, n)) and torch.equal(g.t, teacher[0::2])
    assert torch.equal(g.t_mid, teacher[1::2])
    assert torch.equal(g.t_end[:-1], g.t[1:]) and int(g.t_end[-1]) == -1
    assert float(g.alpha_bar_end[-1]) == 1.0 and torch.equal(g.alpha_bar, SCHEDULE.alpha_bar[g.t])
    assert (g.t > g.t_mid).all() and (g.t_mid > g.t_end).all()


def test_one_student_step_grid_goes_from_999_through_499_to_the_data():
    g = student_grid(SCHEDULE, 1)
    assert g.t.tolist() == [999] and g.t_mid.tolist() == [499] and g.t_end.tolist() == [-1]


@pytest.mark.parametrize("n", [0, 501, 2.5])
def test_student_grid_names_a_bad_step_count(n):
    with pytest.raises(ValueError, match="student_steps"):
        student_grid(SCHEDULE, n)


def test_teacher_two_steps_are_two_ddim_sampler_steps():
    """Per-sample steps agree with the DDIM sampler run over the same two teacher times."""
    model = MLP(dim=2, hidden=16, depth=1, time_dim=8).eval()
    g = student_grid(SCHEDULE, 4)
    x = rand(6, 2, seed=5)
    i = torch.tensor([0, 1, 2, 3, 3, 0])
    ours = teacher_two_steps(
        model, x, g.t[i], g.t_mid[i], g.alpha_bar[i], g.alpha_bar_mid[i], g.alpha_bar_end[i]
    )
    for k in range(6):
        t, t_mid = int(g.t[i[k]]), int(g.t_mid[i[k]])
        row = x[k : k + 1]
        if int(g.t_end[i[k]]) == -1:
            expected = ddim_sample(model, row, SCHEDULE, [t, t_mid])
        else:
            ab = [float(SCHEDULE.alpha_bar[s]) for s in (t, t_mid, int(g.t_end[i[k]]))]
            mid, _ = ddim_step(row, model(row, torch.tensor([t])), ab[0], ab[1])
            expected, _ = ddim_step(mid, model(mid, torch.tensor([t_mid])), ab[1], ab[2])
        assert torch.allclose(ours[k], expected[0], atol=1e-5), k


def test_targets_of_an_exact_teacher_point_at_the_data():
    """For data that is always c, DDIM with the exact ε is exact, so x̃ = c and ṽ = (α x_t − c)/σ."""
    c = rand(1, 1, 4, 4, seed=6)
    loss = DistillationLoss(PointMass(c), SCHEDULE, 8)
    x0 = c.expand(64, 1, 4, 4)
    x_t, t, labels, v_target = loss.targets(x0, None, torch.Generator().manual_seed(0))
    assert labels is None and len(set(t.tolist())) > 4
    ab = SCHEDULE.alpha_bar[t].reshape(-1, 1, 1, 1).float()
    assert torch.allclose(v_target, (ab.sqrt() * x_t - c) / (1 - ab).sqrt(), atol=2e-3, rtol=1e-4)


def test_targets_drop_labels_to_the_null_class_at_p_uncond():
    teacher = PointMass(torch.zeros(1, 2), num_classes=3)
    loss = DistillationLoss(teacher, SCHEDULE, 4, p_uncond=0.5)
    _, _, labels, _ = loss.targets(torch.zeros(2000, 2), torch.zeros(2000, dtype=torch.long),
                                   torch.Generator().manual_seed(1))  # fmt: skip
    share = float((labels == 3).float().mean())
    assert set(labels.tolist()) == {0, 3} and abs(share - 0.5) < 0.05


def test_distillation_loss_refuses_a_teacher_that_is_not_callable():
    with pytest.raises(ValueError, match="teacher"):
        DistillationLoss("mnist-cond", SCHEDULE, 4)


# --- the v-predicting student -------------------------------------------------------------------------


def test_v_prediction_returns_the_eps_its_v_implies():
    model = VPrediction("mlp", "linear", 1000, dim=2, hidden=16, depth=1, time_dim=8).eval()
    x, t = rand(4, 2, seed=7), torch.tensor([0, 10, 500, 999])
    v = model.net(x, t)
    ab = SCHEDULE.alpha_bar[t].reshape(-1, 1)
    assert torch.allclose(model(x, t), (ab.sqrt() * v + (1 - ab).sqrt() * x).float(), atol=1e-6)
    assert torch.equal(model(x, t, predict="v"), v)
    x0 = predict_x0(x.double(), model(x, t).double(), ab)  # what every sampler computes
    assert torch.allclose(x0, ab.sqrt() * x - (1 - ab).sqrt() * v, atol=1e-4)


def test_v_prediction_checkpoint_round_trip(tmp_path):
    model = build_model("v_prediction", net="mlp", dim=2, hidden=16, depth=1, time_dim=8, num_classes=3)
    assert model_kind(model) == "v_prediction" and model.num_classes == 3
    path = save_checkpoint(tmp_path / "student", model, schedule=SCHEDULE)
    loaded = load_checkpoint(path, device="cpu")
    x, t, y = rand(3, 2), torch.tensor([1, 2, 3]), torch.tensor([0, 1, 3])
    assert loaded.classes == 3 and torch.equal(loaded.model(x, t, y), model.eval()(x, t, y))
    assert not any(k in loaded.info for k in ("alpha", "sigma"))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"net": "autoencoder"}, "net"), ({"net": "mlp", "schedule": "nope", "dim": 2}, "schedule")],
)
def test_v_prediction_names_a_bad_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VPrediction(**kwargs)
    model = VPrediction("mlp", dim=2)
    with pytest.raises(ValueError, match="predict"):
        model(rand(1, 2), torch.tensor([0]), predict="x0")


def test_v_student_starts_from_the_teachers_weights():
    teacher = MLP(dim=2, hidden=16, depth=1, time_dim=8)
    student = v_student(teacher, SCHEDULE)
    assert isinstance(student, VPrediction) and student.config["net"] == "mlp"
    assert all(torch.equal(a, b) for a, b in zip(student.net.parameters(), teacher.parameters(), strict=True))
    again = v_student(student, SCHEDULE)
    assert again is not student and torch.equal(next(again.parameters()), next(student.parameters()))


# --- distillation at work, on the exact oracle ---------------------------------------------------------


def map_error(model, x_T, steps, reference):
    return float(
        (ddim_sample(model, x_T, SCHEDULE, timestep_grid(1000, steps)) - reference).norm(dim=1).mean()
    )


def test_a_distilled_student_beats_the_exact_model_at_the_same_few_steps():
    """Distil the oracle's DDIM-4 into a 2-step MLP student: its 2-step map is as close to the 1000-step
    DDIM map as its teacher's 4 steps (0.494 against 0.494 when written) and much closer than the exact
    model's own 2 DDIM steps (0.909): what distillation buys, with no model error to blur it."""
    torch.manual_seed(0)
    mixture = toy_mixture()
    oracle = GaussianMixtureOracle(mixture, SCHEDULE)
    data = mixture.sample(4096, generator=torch.Generator().manual_seed(0)).float()
    student = VPrediction("mlp", "linear", 1000, dim=2, hidden=64, depth=2, time_dim=16)
    config = TrainConfig(steps=600, batch_size=256, lr=3e-3, warmup_steps=20, lr_decay="cosine",
                         ema_decay=0.95, log_every=100, device="cpu")  # fmt: skip
    distilled = distill(oracle, student, data, None, SCHEDULE, [2], config, progress=False)
    x_T = rand(2000, 2, seed=11)
    reference = ddim_sample(oracle, x_T.double(), SCHEDULE, timestep_grid(1000, 1000)).float()
    exact_2, student_2 = map_error(oracle, x_T, 2, reference), map_error(distilled, x_T, 2, reference)
    exact_4 = map_error(oracle, x_T, 4, reference)  # the teacher: the best the student can learn
    assert student_2 < 0.7 * exact_2 and student_2 < 1.05 * exact_4, (student_2, exact_2, exact_4)


def test_distill_reuses_a_finished_round_and_checks_its_rounds():
    teacher = MLP(dim=2, hidden=8, depth=1, time_dim=8)
    student = v_student(teacher, SCHEDULE)
    done = v_student(teacher, SCHEDULE)
    config = TrainConfig(steps=2, batch_size=4, warmup_steps=1, log_every=1, device="cpu")
    data = rand(16, 2)
    seen = []
    out = distill(teacher, student, data, None, SCHEDULE, [4, 2], config, progress=False,
                  on_round=lambda n, result, s: seen.append((n, result.step)),
                  finished=lambda n: done if n == 4 else None)  # fmt: skip
    assert seen == [(2, 2)] and isinstance(out, VPrediction)
    for rounds in ([], [2, 4], [4, 4], [0]):
        with pytest.raises(ValueError, match="rounds"):
            distill(teacher, student, data, None, SCHEDULE, rounds, config, progress=False)
    with pytest.raises(ValueError, match="student"):
        distill(teacher, teacher, data, None, SCHEDULE, [2], config, progress=False)


# --- the command line ----------------------------------------------------------------------------------


@pytest.fixture
def keep_thread_count():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_distill_writes_a_checkpoint_per_round_with_provenance(tmp_path, capsys, keep_thread_count):
    from diffusion_course.cli import main
    from diffusion_course.generation import generate_samples

    argv = ["train", "--config", "test-distill", "--out", str(tmp_path), "--quiet", "--threads", "1"]
    assert main(argv) == 0
    assert capsys.readouterr().out.count("wrote") == 2
    names = {p.name for p in tmp_path.iterdir()}
    assert {"test-distilled-2.json", "test-distilled-1.json", "round-2", "round-1"} <= names
    teacher = load_checkpoint("mnist-cond", device="cpu")
    one = load_checkpoint(tmp_path / "test-distilled-1", device="cpu")
    info = one.info
    assert info["model"]["kind"] == "v_prediction" and one.classes == 10
    assert info["teacher"] == {"name": "mnist-cond", "safetensors_sha256": teacher.info["safetensors_sha256"]}
    assert info["distillation"]["student_steps"] == 1 and info["distillation"]["teacher_steps"] == 2
    assert info["distillation"]["rounds"] == [2, 1] and info["step"] == 2
    first = load_checkpoint(tmp_path / "test-distilled-2", device="cpu").info
    assert first["step"] == first["train_config"]["steps"] == 3  # the first round has its own length
    assert info["command"].startswith("python -m diffusion_course train --config test-distill")
    assert {"machine", "load_average_at_start", "load_average_at_end", "seconds"} <= set(info)
    images, _ = generate_samples(one, "ddim", 1, n=4, seed=0)
    assert images.shape == (4, 1, 28, 28) and torch.isfinite(images).all()

    # --resume skips the rounds whose checkpoint is there
    (tmp_path / "test-distilled-1.json").unlink()
    assert main([*argv, "--resume"]) == 0
    assert "round 1" in capsys.readouterr().out and (tmp_path / "test-distilled-1.json").is_file()


@pytest.mark.parametrize(
    "extra, match",
    [(["--teacher", "mnist-classifier"], "classifier checkpoint"),
     (["--teacher", "mnist-latent"], "on latents"),
     (["--time-budget", "5"], "--time-budget"),
     (["--autoencoder", "mnist-vae"], "--autoencoder")],
)  # fmt: skip
def test_train_distill_names_a_bad_option(tmp_path, capsys, extra, match, keep_thread_count):
    from diffusion_course.cli import main

    assert main(["train", "--config", "test-distill", "--out", str(tmp_path), "--quiet", *extra]) == 2
    assert match in capsys.readouterr().err


def test_teacher_flag_is_only_for_distillation(tmp_path, capsys, keep_thread_count):
    from diffusion_course.cli import main

    assert main(["train", "--config", "test-tiny", "--out", str(tmp_path), "--teacher", "mnist-cond"]) == 2
    assert "--teacher is for distillation runs" in capsys.readouterr().err


def test_a_v_model_config_must_use_the_runs_schedule():
    from diffusion_course.configs import CONFIGS, RunConfig, register

    bad = RunConfig(name="bad-v", description="", task="diffusion", model_kind="v_prediction",
                    model_config=dict(net="mlp", dim=2, schedule="cosine"), data="toy-mixture",
                    train=TrainConfig())  # fmt: skip
    with pytest.raises(ValueError, match="^model_config=.*schedule and T must be the run's"):
        register(bad)
    assert "bad-v" not in CONFIGS
    assert CONFIGS["toy2d-v"].build_model().config["schedule"] == CONFIGS["toy2d-v"].schedule

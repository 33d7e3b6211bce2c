"""`sample` and `evaluate`: grids of the right size, the JSON record, counted NFE, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.cli import build_parser, main
from diffusion_course.data import load_mnist
from diffusion_course.evaluation import evaluate_checkpoint, evaluate_samples, load_classifier, toy_reference
from diffusion_course.generation import EvalCounter, generate_samples
from diffusion_course.sampling import CFG, ddim_sample, timestep_grid
from diffusion_course.sampling.registry import SAMPLERS, nfe

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"fd", "label_accuracy", "nfe", "seconds", "sampler", "steps", "eta", "guidance", "n", "seed"}
INTERVALS = {"fd_low", "fd_high", "kid", "kid_std", "label_accuracy_low", "label_accuracy_high"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A conditional two-level UNet trained for 4 steps (config test-tiny-cond): its stem path."""
    out = tmp_path_factory.mktemp("tiny")
    assert main(["train", "--config", "test-tiny-cond", "--out", str(out), "--quiet", "--threads", "1"]) == 0
    return str(out / "test-tiny-cond")


def run_json(capsys, *argv) -> dict:
    assert main(["evaluate", *argv, "--json", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1])


# ---------------------------------------------------------------- sample


@pytest.mark.parametrize(
    "extra, size",
    [
        ([], (10 * 30 + 2, 2 * 30 + 2)),  # labels 0..9 in turn: one digit per column, 10 per row
        (["--label", "3"], (8 * 30 + 2, 2 * 30 + 2)),
        (["--nrow", "4", "--guidance", "2"], (4 * 30 + 2, 3 * 30 + 2)),
    ],
)
def test_sample_writes_a_grid_of_the_right_size(tiny, tmp_path, capsys, extra, size):
    out = tmp_path / "grid.png"
    argv = ["sample", "--checkpoint", tiny, "--steps", "2", "--n", "12", "--seed", "0", "--out", str(out)]
    assert main([*argv, "--quiet", *extra]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    image = Image.open(out)
    assert image.format == "PNG" and image.size == size


def test_sample_of_the_2d_model_is_a_scatter_plot(tmp_path):
    out = tmp_path / "points.png"
    assert (
        main(["sample", "--checkpoint", "toy2d", "--steps", "5", "--n", "50", "--out", str(out), "--quiet"])
        == 0
    )
    assert Image.open(out).size == (500, 500)


# ---------------------------------------------------------------- generate_samples


def test_generate_samples_cycles_labels_and_is_reproducible(tiny):
    checkpoint = load_checkpoint(tiny, device="cpu")
    a, labels = generate_samples(checkpoint, "ddim", 3, n=12, seed=5)
    b, _ = generate_samples(checkpoint, "ddim", 3, n=12, seed=5)
    c, _ = generate_samples(checkpoint, "ddim", 3, n=12, seed=6)
    assert a.shape == (12, 1, 28, 28) and a.dtype == torch.float32
    assert labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert torch.equal(a, b) and not torch.allclose(a, c)
    _, sevens = generate_samples(checkpoint, "ddim", 3, n=4, seed=5, labels=7)
    assert sevens.tolist() == [7, 7, 7, 7]


def test_generate_samples_is_the_sampler_on_the_seeded_start(tiny):
    """Guidance s is CFG(model, s) on x_T ~ N(0, I) from the seed; s = 1 is the conditional model alone."""
    checkpoint = load_checkpoint(tiny, device="cpu")
    model = checkpoint.model
    x_T = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(6) % 10
    ts = timestep_grid(1000, 4)
    for s in (1.0, 2.5):
        got, _ = generate_samples(checkpoint, "ddim", 4, n=6, seed=3, guidance=s)
        eps_model = model if s == 1.0 else CFG(model, s)
        assert torch.allclose(
            got, ddim_sample(eps_model, x_T, checkpoint.schedule, ts, labels=labels), atol=1e-5
        )


def test_generate_samples_refuses_what_it_cannot_sample(tiny):
    with pytest.raises(ValueError, match="checkpoint='str' is not allowed: expected a Checkpoint"):
        generate_samples(tiny, "ddim", 3, n=2)
    classifier = load_checkpoint("mnist-classifier", device="cpu")
    with pytest.raises(ValueError, match="checkpoint='mnist-classifier'.*records no noise schedule"):
        generate_samples(classifier, "ddim", 3, n=2)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_counted_nfe_per_sampler_and_doubled_by_guidance(tiny, sampler):
    checkpoint = load_checkpoint(tiny, device="cpu")
    for guidance, factor in ((None, 1), (3.0, 2)):
        counter = EvalCounter(checkpoint.model)
        generate_samples(checkpoint, sampler, 3, n=2, seed=0, guidance=guidance, eps_model=counter)
        assert counter.rows == 2 * factor * nfe(sampler, 3)


# ---------------------------------------------------------------- evaluate


def test_evaluate_prints_one_json_record(tiny, capsys):
    record = run_json(
        capsys, "--checkpoint", tiny, "--sampler", "ddim", "--steps", "3", "--n", "10", "--seed", "1"
    )
    assert KEYS | INTERVALS <= set(record)
    assert record["fd_low"] <= record["fd"] <= record["fd_high"] and record["kid_std"] > 0
    assert record["label_accuracy_low"] <= record["label_accuracy"] <= record["label_accuracy_high"]
    assert record["sampler"] == "ddim" and record["steps"] == 3 and record["n"] == 10 and record["seed"] == 1
    assert record["nfe"] == 3 and record["guidance"] == 1.0 and record["eta"] is None
    assert record["fd"] > 0 and 0 <= record["label_accuracy"] <= 1 and record["seconds"] > 0
    guided = run_json(
        capsys, "--checkpoint", tiny, "--steps", "3", "--n", "10", "--guidance", "2", "--eta", "0.5"
    )
    assert guided["nfe"] == 6 and guided["guidance"] == 2.0 and guided["eta"] == 0.5


def test_evaluate_repeats_reports_each_seed_and_the_spread(tiny, capsys):
    record = run_json(
        capsys, "--checkpoint", tiny, "--steps", "2", "--n", "10", "--seed", "4", "--repeats", "3"
    )
    assert record["repeats"] == 3 and [r["seed"] for r in record["runs"]] == [4, 5, 6]
    fds = torch.tensor([r["fd"] for r in record["runs"]], dtype=torch.float64)
    assert record["fd_seeds_mean"] == pytest.approx(float(fds.mean()), abs=1e-5)
    assert record["fd_seeds_std"] == pytest.approx(float(fds.std()), abs=1e-5) and record["fd_seeds_std"] > 0
    assert record["fd"] == record["runs"][0]["fd"]
    with pytest.raises(ValueError, match="repeats"):
        evaluate_checkpoint(tiny, steps=2, n=10, repeats=0)


def test_evaluate_without_json_prints_key_value_lines(tiny, capsys):
    assert main(["evaluate", "--checkpoint", tiny, "--steps", "2", "--n", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "nfe: 2" in out and "fd: " in out


def test_evaluate_toy2d_reports_sliced_w2_not_fd(capsys):
    record = run_json(capsys, "--checkpoint", "toy2d", "--sampler", "dpmpp2m", "--steps", "10", "--n", "300")
    assert "fd" not in record and "label_accuracy" not in record and record["nfe"] == 10
    assert 0 < record["sliced_w2"] < 0.2  # 300 points of the mixture vs 300 others: about 0.08


def test_evaluate_on_shipped_mnist_cond(capsys):
    record = run_json(capsys, "--checkpoint", "mnist-cond", "--steps", "5", "--n", "10", "--guidance", "3")
    assert KEYS <= set(record) and record["nfe"] == 10 and record["guidance"] == 3.0
    assert record["label_accuracy"] >= 0.7  # 1.0 measured (seeds 0, 1, 2)


def test_scores_of_real_digits():
    """Held-out digits score FD 0 against themselves and the classifier's held-out accuracy (97.8 %)."""
    images, labels = load_mnist("heldout")
    scores = evaluate_samples(images, labels)
    assert abs(scores["fd"]) < 1e-6 and scores["label_accuracy"] == pytest.approx(0.978)
    assert scores["label_accuracy_low"] < 0.978 < scores["label_accuracy_high"]
    train_images, _ = load_mnist("train")  # in class order: take a random subset
    real = train_images[torch.randperm(4500, generator=torch.Generator().manual_seed(0))[:500]]
    floor = evaluate_samples(real)["fd"]  # real vs real at n = 500: about 100 (finite-sample bias)
    assert 50 < floor < 200
    noise = torch.randn(500, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert evaluate_samples(noise)["fd"] > 30 * floor
    assert load_classifier() is load_classifier("cpu")


def test_toy_reference_is_fixed_and_scored():
    assert torch.equal(toy_reference(100), toy_reference(100))
    assert evaluate_samples(toy_reference(500))["sliced_w2"] == 0.0


def test_every_sampler_option_is_a_flag_that_reaches_the_sampler(tiny, capsys):
    """The flags come from the registry: each option of each sampler, typed by the sampler's default."""
    record = run_json(capsys, "--checkpoint", tiny, "--sampler", "unipc", "--order", "3", "--no-corrector",
                      "--steps", "4", "--n", "10")  # fmt: skip
    assert record["options"] == {"order": 3, "corrector": False}
    checkpoint = load_checkpoint(tiny, device="cpu")
    expected, _ = generate_samples(checkpoint, "unipc", 4, n=10, seed=0, order=3, corrector=False)
    default, _ = generate_samples(checkpoint, "unipc", 4, n=10, seed=0)
    assert not torch.allclose(expected, default)
    record = run_json(capsys, "--checkpoint", tiny, "--sampler", "ddpm", "--variance", "beta", "--clip-x0",
                      "--steps", "4", "--n", "10")  # fmt: skip
    assert record["options"] == {"variance": "beta", "clip_x0": True}
    flags = set(vars(build_parser().parse_args(["evaluate", "--checkpoint", "x"])))
    assert {o for spec in SAMPLERS.values() for o in spec.options} <= flags


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "argv, words",
    [
        (["evaluate", "--checkpoint", "toy2d", "--guidance", "3"], ["guidance=3.0", "unconditional"]),
        (["sample", "--checkpoint", "TINY", "--label", "10", "--out", "x.png"], ["label=10", "0..9"]),
        (["evaluate", "--checkpoint", "TINY", "--sampler", "ddpm", "--eta", "0.5"], ["eta=0.5", "ddim"]),
        (
            ["evaluate", "--checkpoint", "TINY", "--order", "3"],
            ["order=3", "'ddim' takes", "option of unipc"],
        ),
        (["evaluate", "--checkpoint", "TINY", "--steps", "1001"], ["steps=1001", "1..1000"]),
        (
            ["evaluate", "--checkpoint", "TINY", "--sampler", "plms"],
            ["sampler='plms'", "ddim, ddpm, dpmpp2m"],
        ),
        (["evaluate", "--checkpoint", "no-such-model"], ["no-such-model", "known checkpoints: ", "toy2d"]),
        (["sample", "--checkpoint", "toy2d", "--label", "1", "--out", "x.png"], ["label=1", "unconditional"]),
        (["evaluate", "--checkpoint", "TINY", "--strategy", "cubic"], ["strategy='cubic'", "trailing"]),
    ],
)
def test_bad_flags_give_one_line_errors(tiny, tmp_path, capsys, argv, words):
    argv = [tiny if a == "TINY" else str(tmp_path / a) if a.endswith(".png") else a for a in argv]
    assert main([*argv, "--n", "4", "--quiet"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert all(w in err for w in words), err
    assert not list(tmp_path.glob("*.png"))


def test_module_entry_point_exits_2_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "diffusion_course", "evaluate", "--checkpoint", "toy2d", "--guidance", "3"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "unconditional" in proc.stderr

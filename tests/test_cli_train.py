import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

from diffusion_course.checkpoints import load_checkpoint
from diffusion_course.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def keep_thread_count():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_writes_a_checkpoint_that_loads(tmp_path, capsys):
    assert main(["train", "--config", "test-tiny", "--out", str(tmp_path), "--steps", "3", "--quiet",
                 "--threads", "1", "--seed", "4"]) == 0  # fmt: skip
    assert "wrote" in capsys.readouterr().out
    assert {p.name for p in tmp_path.iterdir()} == {
        "test-tiny.json",
        "test-tiny.safetensors",
        "train_state.pt",
    }
    checkpoint = load_checkpoint(tmp_path / "test-tiny", device="cpu")
    model, info = checkpoint.model, checkpoint.info
    assert info["model"]["kind"] == "tiny_unet" and model.config == info["model"]["config"]
    assert info["step"] == 3 and info["seed"] == 4 and info["train_config"]["steps"] == 3
    assert info["command"] == (
        "python -m diffusion_course train --config test-tiny --out "
        f"{tmp_path} --steps 3 --quiet --threads 1 --seed 4"
    )
    assert info["device"] == "cpu" and info["seconds"] > 0 and info["world_size"] == 1
    assert info["schedule"] == {"name": "linear", "T": 1000} and info["data"] == "synthetic-digits"
    assert (checkpoint.schedule.name, checkpoint.schedule.T, checkpoint.classes) == ("linear", 1000, None)
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28), torch.tensor([0, 999]))
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()


def test_resume_continues_to_the_same_weights(tmp_path):
    common = ["--config", "test-toy2d", "--quiet", "--threads", "1"]
    assert main(["train", *common, "--out", str(tmp_path / "straight"), "--steps", "6"]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "split"), "--steps", "2"]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "split"), "--steps", "6", "--resume"]) == 0
    straight = load_checkpoint(tmp_path / "straight" / "test-toy2d", device="cpu").model
    split = load_checkpoint(tmp_path / "split" / "test-toy2d", device="cpu")
    assert split.info["step"] == 6 and split.info["resumed"] is True
    for a, b in zip(straight.state_dict().values(), split.model.state_dict().values()):
        assert torch.equal(a, b)


def test_time_budget_stops_with_a_checkpoint_and_resume_finishes(tmp_path, capsys):
    common = ["--config", "test-toy2d", "--quiet", "--threads", "1", "--steps", "6"]
    assert main(["train", *common, "--out", str(tmp_path / "straight")]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "cut"), "--time-budget", "0"]) == 0
    assert "stopped at the time budget of 0 s, --resume continues" in capsys.readouterr().out
    cut = load_checkpoint(tmp_path / "cut" / "test-toy2d", device="cpu")
    assert cut.info["step"] == 1 and cut.info["stopped"] == "time budget" and cut.info["time_budget"] == 0.0
    assert main(["train", *common, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    resumed = load_checkpoint(tmp_path / "cut" / "test-toy2d", device="cpu")
    straight = load_checkpoint(tmp_path / "straight" / "test-toy2d", device="cpu")
    assert resumed.info["step"] == 6 and resumed.info["stopped"] is None
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    capsys.readouterr()
    assert main(["train", *common, "--out", str(tmp_path / "bad"), "--time-budget", "-1"]) == 2
    assert capsys.readouterr().err.startswith("error: time_budget=-1.0 is not allowed: must be ≥ 0")


def test_classifier_config_records_its_accuracy(tmp_path):
    assert (
        main(["train", "--config", "test-classifier", "--out", str(tmp_path), "--quiet", "--threads", "1"])
        == 0
    )
    checkpoint = load_checkpoint(tmp_path / "test-classifier", device="cpu")
    model, info = checkpoint.model, checkpoint.info
    assert info["model"]["kind"] == "classifier" and info["weights"] == "raw"
    assert checkpoint.schedule is None and checkpoint.classes == 10
    assert 0.0 <= info["metrics"]["train_accuracy"] <= 1.0
    assert model.features(torch.zeros(1, 1, 28, 28)).shape == (1, 8)


def test_module_entry_point_trains_a_conditional_model(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "diffusion_course", "train", "--config", "test-tiny-cond",
         "--out", str(tmp_path), "--steps", "2", "--name", "cond", "--quiet", "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    checkpoint = load_checkpoint(tmp_path / "cond", device="cpu")
    assert checkpoint.model.num_classes == 10 == checkpoint.classes and checkpoint.info["weights"] == "ema"
    assert checkpoint.info["train_config"]["p_uncond"] == 0.2


def test_errors_exit_with_a_message(tmp_path, capsys):
    assert main(["train", "--config", "no-such-run", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no-such-run" in err and "mnist-cond" in err and "test-tiny" in err
    assert main(["train", "--config", "test-tiny", "--out", str(tmp_path), "--steps", "0", "--quiet"]) == 2
    assert "steps=0" in capsys.readouterr().err
    assert main(["train", "--config", "test-classifier", "--out", str(tmp_path), "--resume", "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--config", "test-tiny"])  # --out is required
    with pytest.raises(SystemExit):
        main([])


def test_configs_command_and_console_script(capsys):
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out
    for name in ("mnist-cond", "mnist-classifier", "toy2d", "test-tiny"):
        assert name in listed
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("diffusion-course") == "diffusion_course.cli:main"

import json
import os
import pickle

import pytest
import torch

from diffusion_course import checkpoints
from diffusion_course.checkpoints import (
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_training_state,
    read_checkpoint_info,
    save_checkpoint,
    save_training_state,
)
from diffusion_course.models import MLP, Classifier, UNet
from diffusion_course.schedules import cosine_schedule, linear_schedule

pytestmark = pytest.mark.usefixtures("one_thread")


CONFIG = dict(base_channels=8, channel_mults=(1, 2, 2), attention_resolutions=(7,), num_classes=10)


def trained_pair(seed=0):
    """A conditional UNet and a different 'EMA' copy, both with every layer non-zero."""
    torch.manual_seed(seed)
    model, ema = UNet(**CONFIG), UNet(**CONFIG)
    with torch.no_grad():
        for p, e in zip(model.parameters(), ema.parameters()):
            p.normal_(0, 0.05)
            e.copy_(p + 0.01 * torch.randn_like(p))
    return model, ema


@torch.no_grad()
def outputs(model):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 28, 28, generator=gen)
    return model(x, torch.tensor([0, 400, 999]), labels=torch.tensor([1, 10, 7]))


class WritesMarker:
    """Unpickling this object creates a file: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_round_trip_gives_the_ema_weights_and_the_same_outputs(tmp_path):
    model, ema = trained_pair()
    path = save_checkpoint(
        tmp_path / "run", model, ema, config={"lr": 1e-3}, schedule=linear_schedule(1000), data="mnist-train",
        step=123, seed=7, command="python -m diffusion_course train", metrics={"loss": 0.03},
        extra={"seconds": 1.5},
    )  # fmt: skip
    assert path == tmp_path / "run.json" and (tmp_path / "run.safetensors").is_file()
    checkpoint = load_checkpoint(tmp_path / "run", device="cpu")
    loaded, info = checkpoint.model, checkpoint.info
    assert isinstance(loaded, UNet) and not loaded.training and loaded.config == model.config
    for a, b in zip(loaded.state_dict().values(), ema.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(outputs(loaded), outputs(ema))
    assert not torch.allclose(outputs(loaded), outputs(model))
    assert info["model"]["kind"] == "unet" and info["weights"] == "ema"
    assert info["schedule"] == {"name": "linear", "T": 1000}
    assert (info["step"], info["seed"], info["data"]) == (123, 7, "mnist-train")
    assert info["command"] == "python -m diffusion_course train" and info["metrics"] == {"loss": 0.03}
    assert info["train_config"] == {"lr": 1e-3} and info["seconds"] == 1.5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_a_checkpoint_holds_the_model_its_schedule_info_and_classes(tmp_path):
    model, ema = trained_pair()
    save_checkpoint(tmp_path / "cond", model, ema, schedule=cosine_schedule(200), step=9)
    checkpoint = load_checkpoint(tmp_path / "cond", device="cpu")
    assert isinstance(checkpoint, Checkpoint)
    assert isinstance(checkpoint.model, UNet) and not checkpoint.model.training
    assert next(checkpoint.model.parameters()).device == torch.device("cpu")
    assert checkpoint.info["step"] == 9 and checkpoint.info["json_path"] == str(tmp_path / "cond.json")
    assert checkpoint.info["schedule"] == {"name": "cosine", "T": 200}
    assert (checkpoint.schedule.name, checkpoint.schedule.T) == ("cosine", 200)
    assert torch.equal(checkpoint.schedule.betas, cosine_schedule(200).betas)
    assert checkpoint.classes == 10 == checkpoint.model.num_classes
    with pytest.raises(AttributeError):
        checkpoint.model = model  # frozen


def test_unconditional_and_classifier_checkpoints(tmp_path):
    save_checkpoint(tmp_path / "toy", MLP(hidden=8, depth=1), schedule=linear_schedule(1000))
    toy = load_checkpoint(tmp_path / "toy", device="cpu")
    assert toy.classes is None and toy.model.num_classes is None
    assert torch.equal(toy.schedule.betas, linear_schedule(1000).betas)
    save_checkpoint(tmp_path / "clf", Classifier(num_classes=7, width=4, feature_dim=8))
    clf = load_checkpoint(tmp_path / "clf", device="cpu")
    assert clf.classes == 7 and clf.schedule is None and isinstance(clf.model, Classifier)


def test_a_zero_snr_schedule_is_rebuilt_and_an_unknown_one_refused(tmp_path):
    zero_snr = linear_schedule(100).rescale_zero_terminal_snr()
    save_checkpoint(tmp_path / "ckpt", MLP(hidden=8, depth=1), schedule=zero_snr)
    loaded = load_checkpoint(tmp_path / "ckpt", device="cpu").schedule
    assert loaded.name == zero_snr.name and torch.allclose(loaded.betas, zero_snr.betas)
    edit_json(tmp_path / "ckpt.json", lambda i: i.update(schedule={"name": "custom", "T": 100}))
    with pytest.raises(ValueError, match=r"ckpt\.json: cannot rebuild the noise schedule .*'custom'"):
        load_checkpoint(tmp_path / "ckpt")


def test_raw_weights_are_optional(tmp_path):
    model, ema = trained_pair()
    save_checkpoint(tmp_path / "with_raw", model, ema, include_raw=True)
    raw = load_checkpoint(tmp_path / "with_raw.safetensors", device="cpu", weights="raw").model
    assert all(torch.equal(a, b) for a, b in zip(raw.state_dict().values(), model.state_dict().values()))
    primary = load_checkpoint(tmp_path / "with_raw.json", device="cpu").model
    assert all(torch.equal(a, b) for a, b in zip(primary.state_dict().values(), ema.state_dict().values()))
    save_checkpoint(tmp_path / "ema_only", model, ema)
    with pytest.raises(ValueError, match="no raw weights"):
        load_checkpoint(tmp_path / "ema_only", weights="raw")
    save_checkpoint(tmp_path / "plain", model)
    plain = load_checkpoint(tmp_path / "plain", device="cpu")
    assert plain.info["weights"] == "raw" and torch.equal(outputs(plain.model), outputs(model))
    with pytest.raises(ValueError, match="weights"):
        load_checkpoint(tmp_path / "plain", weights="best")


def test_a_folder_gets_the_stem_model(tmp_path):
    save_checkpoint(tmp_path, MLP(hidden=8, depth=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    assert load_checkpoint(tmp_path / "model", device="cpu").info["model"]["kind"] == "mlp"


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    first = MLP(hidden=8, depth=1)
    save_checkpoint(tmp_path / "ckpt", first)
    before = (tmp_path / "ckpt.safetensors").read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ckpt", MLP(hidden=8, depth=1))
    monkeypatch.undo()
    assert (tmp_path / "ckpt.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.json", "ckpt.safetensors"]
    load_checkpoint(tmp_path / "ckpt", device="cpu")


def edit_json(path, change):
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))


def test_tampered_json_raises_naming_the_file(tmp_path):
    save_checkpoint(tmp_path / "ckpt", MLP(hidden=8, depth=1))
    json_path = tmp_path / "ckpt.json"
    good = json_path.read_text()

    json_path.write_text(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"ckpt\.json is not valid JSON"):
        load_checkpoint(json_path)
    json_path.write_text(good)
    edit_json(json_path, lambda i: i["model"].update(kind="evil"))
    with pytest.raises(
        ValueError,
        match=r"ckpt\.json: unknown model kind 'evil'; known kinds are autoencoder, classifier, flow, mlp",
    ):
        load_checkpoint(json_path)
    json_path.write_text(good)
    edit_json(json_path, lambda i: i["model"]["config"].update(hidden=-3))
    with pytest.raises(ValueError, match=r"ckpt\.json: cannot rebuild the model: hidden=-3"):
        load_checkpoint(json_path)
    json_path.write_text(good)
    edit_json(json_path, lambda i: i["model"]["config"].update(hidden=16))  # valid, but not these weights
    with pytest.raises(ValueError, match=r"ckpt\.safetensors does not fit the model"):
        load_checkpoint(json_path)
    json_path.write_text(good)
    edit_json(json_path, lambda i: i.pop("format"))
    with pytest.raises(ValueError, match="not a diffusion_course.checkpoint file"):
        load_checkpoint(json_path)


@pytest.mark.parametrize("keep_hash", [True, False])
def test_truncated_weights_raise(tmp_path, keep_hash):
    save_checkpoint(tmp_path / "ckpt", MLP(hidden=8, depth=1))
    if not keep_hash:
        edit_json(tmp_path / "ckpt.json", lambda i: i.pop("safetensors_sha256"))
    weights = tmp_path / "ckpt.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(
        ValueError, match=r"ckpt\.safetensors (does not match the SHA-256|is not a valid safetensors)"
    ):
        load_checkpoint(tmp_path / "ckpt")


@pytest.mark.parametrize("keep_hash", [True, False])
def test_a_pickle_renamed_to_safetensors_is_rejected_without_running_it(tmp_path, keep_hash):
    save_checkpoint(tmp_path / "ckpt", MLP(hidden=8, depth=1))
    if not keep_hash:
        edit_json(tmp_path / "ckpt.json", lambda i: i.pop("safetensors_sha256"))
    marker = tmp_path / "code_ran"
    (tmp_path / "ckpt.safetensors").write_bytes(pickle.dumps(WritesMarker(marker)))
    with pytest.raises(ValueError, match=r"ckpt\.safetensors"):
        load_checkpoint(tmp_path / "ckpt")
    assert not marker.exists()
    torch.save({"x": WritesMarker(marker)}, tmp_path / "ckpt.safetensors")  # a torch pickle archive too
    with pytest.raises(ValueError, match=r"ckpt\.safetensors"):
        load_checkpoint(tmp_path / "ckpt")
    assert not marker.exists()


def test_missing_weights_file_raises(tmp_path):
    save_checkpoint(tmp_path / "ckpt", MLP(hidden=8, depth=1))
    (tmp_path / "ckpt.safetensors").unlink()
    with pytest.raises(ValueError, match="has no weights file"):
        load_checkpoint(tmp_path / "ckpt")


def test_registry_resolves_names_and_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSION_COURSE_DATA", str(tmp_path))
    assert list_checkpoints() == []
    with pytest.raises(ValueError, match=r"known checkpoints: \(none\)"):
        load_checkpoint("mnist-cond")
    model = MLP(hidden=8, depth=1)
    save_checkpoint(tmp_path / "checkpoints" / "toy", model, step=5)
    save_checkpoint(tmp_path / "checkpoints" / "alpha", model)
    (tmp_path / "checkpoints" / "orphan.json").write_text("{}")  # no weights beside it: not listed
    assert list_checkpoints() == ["alpha", "toy"]
    assert (
        load_checkpoint("toy", device="cpu").info["step"] == 5
        and read_checkpoint_info("toy")["name"] == "toy"
    )
    with pytest.raises(ValueError, match="'mnist-cond'.*known checkpoints: alpha, toy"):
        load_checkpoint("mnist-cond")


def test_training_state_round_trip_and_refusals(tmp_path):
    state = {
        "step": 3,
        "losses": [0.5, 0.4],
        "weights": {"w": torch.arange(4.0)},
        "rng": [torch.get_rng_state()],
    }
    path = tmp_path / "train_state.pt"
    save_training_state(path, state)
    back = load_training_state(path)
    assert (
        back["step"] == 3
        and back["losses"] == [0.5, 0.4]
        and torch.equal(back["weights"]["w"], torch.arange(4.0))
    )

    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(RuntimeError, match=r"train_state\.pt cannot be read safely"):
        load_training_state(path)
    marker = tmp_path / "code_ran"
    torch.save({"step": WritesMarker(marker)}, path)
    with pytest.raises(RuntimeError, match=r"train_state\.pt cannot be read safely"):
        load_training_state(path)
    assert not marker.exists()


def test_written_files_are_readable_by_others(tmp_path):
    save_checkpoint(tmp_path / "ckpt", MLP(hidden=8, depth=1))
    mask = os.umask(0)
    os.umask(mask)
    for name in ("ckpt.json", "ckpt.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask

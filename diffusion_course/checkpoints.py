"""Checkpoints: weights in safetensors, everything else in a JSON file beside them; the shipped registry.

A checkpoint called ``mnist-cond`` is two files:

- ``mnist-cond.safetensors`` — the weights to sample with, under the model's own ``state_dict`` names.
  When an EMA model is given these are the **EMA weights**; the raw training weights are added under the
  prefix ``raw.`` only with ``include_raw=True``.
- ``mnist-cond.json`` — the model kind and config (enough to rebuild it), which weights were stored,
  the schedule, data, step, seed, training config and command, metrics, and the SHA-256 of the weights file.

Both are written atomically (a temporary file in the same folder, then ``os.replace``), so a crash never
leaves half a file under the real name. Loading uses safetensors and JSON only: a checkpoint file cannot run
code. The resume state of a run (optimizer, RNG states) is a separate ``torch.save`` file that is read back
with ``torch.load(weights_only=True)``, which also refuses to build arbitrary objects.

Shipped checkpoints live in ``data/checkpoints/`` beside the package (or in
``$DIFFUSION_COURSE_DATA/checkpoints``) and are loaded by name: ``load_checkpoint("mnist-cond")`` returns a
:class:`Checkpoint`, the model with the noise schedule it was trained with, its JSON and its classes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn

from ._checks import check_choice, fail
from .data import data_dir
from .models import MODEL_KINDS, build_model, count_parameters, model_kind
from .profiles import resolve_device
from .schedules import NoiseSchedule, make_schedule

FORMAT = "diffusion_course.checkpoint"
FORMAT_VERSION = 1
RAW_PREFIX = "raw."
ZERO_SNR_SUFFIX = "+zero_snr"  # NoiseSchedule.rescale_zero_terminal_snr() appends this to the schedule's name


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A loaded checkpoint, as :func:`load_checkpoint` returns it.

    - ``model``: the network with the stored weights, in eval mode, on the requested device.
    - ``schedule``: the :class:`~diffusion_course.schedules.NoiseSchedule` the model was trained with, rebuilt
      from the name and T in the JSON; ``None`` for a checkpoint that records none (the digit classifier).
    - ``info``: the JSON as a dict (model kind and config, training config, command, metrics, …), plus
      ``json_path``, the file it was read from.
    - ``classes``: K, the number of classes: a class-conditional ε-model takes labels 0..K−1 (and K, its null
      class, for the unconditional prediction); a classifier predicts one of 0..K−1. ``None`` for an
      unconditional model. The JSON records no class names: for the MNIST models class k is the digit k.
    - ``autoencoder``: for a latent diffusion model, the :class:`~diffusion_course.models.Autoencoder` whose
      scaled latents it generates (``generate_samples`` decodes with it); ``None`` otherwise.
    """

    model: nn.Module
    schedule: NoiseSchedule | None
    info: dict
    classes: int | None
    autoencoder: nn.Module | None = None


MINE = "mine"  # the learner's own model, trained in notebook 02


def my_checkpoint_path() -> Path:
    """Where notebook 02 saves the learner's model: ``my_checkpoints/mine.json`` beside the notebooks (the
    working directory), or ``$DIFFUSION_COURSE_MY_CHECKPOINTS/mine.json``."""
    return Path(os.environ.get("DIFFUSION_COURSE_MY_CHECKPOINTS", "my_checkpoints")) / f"{MINE}.json"


def load_lesson_checkpoint(name: str = "mnist-cond", device: str | torch.device = "auto", *,
                           fallback: str = "mnist-cond") -> Checkpoint:  # fmt: skip
    """The model a lesson samples: a shipped name, a path, or ``"mine"``, the learner's own model from
    notebook 02, which falls back to the shipped ``fallback`` (saying so) while the learner has none."""
    if name == MINE and not my_checkpoint_path().is_file():
        print(f"You have no model of your own yet ({my_checkpoint_path()} does not exist): train one in "
              f"notebook 02 ('Train your own'). This lesson uses the shipped {fallback!r}.")  # fmt: skip
        name = fallback
    return load_checkpoint(name, device)


def checkpoints_dir() -> Path:
    """``data_dir()/checkpoints``: the repository's ``data/`` folder, or ``$DIFFUSION_COURSE_DATA``."""
    return data_dir() / "checkpoints"


def list_checkpoints() -> list[str]:
    """Registered names: each ``<name>.json`` with its ``.safetensors`` in ``checkpoints_dir()``."""
    folder = checkpoints_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if p.with_suffix(".safetensors").is_file())


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file in ``path``'s folder, fsync it, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def checkpoint_stem(path: str | os.PathLike) -> Path:
    """``runs/x``, ``runs/x.json``, ``runs/x.safetensors`` → stem ``runs/x``; a folder → ``folder/model``."""
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        return path.with_suffix("")
    if path.is_dir():
        return path / "model"
    return path


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    ema_model: nn.Module | None = None,
    *,
    config: dict | None = None,
    schedule=None,
    data: str | None = None,
    step: int | None = None,
    seed: int | None = None,
    command: str | None = None,
    metrics: dict | None = None,
    extra: dict | None = None,
    include_raw: bool = False,
) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json``; return the JSON path.

    ``path`` is a stem (``runs/mnist-cond``), either file name, or an existing folder (then the stem is
    ``<folder>/model``). ``config`` is the training configuration (e.g. ``dataclasses.asdict(TrainConfig)``);
    ``schedule`` a ``NoiseSchedule`` (its name and T are recorded); ``extra`` is merged into the JSON
    (wall-clock seconds, device, …).
    """
    stem = checkpoint_stem(path)
    kind = model_kind(model)
    primary = ema_model if ema_model is not None else model
    if model_kind(primary) != kind:
        fail("ema_model", type(primary).__name__, f"expected the same kind of model as model ({kind})")
    tensors = {k: v.detach().cpu().contiguous() for k, v in primary.state_dict().items()}
    if ema_model is not None and include_raw:
        tensors.update({RAW_PREFIX + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    weights = safetensors_save(tensors, metadata={"format": FORMAT, "kind": kind})

    info = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "name": stem.name,
        "model": {"kind": kind, "config": _jsonable(model.config)},
        "weights": "ema" if ema_model is not None else "raw",
        "has_raw_weights": ema_model is not None and include_raw,
        "num_parameters": count_parameters(model),
        "schedule": None if schedule is None else {"name": schedule.name, "T": schedule.T},
        "data": data,
        "step": step,
        "seed": seed,
        "train_config": _jsonable(config),
        "command": command,
        "metrics": _jsonable(metrics or {}),
        "torch_version": torch.__version__,
        "safetensors_sha256": hashlib.sha256(weights).hexdigest(),
    }
    info.update(_jsonable(extra or {}))
    atomic_write_bytes(stem.with_suffix(".safetensors"), weights)
    json_path = stem.with_suffix(".json")
    atomic_write_bytes(json_path, (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode())
    return json_path


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """The JSON path of a checkpoint given by registry name, stem, or either file's path."""
    text = str(name_or_path)
    stem = checkpoint_stem(name_or_path)
    if stem.with_suffix(".json").is_file():
        return stem.with_suffix(".json")
    if text == MINE and my_checkpoint_path().is_file():
        return my_checkpoint_path()
    is_bare_name = os.sep not in text and "/" not in text and not text.endswith((".json", ".safetensors"))
    if is_bare_name and (checkpoints_dir() / f"{text}.json").is_file():
        return checkpoints_dir() / f"{text}.json"
    known = list_checkpoints()
    fail(
        "name_or_path",
        text,
        f"no checkpoint {stem.with_suffix('.json')} and no registered name {text!r} in {checkpoints_dir()}; "
        f"known checkpoints: {', '.join(known) if known else '(none)'}",
    )


def read_checkpoint_info(name_or_path: str | os.PathLike) -> dict:
    """The checkpoint's JSON, checked: format, model kind and config present."""
    json_path = resolve_checkpoint(name_or_path)
    try:
        info = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint file {json_path} is not valid JSON ({err})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"checkpoint file {json_path} is not a {FORMAT} file (missing or wrong 'format')")
    model = info.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("config"), dict):
        raise ValueError(f"checkpoint file {json_path} has no model kind/config ('model': {model!r})")
    if model.get("kind") not in MODEL_KINDS:
        raise ValueError(
            f"checkpoint file {json_path}: unknown model kind {model.get('kind')!r}; "
            f"known kinds are {', '.join(sorted(MODEL_KINDS))}"
        )
    info["json_path"] = str(json_path)
    return info


def load_checkpoint(
    name_or_path: str | os.PathLike, device: str | torch.device = "auto", weights: str = "primary"
) -> Checkpoint:
    """Rebuild the model and its noise schedule from the JSON and load the weights: a :class:`Checkpoint`.

    ``weights="primary"`` loads the stored sampling weights (EMA when the run had one); ``"raw"`` loads the
    raw training weights of a checkpoint saved with ``include_raw=True``.
    """
    check_choice("weights", weights, ("primary", "raw"))
    info = read_checkpoint_info(name_or_path)
    json_path = Path(info["json_path"])
    weights_path = json_path.with_suffix(".safetensors")
    try:
        model = build_model(info["model"]["kind"], **info["model"]["config"])
    except ValueError as err:
        raise ValueError(f"checkpoint file {json_path}: cannot rebuild the model: {err}") from None
    schedule = _recorded_schedule(info, json_path)

    if not weights_path.is_file():
        raise ValueError(f"checkpoint {json_path} has no weights file {weights_path}")
    payload = weights_path.read_bytes()
    expected = info.get("safetensors_sha256")
    if expected is not None and hashlib.sha256(payload).hexdigest() != expected:
        raise ValueError(
            f"weights file {weights_path} does not match the SHA-256 recorded in {json_path}: "
            "the file is truncated, corrupted or was replaced"
        )
    try:
        tensors = safetensors_load(payload)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as err:
        raise ValueError(f"weights file {weights_path} is not a valid safetensors file ({err})") from None

    if weights == "raw":
        if not info.get("has_raw_weights"):
            raise ValueError(
                f"checkpoint {json_path} stores no raw weights (it was saved without include_raw)"
            )
        tensors = {k[len(RAW_PREFIX) :]: v for k, v in tensors.items() if k.startswith(RAW_PREFIX)}
    else:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(RAW_PREFIX)}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"weights file {weights_path} does not fit the model in {json_path}: {err}"
        ) from None
    classes = info["model"]["config"].get("num_classes")
    autoencoder = _recorded_autoencoder(info, json_path, device)
    return Checkpoint(model.to(resolve_device(device)).eval(), schedule, info, classes, autoencoder)


def _recorded_autoencoder(info: dict, json_path: Path, device) -> nn.Module | None:
    """A latent model's autoencoder (``info["autoencoder"]``: name and weights' SHA-256), loaded from beside
    the checkpoint or from the shipped ones; the hash must match the one the latent model was trained on."""
    record = info.get("autoencoder")
    if record is None:
        return None
    sibling = json_path.parent / f"{record['name']}.json"
    found = load_checkpoint(sibling if sibling.is_file() else record["name"], device)
    if found.info.get("safetensors_sha256") != record["safetensors_sha256"]:
        raise ValueError(
            f"checkpoint {json_path} was trained on the latents of autoencoder {record['name']!r} with "
            f"weights SHA-256 {record['safetensors_sha256'][:12]}…, but {found.info['json_path']} has "
            f"{str(found.info.get('safetensors_sha256'))[:12]}…: decoding with other weights gives wrong "
            "images"
        )
    return found.model


def _recorded_schedule(info: dict, json_path: Path) -> NoiseSchedule | None:
    """The schedule ``save_checkpoint`` recorded (``{"name", "T"}``), rebuilt; None when there is none."""
    record = info.get("schedule")
    if record is None:
        return None
    try:
        name, T = record["name"], record["T"]
        base = name.removesuffix(ZERO_SNR_SUFFIX)
        return make_schedule(base, T, zero_terminal_snr=base != name)
    except (TypeError, KeyError, AttributeError, ValueError) as err:
        raise ValueError(
            f"checkpoint file {json_path}: cannot rebuild the noise schedule {record!r}: {err}"
        ) from None


def save_training_state(path: str | os.PathLike, state: dict) -> None:
    """Atomically ``torch.save`` a resume state (tensors, numbers, strings, lists and dicts only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_training_state(path: str | os.PathLike) -> dict:
    """Read a resume state with ``torch.load(weights_only=True)``: no arbitrary objects are unpickled."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/unsafe files
        raise RuntimeError(
            f"training state {path} cannot be read safely ({type(err).__name__}: {err})"
        ) from None


def _jsonable(value):
    """Tuples → lists, devices/paths → strings, recursively, so that ``json.dumps`` accepts the value."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)

"""The train-your-own app, driven headless with a tiny config and budget (no browser, no kernel)."""

import pytest
import torch

from diffusion_course.checkpoints import load_checkpoint, load_lesson_checkpoint, resolve_checkpoint
from diffusion_course.widgets import BackgroundTraining, train_your_own_app


@pytest.fixture
def my_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSION_COURSE_MY_CHECKPOINTS", str(tmp_path / "my_checkpoints"))
    return tmp_path / "my_checkpoints"


def test_a_run_trains_in_the_background_saves_mine_and_continues(my_folder):
    updates = []
    run = BackgroundTraining("test-tiny-cond", refresh_every=2, on_update=lambda: updates.append(run.step))
    run.start(budget=600)
    run.join(timeout=120)
    assert not run.running and run.error is None, run.status
    assert run.step == 4 and len(run.losses) == 4 and "reached its last step" in run.status
    assert run.samples.shape == (10, 1, 28, 28) and torch.isfinite(run.samples).all()
    assert updates and updates[-1] == 4
    assert resolve_checkpoint("mine") == my_folder / "mine.json"
    mine = load_checkpoint("mine", device="cpu")
    assert mine.info["step"] == 4 and mine.info["run_config"] == "test-tiny-cond" and mine.classes == 10
    run.start(budget=600)  # continues from the resume state: nothing is left to train
    run.join(timeout=120)
    assert run.error is None and run.step == 4 and len(run.losses) == 4


def test_the_budget_and_the_stop_button_end_the_run_with_a_checkpoint(my_folder):
    run = BackgroundTraining("test-tiny-cond")
    run.start(budget=0)
    run.join(timeout=120)
    assert run.step == 1 and "time budget" in run.status and (my_folder / "mine.json").is_file()
    stopper = BackgroundTraining("test-tiny-cond", out_dir=my_folder.parent / "other")
    stopper.on_update = lambda: stopper.step >= 2 and stopper.stop()
    stopper.start(budget=600)
    stopper.join(timeout=120)
    assert stopper.step == 2 and "you stopped it" in stopper.status
    assert (
        load_checkpoint(my_folder.parent / "other" / "mine", device="cpu").info["stopped"] == "stop requested"
    )
    with pytest.raises(ValueError, match="^config='mnist-classifier'"):
        BackgroundTraining("mnist-classifier")


def test_the_app_buttons_drive_the_run_and_show_its_progress(my_folder):
    box, run = train_your_own_app("test-tiny-cond", budget=60, refresh_every=2)
    (start, stop, slider), status, (loss_image, sample_image) = (
        box.children[0].children,
        box.children[1],
        box.children[2].children,
    )
    assert slider.value == 60 and status.value == "not started"
    start.click()
    run.join(timeout=120)
    assert run.error is None, run.status
    assert (
        "saved" in status.value
        and loss_image.value[:4] == b"\x89PNG"
        and sample_image.value[:4] == b"\x89PNG"
    )
    stop.click()  # harmless after the end


def test_lessons_load_mine_or_say_they_use_the_shipped_model(my_folder, capsys):
    shipped = load_lesson_checkpoint("mine", device="cpu")
    assert shipped.info["name"] == "mnist-cond" and "no model of your own yet" in capsys.readouterr().out
    run = BackgroundTraining("test-tiny-cond")
    run.start(budget=600)
    run.join(timeout=120)
    assert load_lesson_checkpoint("mine", device="cpu").info["run_config"] == "test-tiny-cond"
    assert capsys.readouterr().out == ""


def test_every_lesson_that_samples_the_shipped_model_can_take_mine():
    """Notebooks 03–10 load their model through MODEL and load_lesson_checkpoint, so MODEL = "mine" works."""
    from pathlib import Path

    notebooks = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))
    lessons = [p for p in notebooks if "03" <= p.name[:2] <= "10"]
    assert len(lessons) == 8
    for path in lessons:
        text = path.read_text()
        assert 'MODEL = "mnist-cond"  # or "mine"' in text, path.name
        assert "load_lesson_checkpoint(MODEL" in text, path.name
        assert 'load_checkpoint("mnist-cond"' not in text, path.name

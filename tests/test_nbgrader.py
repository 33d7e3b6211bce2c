"""The nbgrader course made from notebooks/: releases equal the learner copies, autograding scores the checks.

One course in a temporary folder runs the term's commands once (module fixture): make the source, generate
and release the assignment, a student fetches, answers and submits notebook 01, the instructor collects it;
two more submissions (one with a slip, one untouched) are put in ``submitted/`` by hand; then autograde,
feedback (generated, released, fetched by the student) and the CSV export. The tests below read what those
commands left. Every command of the nbgrader walk-through in docs/INSTRUCTORS.md is run here. The run costs
about a minute of CPU (autograde about 9 s per submission), hence ``slow``; the generator's own tests at the
end are quick.
"""

from __future__ import annotations

import csv
import html
import importlib.util
import math
import os
import pwd
import re
import resource
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbgrader", reason="nbgrader is in the 'class' extra")
from nbgrader.api import Gradebook  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mns = _load("make_nbgrader_source")
mln = mns.mln  # the learner-copy script, as the nbgrader script uses it

ASSIGNMENT = "01_forward_process"  # the cheapest notebook with exercises: about 10 s per graded run
COURSE_ID = "diffusion-course"
SLIP, UNTOUCHED = "slip", "untouched"
# The slip: α_t where ᾱ_t belongs in exercise 2 (q_sample); check_q_sample names this mistake.
SLIP_EXERCISE, SLIP_FROM, SLIP_TO = "exercise_2", "schedule.alpha_bar[t]", "schedule.alphas[t]"
STEP_LIMIT_S = 60  # CPU seconds for each command


@dataclass
class Term:
    """What the module fixture's run of the term left behind."""

    course: Path
    src: Path  # the snapshot of notebooks/ the course was made from
    home: Path  # the submitting student's folder
    student: str  # the one who submitted through the exchange (the OS user), with correct answers
    source: nbformat.NotebookNode  # notebook 01 as generated for nbgrader (solutions in)
    release: nbformat.NotebookNode  # notebook 01 as released to students
    seconds: dict[str, tuple[float, float]]  # step: (wall-clock seconds, CPU seconds)


def _run(step: str, command: list[str], cwd: Path, seconds: dict[str, tuple[float, float]]) -> str:
    """Run ``command``, fail on any error it reports, and add its wall-clock and CPU seconds to ``step``."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",  # nbgrader runs alembic from PATH
        "OMP_NUM_THREADS": "1",
        "DIFFUSION_COURSE_PROFILE": "quick",
        "JUPYTER_CONFIG_DIR": str(cwd / ".jupyter"),  # no settings from this machine's home folder
    }
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - start
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    old_wall, old_cpu = seconds.get(step, (0.0, 0.0))
    seconds[step] = (old_wall + wall, old_cpu + cpu)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # nbgrader logs a broken config file and carries on with its defaults: that must not pass unnoticed
    assert "Exception while loading config" not in output, output
    assert "| ERROR]" not in output, output
    return output


def _nbgrader(*args: str, cwd: Path, seconds: dict[str, tuple[float, float]]) -> str:
    return _run(args[0], [str(BIN / "nbgrader"), *args], cwd=cwd, seconds=seconds)


def _solutions(source: nbformat.NotebookNode) -> dict[str, list[str]]:
    """The solution lines (markers excluded) of each exercise cell, by grade id."""
    blocks = {}
    for cell in source.cells:
        meta = cell.metadata["nbgrader"]
        if meta["solution"]:
            lines = cell.source.split("\n")
            start, end = (
                next(i for i, line in enumerate(lines) if line.strip() == m) for m in (mln.BEGIN, mln.END)
            )
            blocks[meta["grade_id"]] = lines[start + 1 : end]
    return blocks


def _answer(release: nbformat.NotebookNode, solutions: dict[str, list[str]]) -> nbformat.NotebookNode:
    """``release`` with each exercise's stub line replaced by ``solutions[grade_id]``."""
    answered = nbformat.from_dict(release)
    for cell in answered.cells:
        grade_id = cell.metadata["nbgrader"]["grade_id"]
        if grade_id in solutions:
            lines = cell.source.split("\n")
            stub = [
                i for i, line in enumerate(lines) if line.lstrip().startswith("raise NotImplementedError(")
            ]
            assert len(stub) == 1, cell.source
            cell.source = "\n".join(lines[: stub[0]] + solutions[grade_id] + lines[stub[0] + 1 :])
    return answered


def _with_slip(solutions: dict[str, list[str]]) -> dict[str, list[str]]:
    slipped = dict(solutions)
    text = "\n".join(solutions[SLIP_EXERCISE])
    assert SLIP_FROM in text, f"notebook 01's exercise 2 changed: {SLIP_FROM!r} is not in {text!r}"
    slipped[SLIP_EXERCISE] = text.replace(SLIP_FROM, SLIP_TO).split("\n")
    return slipped


@pytest.fixture(scope="module")
def term(tmp_path_factory) -> Term:
    tmp = tmp_path_factory.mktemp("nbgrader")
    course, exchange, home, src = tmp / "course", tmp / "exchange", tmp / "student", tmp / "notebooks"
    seconds: dict[str, tuple[float, float]] = {}
    # a snapshot, so that the comparisons below see the notebooks the course was made from
    src.mkdir()
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(path, src / path.name)

    script = str(ROOT / "scripts" / "make_nbgrader_source.py")
    args = [
        "--src",
        str(src),
        "--course-dir",
        str(course),
        "--course-id",
        COURSE_ID,
        "--exchange",
        str(exchange),
    ]
    _run("make_nbgrader_source", [str(BIN / "python"), script, *args], cwd=tmp, seconds=seconds)
    _nbgrader("generate_assignment", ASSIGNMENT, cwd=course, seconds=seconds)
    _nbgrader("release_assignment", ASSIGNMENT, cwd=course, seconds=seconds)

    # A student's server knows the course and the exchange (on the hub: /etc/jupyter/nbgrader_config.py).
    home.mkdir()
    settings = f"c.CourseDirectory.course_id = {COURSE_ID!r}\nc.Exchange.root = {str(exchange)!r}\n"
    (home / "nbgrader_config.py").write_text("c = get_config()\n" + settings)
    _nbgrader("fetch_assignment", ASSIGNMENT, cwd=home, seconds=seconds)
    fetched = home / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    source = nbformat.read(course / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    release = nbformat.read(fetched, as_version=4)
    solutions = _solutions(source)
    nbformat.write(_answer(release, solutions), fetched)
    _nbgrader("submit", ASSIGNMENT, cwd=home, seconds=seconds)
    _nbgrader("collect", ASSIGNMENT, cwd=course, seconds=seconds)

    for student, notebook in [(SLIP, _answer(release, _with_slip(solutions))), (UNTOUCHED, release)]:
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(notebook, folder / f"{ASSIGNMENT}.ipynb")
        # the two files a submission through the exchange brings along (nbgrader submit writes them)
        (folder / "timestamp.txt").write_text("2026-01-01 12:00:00.000000 UTC")
        (folder / "submission_secret.txt").write_text(secrets.token_hex(64))

    _nbgrader("autograde", ASSIGNMENT, cwd=course, seconds=seconds)
    _nbgrader("generate_feedback", ASSIGNMENT, cwd=course, seconds=seconds)
    _nbgrader("release_feedback", ASSIGNMENT, cwd=course, seconds=seconds)
    _nbgrader("fetch_feedback", ASSIGNMENT, cwd=home, seconds=seconds)
    _nbgrader("export", "--to", "grades.csv", cwd=course, seconds=seconds)
    student = pwd.getpwuid(os.getuid()).pw_name  # nbgrader names a submitter by the OS user
    return Term(course, src, home, student, source, release, seconds)


def _scores(term: Term, student: str) -> dict[str, tuple[float, float]]:
    """(score, max score) of each graded cell of the student's notebook 01, from the gradebook."""
    with Gradebook(f"sqlite:///{term.course / 'gradebook.db'}", COURSE_ID) as gradebook:
        notebook = gradebook.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student)
        return {grade.name: (grade.score, grade.max_score) for grade in notebook.grades}


def _feedback_text(term: Term, student: str) -> str:
    """The words of the student's feedback page: tags dropped, entities decoded, spaces collapsed."""
    page = term.course / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html"
    text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
    return " ".join(text.split())


def _checks(term: Term) -> list[str]:
    return [c.metadata["nbgrader"]["grade_id"] for c in term.source.cells if c.metadata["nbgrader"]["grade"]]


@pytest.mark.slow
def test_each_nbgrader_step_is_fast(term):
    """Each step's CPU time (its processes and the kernels they ran): on a shared machine the wall clock
    mostly measures the other users (at a load average of 6 on 2 cores autograde took 31 s for three
    submissions, at 14 it took 270 s)."""
    report = {step: f"{wall:.0f} s wall, {cpu:.1f} s CPU" for step, (wall, cpu) in term.seconds.items()}
    slow = [step for step, (_, cpu) in term.seconds.items() if cpu > STEP_LIMIT_S]
    assert not slow, f"steps over {STEP_LIMIT_S} s of CPU: {slow}: {report}"


@pytest.mark.slow
def test_released_notebook_is_the_learner_copy_but_for_nbgrader_metadata(term):
    path = term.src / f"{ASSIGNMENT}.ipynb"
    learner = mln.learner_notebook(nbformat.read(path, as_version=4), path.name)
    assert [(c.cell_type, c.source) for c in term.release.cells] == [
        (c.cell_type, c.source) for c in learner.cells
    ]
    assert term.release.metadata == learner.metadata
    nbgrader_keys = {"nbgrader", "editable", "deletable"}
    for released, copy in zip(term.release.cells, learner.cells):
        assert {k: v for k, v in released.metadata.items() if k not in nbgrader_keys} == copy.metadata
        if released.cell_type == "code":
            assert released.outputs == [] and released.execution_count is None


@pytest.mark.slow
def test_every_notebook_releases_as_its_learner_copy(term):
    """All the course's notebooks, not only 01: generate_assignment keeps the learner copies' code cells."""
    _nbgrader("generate_assignment", "*", "--force", cwd=term.course, seconds={})
    paths = sorted(term.src.glob("*.ipynb"))
    assert [path.stem for path in paths] == sorted(p.name for p in (term.course / "release").iterdir())
    for path in paths:
        learner = mln.learner_notebook(nbformat.read(path, as_version=4), path.name)
        released = nbformat.read(term.course / "release" / path.stem / path.name, as_version=4)
        assert [(c.cell_type, c.source) for c in released.cells] == [
            (c.cell_type, c.source) for c in learner.cells
        ], path.name


@pytest.mark.slow
def test_cells_are_solution_test_or_read_only(term):
    kinds = {}
    for cell in term.release.cells:
        meta = cell.metadata["nbgrader"]
        kinds.setdefault((meta["solution"], meta["grade"], meta["locked"]), []).append(cell)
    exercises, tests = kinds.pop((True, False, False)), kinds.pop((False, True, True))
    read_only = kinds.pop((False, False, True))
    assert not kinds, kinds
    assert [c.metadata["nbgrader"]["grade_id"] for c in exercises] == [
        "exercise_1",
        "exercise_2",
        "exercise_3",
    ]
    for number, cell in enumerate(exercises, start=1):
        assert f'raise NotImplementedError("Exercise {number}: write your code here")' in cell.source
        assert cell.metadata["deletable"] is False and cell.metadata.get("editable", True)
    assert _checks(term) == ["check_alpha_bar", "check_q_sample", "check_snr"]
    for cell in tests:
        assert cell.metadata["nbgrader"]["points"] == 1 and cell.metadata["editable"] is False
        assert "HIDDEN TESTS" not in cell.source and "assert" not in cell.source
    for cell in read_only:
        assert cell.metadata["deletable"] is False
        assert cell.metadata.get("editable", True) is (cell.cell_type == "code")


@pytest.mark.slow
def test_test_cells_hide_an_assert_on_the_checker_result(term):
    """The graded version of a checker cell is the released one plus a hidden ``assert result.passed``."""
    pairs = [(s, r) for s, r in zip(term.source.cells, term.release.cells) if s.metadata["nbgrader"]["grade"]]
    assert len(pairs) == 3
    for source, released in pairs:
        first, *rest = released.source.split("\n")
        assert first.startswith("result = check_")
        hidden = [mns.HIDDEN_BEGIN, "assert result.passed, result", mns.HIDDEN_END]
        assert source.source.split("\n") == [first, *hidden, *rest]


@pytest.mark.slow
def test_correct_answers_get_full_points_and_the_student_fetches_the_feedback(term):
    scores = _scores(term, term.student)
    assert set(scores) == set(_checks(term))
    assert all(score == maximum == 1 for score, maximum in scores.values()), scores
    text = _feedback_text(term, term.student)
    assert "failed" not in text and "Score: 3.0 / 3.0" in text
    fetched = list((term.home / ASSIGNMENT / "feedback").glob(f"*/{ASSIGNMENT}.html"))
    assert (
        len(fetched) == 1
        and fetched[0].read_text()
        == (term.course / "feedback" / term.student / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    )


@pytest.mark.slow
def test_a_slip_loses_its_exercise_and_the_feedback_names_it(term):
    import torch

    from diffusion_course.exercises import check_q_sample

    # What the checker says about this slip, computed here from the slipped cell the student wrote
    cell = next(c for c in term.source.cells if c.metadata["nbgrader"]["grade_id"] == SLIP_EXERCISE)
    slipped = _answer(term.release, _with_slip(_solutions(term.source)))
    code = next(c.source for c in slipped.cells if c.metadata["nbgrader"]["grade_id"] == SLIP_EXERCISE)
    assert cell.metadata["nbgrader"]["solution"]
    namespace = {"torch": torch}
    exec(code, namespace)
    verdict = check_q_sample(namespace["q_sample"])
    assert not verdict.passed and verdict.attempted and "`schedule.alphas`" in verdict.message

    scores = _scores(term, SLIP)
    assert scores == {"check_alpha_bar": (1, 1), "check_q_sample": (0, 1), "check_snr": (1, 1)}
    text = _feedback_text(term, SLIP)
    assert verdict.message in text
    assert "AssertionError" in text


@pytest.mark.slow
def test_untouched_notebook_gets_zero_and_is_told_to_start(term):
    scores = _scores(term, UNTOUCHED)
    assert set(scores) == set(_checks(term))
    assert all(score == 0 and maximum == 1 for score, maximum in scores.values()), scores
    text = _feedback_text(term, UNTOUCHED)
    from diffusion_course.exercises import NOT_ATTEMPTED

    assert text.count(" ".join(NOT_ATTEMPTED.split())) == len(scores)


@pytest.mark.slow
def test_export_writes_each_students_total_to_csv(term):
    with open(term.course / "grades.csv", newline="") as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {term.student, SLIP, UNTOUCHED}
    totals = {student: float(row["score"]) for student, row in rows.items()}
    assert totals == {term.student: 3.0, SLIP: 2.0, UNTOUCHED: 0.0}
    assert {row["assignment"] for row in rows.values()} == {ASSIGNMENT}
    assert {float(row["max_score"]) for row in rows.values()} == {3.0}


# ------------------------------------------------------------ the generator on small notebooks (no nbgrader)

EXERCISE = """\
def f(x):
    # BEGIN SOLUTION
    return 2 * x
    # END SOLUTION
f.checked = True  # solution-only"""


def _notebook(*cells: str) -> nbformat.NotebookNode:
    """A notebook of a Markdown title and these code cells (``md:`` in front makes a Markdown cell)."""
    nb = nbformat.v4.new_notebook(metadata={"jupytext": {"formats": "ipynb,py:percent"}})
    nb.cells.append(nbformat.v4.new_markdown_cell("# Title"))
    for source in cells:
        if source.startswith("md:"):
            nb.cells.append(nbformat.v4.new_markdown_cell(source[3:]))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(source))
    return nb


def test_generator_keeps_solutions_and_drops_solution_only_lines_like_the_learner_script():
    nb = _notebook(
        "import torch\nprint(1)  # solution-only",
        EXERCISE,
        "r = check_f(f)\nassert r.passed  # solution-only\nr",
        "assert False  # solution-only",
        "print(2)",
    )
    source = mns.nbgrader_notebook(nb, "nb.ipynb", points=2.5)
    learner = mln.learner_notebook(nb, "nb.ipynb")
    assert len(source.cells) == len(learner.cells) == 5  # the cell left empty is dropped by both
    assert "jupytext" not in source.metadata
    title, setup, exercise, check, last = source.cells
    assert setup.source == "import torch" and last.source == "print(2)"
    assert exercise.source == EXERCISE.rsplit("\n", 1)[0]
    assert (
        exercise.metadata["nbgrader"]["grade_id"] == "exercise_1"
        and exercise.metadata["nbgrader"]["solution"]
    )
    assert check.source == f"r = check_f(f)\n{mns.HIDDEN_BEGIN}\nassert r.passed, r\n{mns.HIDDEN_END}\nr"
    assert check.metadata["nbgrader"] == {
        "grade": True,
        "grade_id": "check_f",
        "locked": True,
        "points": 2.5,
        "schema_version": 3,
        "solution": False,
        "task": False,
    }
    assert title.metadata["editable"] is False and "editable" not in setup.metadata


def test_repeated_checker_gets_a_unique_grade_id():
    source = mns.nbgrader_notebook(_notebook(EXERCISE, "r = check_f(f)", "s = check_f(f)"), "nb.ipynb")
    assert [c.metadata["nbgrader"]["grade_id"] for c in source.cells[2:]] == ["check_f", "check_f_2"]


@pytest.mark.parametrize(
    "cells, words",
    [
        ([EXERCISE + "\nr = check_f(f)"], ["cell 1", "also calls check_f", "own cell"]),
        ([EXERCISE, "check_f(f)"], ["cell 2", "exactly one top-level", "['check_f']"]),
        ([EXERCISE, "r = check_f(f)\ns = check_g(f)"], ["cell 2", "found 2"]),
        ([EXERCISE, "if True:\n    r = check_f(f)"], ["cell 2", "exactly one top-level"]),
        ([EXERCISE], ["no checker cell"]),
        (
            [EXERCISE, "r = check_f(f)", "md:Write it between # BEGIN SOLUTION lines"],
            ["cell 3", "nbgrader marker"],
        ),
        ([EXERCISE, 'r = check_f(f)\nprint("### BEGIN HIDDEN TESTS")'], ["cell 2", "nbgrader marker"]),
        (
            ["def f():\n    # BEGIN SOLUTION\n    return 1"],
            ["has no '# END SOLUTION'"],
        ),  # learner rules first
    ],
)
def test_notebooks_nbgrader_cannot_grade_fail_loudly(cells, words):
    with pytest.raises(mns.MarkerError) as error:
        mns.nbgrader_notebook(_notebook(*cells), "bad.ipynb")
    assert "bad.ipynb" in str(error.value)
    for word in words:
        assert word in str(error.value), (word, str(error.value))


@pytest.mark.parametrize("points", [0, -1, math.nan])
def test_points_must_be_positive(points):
    with pytest.raises(ValueError, match=r"points = .*positive"):
        mns.nbgrader_notebook(_notebook(EXERCISE, "r = check_f(f)"), "nb.ipynb", points=points)


def test_cli_names_unknown_notebooks_and_writes_nothing(tmp_path, capsys):
    src, course = tmp_path / "src", tmp_path / "course"
    src.mkdir()
    nbformat.write(_notebook(EXERCISE, "r = check_f(f)"), src / "01_a.ipynb")
    assert mns.main(["--src", str(src), "--course-dir", str(course), "--only", "01_b"]) == 1
    err = capsys.readouterr().err
    assert "--only 01_b" in err and "01_a" in err
    nbformat.write(_notebook(EXERCISE), src / "02_bad.ipynb")
    assert mns.main(["--src", str(src), "--course-dir", str(course)]) == 1
    assert "02_bad.ipynb" in capsys.readouterr().err
    assert not course.exists()
    assert mns.main(["--src", str(src), "--course-dir", str(course), "--only", "01_a"]) == 0
    assert (course / "source" / "01_a" / "01_a.ipynb").exists() and (course / "nbgrader_config.py").exists()
    assert not (course / "source" / "02_bad").exists()

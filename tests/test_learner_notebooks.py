"""make_learner_notebooks.py: solution blocks become placeholders, and a learner's work is never lost."""

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "make_learner_notebooks", ROOT / "scripts/make_learner_notebooks.py"
)
mln = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mln)

EXERCISE_1 = """\
def alpha_bar(betas):
    alphas = 1 - betas
    if alphas.ndim == 1:
        # BEGIN SOLUTION
        out = alphas.cumprod(0)
        if out is None:
            out = alphas
        # END SOLUTION
    return out"""

CHECK_1 = """\
result = check(alpha_bar)
result
assert result.passed  # solution-only"""

EXERCISE_2 = """\
%matplotlib inline
def q(x):
    # BEGIN SOLUTION
    return 2 * x
    # END SOLUTION"""


def _notebook(*code_cells: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(
        metadata={
            "jupytext": {"formats": "ipynb,py:percent"},
            "kernelspec": {"name": "python3", "display_name": "Python 3"},
        }
    )
    nb.cells.append(nbformat.v4.new_markdown_cell("# Title\n# BEGIN SOLUTION in Markdown is left alone"))
    for source in code_cells:
        cell = nbformat.v4.new_code_cell(source, execution_count=3)
        cell.outputs = [nbformat.v4.new_output("stream", text="old output\n")]
        nb.cells.append(cell)
    return nb


def test_solution_blocks_become_numbered_placeholders_at_their_indentation():
    learner = mln.learner_notebook(_notebook("import torch", EXERCISE_1, CHECK_1, EXERCISE_2), "nb.ipynb")
    sources = [cell.source for cell in learner.cells]
    assert sources[0].startswith("# Title")
    assert sources[1] == "import torch"
    assert sources[2] == (
        "def alpha_bar(betas):\n"
        "    alphas = 1 - betas\n"
        "    if alphas.ndim == 1:\n"
        '        raise NotImplementedError("Exercise 1: write your code here")\n'
        "    return out"
    )
    assert sources[3] == "result = check(alpha_bar)\nresult"
    assert (
        sources[4]
        == '%matplotlib inline\ndef q(x):\n    raise NotImplementedError("Exercise 2: write your code here")'
    )
    for cell in learner.cells[1:]:
        assert cell.outputs == [] and cell.execution_count is None
    assert "jupytext" not in learner.metadata and "kernelspec" in learner.metadata


def test_learner_code_runs_and_raises_only_when_called():
    learner = mln.learner_notebook(_notebook(EXERCISE_1), "nb.ipynb")
    namespace = {}
    exec(learner.cells[1].source, namespace)
    with pytest.raises(NotImplementedError, match="Exercise 1: write your code here"):
        namespace["alpha_bar"](__import__("torch").ones(3))


def test_cell_of_only_solution_lines_is_dropped():
    learner = mln.learner_notebook(_notebook(EXERCISE_1, "assert ok  # solution-only\n"), "nb.ipynb")
    assert len(learner.cells) == 2


@pytest.mark.parametrize(
    "source, words",
    [
        ("def f():\n    # BEGIN SOLUTION\n    return 1", ["line 2", "has no '# END SOLUTION'"]),
        ("def f():\n    return 1\n    # END SOLUTION", ["line 3", "without a '# BEGIN SOLUTION'"]),
        (
            "def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    # END SOLUTION",
            ["line 3", "inside the block"],
        ),
        ("def f():\n    #BEGIN SOLUTION\n    return 1\n    # END SOLUTION", ["malformed marker"]),
        ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION", ["not inside a function"]),
        ("x = 1", ["no exercise found"]),
    ],
)
def test_bad_markers_fail_loudly(source, words):
    with pytest.raises(mln.MarkerError) as error:
        mln.learner_notebook(_notebook(source), "bad.ipynb")
    assert "bad.ipynb" in str(error.value)
    for word in words:
        assert word in str(error.value), (word, str(error.value))


def test_cli_never_overwrites_without_force(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "learner"
    src.mkdir()
    nbformat.write(_notebook(EXERCISE_1), src / "01_a.ipynb")
    assert mln.main(["--src", str(src), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    target = out / "01_a.ipynb"
    work = nbformat.read(target, as_version=4)
    work.cells[1].source = "def alpha_bar(betas):\n    return my_answer"
    nbformat.write(work, target)

    assert mln.main(["--src", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped" in printed and "01_a.ipynb" in printed and "--force" in printed
    assert "my_answer" in target.read_text()

    assert mln.main(["--src", str(src), "--out", str(out), "--force"]) == 0
    assert "my_answer" not in target.read_text() and "NotImplementedError" in target.read_text()


def test_cli_writes_nothing_when_any_notebook_is_bad(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "learner"
    src.mkdir()
    nbformat.write(_notebook(EXERCISE_1), src / "01_good.ipynb")
    nbformat.write(_notebook("x = 1"), src / "02_bad.ipynb")
    assert mln.main(["--src", str(src), "--out", str(out)]) == 1
    assert "02_bad.ipynb" in capsys.readouterr().err
    assert not (out / "01_good.ipynb").exists()


def test_notebook_01_learner_copy_has_placeholders_only():
    path = ROOT / "notebooks" / "01_forward_process.ipynb"
    if not path.exists():
        pytest.skip("notebook 01 is not there yet")
    learner = mln.learner_notebook(nbformat.read(path, as_version=4), path.name)
    text = "\n".join(cell.source for cell in learner.cells if cell.cell_type == "code")
    assert "# BEGIN SOLUTION" not in text and "solution-only" not in text
    assert 'raise NotImplementedError("Exercise 2: write your code here")' in text

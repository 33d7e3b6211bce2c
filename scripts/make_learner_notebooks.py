"""Write the learner copies of the course notebooks: solutions removed, outputs cleared.

The notebooks in notebooks/ are the solutions copies. In their code cells:

* the lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` (markers included) become one line,
  ``raise NotImplementedError("Exercise N: write your code here")``, at the BEGIN line's indentation.
  N counts the code cells that hold a solution block, in notebook order. A block must sit inside a function
  body, so that the learner copy still runs top to bottom (the checker catches the NotImplementedError);
* a line ending in ``# solution-only`` is dropped (e.g. ``assert result.passed  # solution-only``);
  a code cell left empty by that is dropped too.

Every notebook must hold at least one exercise; an unmatched or malformed marker is an error. Nothing is
written unless every notebook is valid. An existing learner notebook (a learner's work) is never overwritten
without --force.

    python scripts/make_learner_notebooks.py --out learner [--force] [--src notebooks]
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
SOLUTION_ONLY = "# solution-only"
PLACEHOLDER = 'raise NotImplementedError("Exercise {number}: write your code here")'


class MarkerError(ValueError):
    """A notebook's solution markers are unmatched, malformed or misplaced."""


def strip_cell(source: str, number: int, where: str) -> tuple[str, int]:
    """The learner version of one code cell's source and how many solution blocks it held.

    ``number`` is the exercise number written into the placeholder; ``where`` names the cell in errors.
    """
    lines = source.split("\n")
    kept: list[str] = []
    placeholder_lines: list[int] = []  # 1-based line numbers in the learner source
    begin_line = None
    blocks = 0
    for lineno, line in enumerate(lines, start=1):
        marker = line.strip()
        loose = re.sub(r"[\s_\-]+", " ", marker.upper())  # catches "#BEGIN SOLUTION", "# end_solution" …
        if (
            marker not in (BEGIN, END)
            and marker.startswith("#")
            and ("BEGIN SOLUTION" in loose or "END SOLUTION" in loose)
        ):
            raise MarkerError(
                f"{where}, line {lineno}: malformed marker {marker!r}; write {BEGIN!r} / {END!r}"
            )
        if marker == BEGIN:
            if begin_line is not None:
                raise MarkerError(
                    f"{where}, line {lineno}: {BEGIN!r} inside the block opened on line {begin_line}"
                )
            begin_line = lineno
            indent = line[: len(line) - len(line.lstrip())]
            kept.append(indent + PLACEHOLDER.format(number=number))
            placeholder_lines.append(len(kept))
            blocks += 1
        elif marker == END:
            if begin_line is None:
                raise MarkerError(f"{where}, line {lineno}: {END!r} without a {BEGIN!r} before it")
            begin_line = None
        elif begin_line is None and not line.rstrip().endswith(SOLUTION_ONLY):
            kept.append(line)
    if begin_line is not None:
        raise MarkerError(f"{where}, line {begin_line}: {BEGIN!r} has no {END!r} in the same cell")
    learner = "\n".join(kept)
    if placeholder_lines:
        _check_inside_functions(learner, placeholder_lines, where)
    return learner, blocks


def _check_inside_functions(source: str, placeholder_lines: list[int], where: str) -> None:
    """Each placeholder must be in a function body, or the learner copy would stop at this cell."""
    # IPython magics and shell lines are not Python: blank them (keeping line numbers) before parsing
    python = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n"))
    try:
        tree = ast.parse(python)
    except SyntaxError as error:
        message = f"{where}: the learner version is not valid Python ({error.msg}, line {error.lineno})"
        raise MarkerError(message) from None
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    for lineno in placeholder_lines:
        if lineno not in inside:
            raise MarkerError(
                f"{where}: the solution block that becomes line {lineno} is not inside a function, so the "
                f"learner copy would stop there; put the solution in the body of the function the checker "
                f"calls"
            )


def learner_notebook(notebook: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """A copy of ``notebook`` with solutions replaced, solution-only lines dropped and outputs cleared."""
    learner = nbformat.v4.new_notebook(metadata=dict(notebook.metadata))
    learner.metadata.pop("jupytext", None)  # the learner copy is not paired with a .py file
    learner.nbformat, learner.nbformat_minor = notebook.nbformat, notebook.nbformat_minor
    exercises = 0
    for index, cell in enumerate(notebook.cells):
        cell = nbformat.from_dict(dict(cell))
        if cell.cell_type == "code":
            source, blocks = strip_cell(cell.source, exercises + 1, f"{name}, cell {index}")
            exercises += blocks > 0
            if cell.source.strip() and not source.strip():
                continue
            cell.source = source
            cell.outputs = []
            cell.execution_count = None
        learner.cells.append(cell)
    if exercises == 0:
        raise MarkerError(f"{name}: no exercise found (no {BEGIN!r} block); every notebook needs one")
    return learner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the learner notebooks")
    parser.add_argument("--force", action="store_true", help="overwrite existing learner notebooks")
    parser.add_argument("--src", type=Path, default=ROOT / "notebooks", help="folder of solutions notebooks")
    args = parser.parse_args(argv)

    sources = sorted(args.src.glob("*.ipynb"))
    if not sources:
        print(f"error: no notebooks in {args.src}", file=sys.stderr)
        return 1
    try:  # check every notebook before writing any
        learners = {
            path.name: learner_notebook(nbformat.read(path, as_version=4), path.name) for path in sources
        }
    except MarkerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    # Learner copies are plain notebooks: stop the course's jupytext pairing from adding .py twins here.
    (args.out / "jupytext.toml").write_text('formats = "ipynb"\n')
    skipped = []
    for name, notebook in learners.items():
        target = args.out / name
        if target.exists() and not args.force:
            skipped.append(target)
            continue
        nbformat.write(notebook, target)
        print(f"wrote {target}")
    for target in skipped:
        print(f"skipped {target}: it exists (it may hold your work); use --force to overwrite it")
    return 0


if __name__ == "__main__":
    sys.exit(main())

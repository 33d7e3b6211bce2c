"""Write the course's notebooks as an nbgrader course: ``COURSE/source/<notebook>/<notebook>.ipynb`` + config.

notebooks/ stays the single source; this script only adds nbgrader's cell metadata, and
``nbgrader generate_assignment`` then gives the same code cells as scripts/make_learner_notebooks.py.
Each notebook becomes one assignment of the same name. Its cells become:

* an exercise cell (one that holds a ``# BEGIN SOLUTION`` block): an nbgrader solution cell, grade id
  ``exercise_N``, with the course's markers kept; the generated config tells nbgrader to use those markers
  and to write the learner copies' stub, ``raise NotImplementedError("Exercise N: write your code here")``
  (:class:`NumberedClearSolutions` puts in N);
* a checker cell (one with a top-level ``NAME = check_xxx(...)``): an autograded test cell worth
  ``--points``, grade id ``check_xxx``. After the check it gets ``assert NAME.passed, NAME`` between
  nbgrader's hidden-test markers, so the graded run fails that cell, with the checker's words in the
  feedback, when the answer is wrong or missing, while the released copy is the learner copy as it is;
* every other cell: read-only, so that autograding restores it and runs the course's code, not a learner's
  edit. In the editor these cells cannot be deleted; text cannot be edited, given code can (to try things).

Lines ending in ``# solution-only`` are dropped, and cells left empty by that are dropped, by the learner-copy
script's own functions. Nothing is written unless every notebook is valid. The generated notebooks and the
config are overwritten on every run; the gradebook and the students' folders in COURSE are never touched.

    python scripts/make_nbgrader_source.py --course-dir class/nbgrader [--only 01_forward_process ...]
        [--points 1] [--course-id diffusion-course] [--exchange /srv/nbgrader/exchange] [--src notebooks]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import nbformat
from nbgrader.converters import GenerateAssignment
from nbgrader.preprocessors import ClearSolutions

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the learner-copy script sits beside this one
import make_learner_notebooks as mln  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MarkerError = mln.MarkerError
HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"
# nbgrader finds its regions by substring; a line holding one of these anywhere else would be cut
_NBGRADER_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
SCHEMA_VERSION = 3
# Per-cell limit for autograding. nbgrader's default (30 s) is shorter than some of the course's training and
# sampling cells on a busy CPU; the limit is still there to stop a learner's endless loop.
CELL_TIMEOUT_S = 600


class NumberedClearSolutions(ClearSolutions):
    """nbgrader's ClearSolutions whose code stub carries the exercise number, as the learner copies do.

    ``{number}`` in ``code_stub`` becomes N for the N-th code cell (in notebook order) that holds a solution
    region: the numbering of make_learner_notebooks.py.
    """

    def preprocess(self, nb, resources):
        self._number = 0
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "code" and self.begin_solution_delimeter in cell.source:
            self._number += 1
        template = self.code_stub
        self.code_stub = {key: stub.replace("{number}", str(self._number)) for key, stub in template.items()}
        try:
            return super().preprocess_cell(cell, resources, cell_index)
        finally:
            self.code_stub = template


def assignment_preprocessors() -> list:
    """nbgrader's generate_assignment steps, :class:`NumberedClearSolutions` in place of ClearSolutions."""
    default = list(GenerateAssignment.class_traits()["preprocessors"].default())
    if ClearSolutions not in default:
        raise RuntimeError(f"this nbgrader's generate_assignment has no ClearSolutions step: {default}")
    return [NumberedClearSolutions if step is ClearSolutions else step for step in default]


def _meta(grade_id: str, *, solution: bool = False, grade: bool = False, points: float = 0) -> dict:
    """nbgrader cell metadata: a solution cell, an autograded test cell, or (neither) a read-only cell."""
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": not solution,
        "schema_version": SCHEMA_VERSION,
        "solution": solution,
        "task": False,
    }
    if grade:
        meta["points"] = points
    return meta


def _set_metadata(cell: nbformat.NotebookNode, meta: dict) -> None:
    """Put nbgrader's metadata on ``cell``, and for a read-only cell what the notebook editor may do with it.

    nbgrader restores read-only cells from the gradebook when autograding, whatever the learner did to them.
    In the editor, text stays locked, and given code may be edited (the notebooks invite "try it") but not
    deleted, since a deleted cell would be missing from the graded run. Test and exercise cells are left to
    nbgrader's LockCells (tests locked, exercises not deletable).
    """
    cell.metadata["nbgrader"] = meta
    if meta["locked"] and not meta["grade"]:
        cell.metadata["deletable"] = False
        if cell.cell_type != "code":
            cell.metadata["editable"] = False


def _checker_calls(source: str) -> tuple[list[tuple[str, str, int]], list[str]]:
    """Top-level ``NAME = check_xxx(...)`` statements as (NAME, check_xxx, end line), and other check calls.

    Returns ``([], [])`` for a cell that is not plain Python (IPython syntax beyond magics and shell lines).
    """
    python = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n"))
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return [], []
    assigned, values = [], set()
    for node in tree.body:
        value = getattr(node, "value", None)
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id.startswith("check_")
        ):
            assigned.append((node.targets[0].id, value.func.id, node.end_lineno or node.lineno))
            values.add(id(value))
    other = [
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id.startswith("check_")
        and id(node) not in values
    ]
    return assigned, other


def _test_cell_source(source: str, result: str, end_line: int) -> str:
    """``source`` with ``assert result.passed, result`` as a hidden test right after line ``end_line``."""
    lines = source.split("\n")
    hidden = [HIDDEN_BEGIN, f"assert {result}.passed, {result}", HIDDEN_END]
    return "\n".join(lines[:end_line] + hidden + lines[end_line:])


def _without_solution_only_outside_blocks(source: str) -> str:
    """The exercise cell for nbgrader: solution blocks kept whole, other ``# solution-only`` lines dropped."""
    kept, inside = [], False
    for line in source.split("\n"):
        marker = line.strip()
        inside = (inside or marker == mln.BEGIN) and marker != mln.END
        if inside or marker == mln.END or not line.rstrip().endswith(mln.SOLUTION_ONLY):
            kept.append(line)
    return "\n".join(kept)


def _check_no_stray_markers(source: str, allowed: tuple[str, ...], where: str) -> None:
    """nbgrader cuts at any line *containing* its markers: only the lines this script placed may hold them."""
    for lineno, line in enumerate(source.split("\n"), start=1):
        if line.strip() not in allowed and any(marker in line for marker in _NBGRADER_MARKERS):
            raise MarkerError(
                f"{where}, line {lineno}: {line.strip()!r} holds an nbgrader marker outside its place; "
                f"nbgrader would cut the cell there. Reword the line (markers are only the course's "
                f"{mln.BEGIN!r} / {mln.END!r} lines in an exercise cell)"
            )


def nbgrader_notebook(notebook: nbformat.NotebookNode, name: str, points: float = 1) -> nbformat.NotebookNode:
    """The nbgrader source version of one course notebook (see the module docstring for the cell rules)."""
    if not points > 0:
        raise ValueError(f"points = {points!r}: each checker cell must be worth a positive number of points")
    mln.learner_notebook(notebook, name)  # the learner-copy rules validate every marker first
    source = nbformat.v4.new_notebook(metadata=dict(notebook.metadata))
    source.metadata.pop("jupytext", None)  # as in the learner copies: not paired with a .py file
    source.nbformat, source.nbformat_minor = notebook.nbformat, notebook.nbformat_minor
    exercises = 0
    test_ids: set[str] = set()
    for index, cell in enumerate(notebook.cells):
        cell = nbformat.from_dict(dict(cell))
        where = f"{name}, cell {index}"
        allowed: tuple[str, ...] = ()
        if cell.cell_type != "code":
            meta = _meta(f"cell_{index}")
        else:
            learner, blocks = mln.strip_cell(cell.source, exercises + 1, where)
            if cell.source.strip() and not learner.strip():
                continue  # make_learner_notebooks drops it too
            checks, other = _checker_calls(learner)
            if blocks and (checks or other):
                raise MarkerError(
                    f"{where}: the exercise cell also calls {(checks[0][1] if checks else other[0])}; put "
                    f"the check in its own cell after the exercise, so that it can be graded"
                )
            if other or len(checks) > 1:
                raise MarkerError(
                    f"{where}: a checker cell must hold exactly one top-level `result = check_xxx(...)`, "
                    f"found {len(checks)} such line(s) and other check calls {other}; nbgrader grades the "
                    f"cell by that result"
                )
            if blocks:
                exercises += 1
                cell.source = _without_solution_only_outside_blocks(cell.source)
                meta = _meta(f"exercise_{exercises}", solution=True)
                allowed = (mln.BEGIN, mln.END)
            elif checks:
                result, checker, end_line = checks[0]
                grade_id, k = checker, 2
                while grade_id in test_ids:
                    grade_id, k = f"{checker}_{k}", k + 1
                test_ids.add(grade_id)
                cell.source = _test_cell_source(learner, result, end_line)
                meta = _meta(grade_id, grade=True, points=points)
                allowed = (HIDDEN_BEGIN, HIDDEN_END)
            else:
                cell.source = learner
                meta = _meta(f"cell_{index}")
            cell.outputs = []
            cell.execution_count = None
        _check_no_stray_markers(cell.source, allowed, where)
        _set_metadata(cell, meta)
        source.cells.append(cell)
    if not test_ids:
        raise MarkerError(f"{name}: no checker cell (`result = check_xxx(...)`): nothing would be graded")
    return source


def config_text(course_id: str, exchange: Path | None) -> str:
    """The course's nbgrader_config.py: the course's markers and stub, and this script's ClearSolutions."""
    lines = [
        '"""nbgrader settings of the course, written by scripts/make_nbgrader_source.py',
        "(make nbgrader-course).",
        "",
        "Regenerate rather than edit: the solution markers and the stub must match the learner-copy script.",
        '"""',
        "",
        "import sys",
        "",
        f"sys.path.insert(0, {str(ROOT / 'scripts')!r})",
        "from make_nbgrader_source import assignment_preprocessors  # noqa: E402",
        "",
        "c = get_config()  # noqa: F821",
        f"c.CourseDirectory.course_id = {course_id!r}",
    ]
    if exchange is not None:
        lines.append(f"c.Exchange.root = {str(exchange.resolve())!r}")
    lines += [
        "# The course's own solution markers; the stub is the learner copies' line, {number} the exercise's",
        f"c.ClearSolutions.begin_solution_delimeter = {mln.BEGIN!r}",
        f"c.ClearSolutions.end_solution_delimeter = {mln.END!r}",
        f"c.ClearSolutions.code_stub = {{'python': {mln.PLACEHOLDER!r}}}",
        "c.ClearSolutions.enforce_metadata = True",
        "c.GenerateAssignment.preprocessors = assignment_preprocessors()",
        "# read-only cells carry their own editable/deletable flags (given code stays editable to try it)",
        "c.LockCells.lock_readonly_cells = False",
        "# seconds per cell when autograding (nbgrader's default, 30 s, is too short for training cells)",
        f"c.Execute.timeout = {CELL_TIMEOUT_S}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--course-dir", required=True, type=Path, help="the nbgrader course folder to write")
    parser.add_argument("--src", type=Path, default=ROOT / "notebooks", help="folder of solutions notebooks")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="notebook names (no .ipynb) to include")
    parser.add_argument("--points", type=float, default=1.0, help="points per checker cell (default 1)")
    parser.add_argument("--course-id", default="diffusion-course", help="nbgrader course id")
    parser.add_argument("--exchange", type=Path, help="nbgrader exchange folder (default: nbgrader's own)")
    args = parser.parse_args(argv)

    sources = sorted(args.src.glob("*.ipynb"))
    if args.only:
        unknown = sorted(set(args.only) - {path.stem for path in sources})
        if unknown:
            known = ", ".join(path.stem for path in sources)
            print(
                f"error: --only {' '.join(unknown)}: not in {args.src}; there are: {known}", file=sys.stderr
            )
            return 1
        sources = [path for path in sources if path.stem in args.only]
    if not sources:
        print(f"error: no notebooks in {args.src}", file=sys.stderr)
        return 1
    try:  # check every notebook before writing any
        notebooks = {
            path.stem: nbgrader_notebook(nbformat.read(path, as_version=4), path.name, args.points)
            for path in sources
        }
    except (MarkerError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    course = args.course_dir
    course.mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text(config_text(args.course_id, args.exchange))
    # The repository pairs notebooks with .py twins; this folder holds plain notebooks only.
    (course / "jupytext.toml").write_text('formats = "ipynb"\n')
    for stem, notebook in notebooks.items():
        target = course / "source" / stem / f"{stem}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, target)
        print(f"wrote {target}")
    print(f"wrote {course / 'nbgrader_config.py'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

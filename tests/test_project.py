"""Checks on the project itself: packaging metadata, notebooks, CI entry point."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _spec(requirement: str) -> str:
    return requirement.strip()[len(_name(requirement)) :].strip()


def _environment_requirements() -> dict[str, str]:
    """Package → version spec from environment.yml (a flat YAML list; read without a YAML parser)."""
    found = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("dependencies:", 1)[1].splitlines():
        m = re.match(r"^\s+- ([A-Za-z0-9_.\-]+)\s*([<>=!~][^#]*)?$", line)
        if m and m.group(1) not in {"pip", "python", "-e"}:
            found[m.group(1).lower()] = (m.group(2) or "").strip()
    return found


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():  # every extra that make installs
        wanted += extra
    env = _environment_requirements()
    conda_names = {"torch": "pytorch"}  # conda calls torch "pytorch"
    for req in wanted:
        name = conda_names.get(_name(req), _name(req))
        assert name in env, f"{name} is in pyproject.toml but missing from environment.yml"
        assert env[name] == _spec(req), (
            f"{name}: environment.yml says {env[name]!r}, pyproject {_spec(req)!r}"
        )
    extra = set(env) - {conda_names.get(_name(r), _name(r)) for r in wanted}
    assert not extra, f"environment.yml lists packages pyproject.toml does not: {sorted(extra)}"
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_no_outputs_and_a_py_twin(nb):
    data = json.loads(nb.read_text())
    for i, cell in enumerate(data["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{nb.name} cell {i} has committed outputs"
            assert cell.get("execution_count") is None, f"{nb.name} cell {i} has an execution count"
    assert nb.with_suffix(".py").exists(), f"{nb.name} has no paired py:percent file"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_course_rules(nb):
    source = nb.with_suffix(".py").read_text()
    assert "%pip" not in source and "!pip" not in source, "notebooks must not install packages"
    assert "get_profile(" in source, "every notebook reads its sizes from the profile"
    assert ".cuda()" not in source, "use the profile's device, never .cuda()"
    assert "# BEGIN SOLUTION" in source, "every notebook has at least one auto-checked exercise"


def test_every_py_notebook_has_an_ipynb():
    for py in (ROOT / "notebooks").glob("*.py"):
        assert py.with_suffix(".ipynb").exists(), f"{py.name} has no paired .ipynb"


def test_readme_and_ci_use_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec make test$", ci, re.M)


def test_no_committed_outputs_in_git_index():
    """Notebooks as git sees them (what CI clones) carry no outputs either."""
    files = subprocess.run(
        ["git", "ls-files", "notebooks/*.ipynb"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    for f in files:
        blob = subprocess.run(["git", "show", f":{f}"], cwd=ROOT, capture_output=True, text=True).stdout
        assert '"output_type"' not in blob, f"{f} is committed with outputs"

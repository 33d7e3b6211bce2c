"""docs/ARCHITECTURE.md's module table names every module of the package, and nothing that is gone."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "diffusion_course"


def module_table() -> dict[str, str]:
    """Rows of the "Modules" table: first cell (a module or a package/) → the whole row."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_every_module_and_subpackage_has_a_row():
    rows = module_table()
    modules = {p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    packages = {f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert sorted(modules | packages) == sorted(rows), "docs/ARCHITECTURE.md: the module table is out of date"


def test_every_module_of_a_subpackage_is_named_in_its_row():
    rows = module_table()
    for package in (p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        for module in sorted(package.glob("*.py")):
            if module.name != "__init__.py":
                assert f"`{module.name}`" in rows[f"{package.name}/"], f"{package.name}/{module.name}"


def test_every_section_it_points_to_exists():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    headings = set(re.findall(r"^#+ (.+)$", text, flags=re.M))
    for quoted in re.findall(r'see "([^"]+)"', text):
        assert quoted in headings, quoted

"""Write docs/benchmarks/reference.md from the shipped reference results in data/results/.

    python scripts/write_results_doc.py [--check]

``--check`` writes nothing and exits 1 when the page differs from what the files give (a test runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffusion_course.reference_results import markdown_report

PAGE = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "reference.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = parser.parse_args(argv)
    text = markdown_report()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run python scripts/write_results_doc.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

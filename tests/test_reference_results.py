"""Shipped reference results: each experiment has a file, with provenance, and one chunk of it reproduces."""

import pytest

from diffusion_course.reference_results import (
    EXPERIMENTS,
    RESULTS_DIR,
    estimate,
    format_table,
    get_experiment,
    load_results,
    reproduce_chunk,
)
from diffusion_course.scoring import compare

pytestmark = pytest.mark.usefixtures("one_thread")

PROVENANCE = {
    "command",
    "n",
    "seed",
    "chunk",
    "commit",
    "device",
    "torch",
    "seconds",
    "load_average_at_end",
    "date",
}


def cheapest_cell(results) -> int:
    cost = [c["steps"] * (2 if c["guidance"] not in (None, 1.0) else 1) for c in results["cells"]]
    return cost.index(min(cost))


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_shipped_results_match_their_experiment_and_carry_provenance(name):
    results = load_results(name)
    assert PROVENANCE <= set(results)
    assert results["command"].startswith("python -m diffusion_course experiment " + name)
    planned = [(c.row, c.col, c.sampler, c.steps, c.checkpoint) for c in get_experiment(name).cells]
    shipped = [(c["row"], c["col"], c["sampler"], c["steps"], c.get("checkpoint")) for c in results["cells"]]
    assert shipped == planned, "the results file is stale: re-run the command it records"
    for cell in [*results["cells"], results["floor"]]:
        assert cell["fd_low"] <= cell["fd"] <= cell["fd_high"]
        assert cell["label_accuracy_low"] <= cell["label_accuracy"] <= cell["label_accuracy_high"]
    for cell in results["cells"]:
        assert sum(c["n"] for c in cell["chunks"]) == results["n"]
        assert sum(c["correct"] for c in cell["chunks"]) == round(cell["label_accuracy"] * results["n"])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_one_chunk_of_each_shipped_table_reproduces(name):
    """Re-run the first chunk of the table's cheapest cell at its recorded seed: shipped numbers are real."""
    results = load_results(name)
    index = cheapest_cell(results)
    stored = results["cells"][index]["chunks"][0]
    again = reproduce_chunk(results, index, 0)
    assert again["correct"] == stored["correct"]
    assert again["feature_sum"] == pytest.approx(stored["feature_sum"], rel=1e-4)


def test_table_and_estimates_read_from_the_file():
    results = load_results("strategies")
    text = format_table(results, "label_accuracy")
    assert "floor (real digits)" in text and "trailing" in text and f"n = {results['n']}" in text
    a, b = estimate(results, "trailing", "S = 10"), estimate(results, "floor", "")
    assert a.n == b.n == results["n"] and str(compare(a, b))


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="experiment"):
        get_experiment("nope")
    with pytest.raises(ValueError, match="experiment"):
        load_results("nope", folder=RESULTS_DIR)
    with pytest.raises(ValueError, match="metric"):
        estimate(load_results("strategies"), "trailing", "S = 10", "ssim")


def test_reference_page_is_generated_from_the_shipped_files():
    import subprocess
    import sys

    from diffusion_course.reference_results import markdown_report

    page = RESULTS_DIR.parents[1] / "docs" / "benchmarks" / "reference.md"
    assert page.read_text() == markdown_report(), "run: python scripts/write_results_doc.py"
    script = RESULTS_DIR.parents[1] / "scripts" / "write_results_doc.py"
    assert subprocess.run([sys.executable, str(script), "--check"], capture_output=True).returncode == 0


def test_data_readme_quotes_the_shipped_mnist_cond_cell():
    """data/README.md's quality line for mnist-cond is the eta-steps table's DDIM-50 (η = 0) cell, rounded."""
    readme = (RESULTS_DIR.parent / "README.md").read_text()
    results = load_results("eta-steps")
    fd, acc = estimate(results, "η = 0", "S = 50"), estimate(results, "η = 0", "S = 50", "label_accuracy")
    assert f"**FD {fd.value:.1f} [{fd.low:.1f}, {fd.high:.1f}]**" in readme
    assert f"**label accuracy {acc.value:.3f} [{acc.low:.3f}, {acc.high:.3f}]**" in readme
    floor = estimate(results, "floor", "")
    assert f"FD {floor.value:.1f} [{floor.low:.1f}, {floor.high:.1f}]" in readme

"""Every sampler's output is bitwise what it was when ``tests/golden/samplers.json`` was recorded (CPU)."""

import json

import pytest
import torch

from tests.golden.sampler_cases import GOLDEN, cases, digest

RECORDED = json.loads(GOLDEN.read_text())["cases"]
CASES = dict(cases())


def test_every_case_is_recorded():
    assert sorted(CASES) == sorted(RECORDED)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bitwise_equal_to_golden(name):
    got = digest(CASES[name]())
    changed = [key for key in RECORDED[name] if got.get(key) != RECORDED[name][key]]
    assert not changed, f"{name}: {changed} differ from the recorded outputs"


def test_thread_count_does_not_matter():
    name = "unipc[order=3]/linear-log-50/cfg"
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert digest(CASES[name]()) == RECORDED[name]
    finally:
        torch.set_num_threads(before)

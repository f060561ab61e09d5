"""The README's demo output is what the demo prints today (launch/readme_output.py writes it)."""

from __future__ import annotations

import pytest

from launch.readme_output import README, SAMPLERS, demo_lines, readme_lines

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_readme_block_has_one_run_per_sampler():
    runs = readme_lines(README.read_text())
    assert [run[0] for run in runs] == [
        f"world size: 4 (backend gloo, sampler {s})" for s in SAMPLERS
    ]
    assert all(len(run) == 3 for run in runs)  # world size, first and last epoch


def test_readme_shows_what_the_quota_demo_prints():
    """The README's first command, run for real under torchrun; regenerate the block with
    ``python launch/readme_output.py --write`` when a change moves these numbers."""
    printed = demo_lines("quota")
    assert printed == readme_lines(README.read_text())[0]

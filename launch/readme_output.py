"""The README's demo output, from the demo itself: run it, print or write the README block.

    python launch/readme_output.py            # print the block the demo gives today
    python launch/readme_output.py --write    # replace the README's block with it

Runs ``launch/train.py`` under a real ``torchrun`` (4 gloo processes, 5 epochs) for the quota
sampler, the weighted sampler and ``DistributedSampler``, and keeps the lines the README shows
(the world size, the first and the last epoch). ``tests/test_launch.py`` runs the quota demo
and checks that the README still shows what it prints.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SAMPLERS = ("quota", "weighted", "none")
EPOCHS = 5
#: The README's block follows this line.
ANCHOR = "share 0.25) and `--sampler none` (`DistributedSampler`):"


def demo_command(sampler: str) -> list[str]:
    """The README's demo command for ``sampler``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=4",
        str(ROOT / "launch" / "train.py"),
        "--sampler",
        sampler,
        "--epochs",
        str(EPOCHS),
    ]


def kept_lines(output: str) -> list[str]:
    """The lines the README shows: the world size, the first and the last epoch."""
    keep = re.compile(rf"^(world size: |epoch 0 |epoch {EPOCHS - 1} )")
    return [line.rstrip() for line in output.splitlines() if keep.match(line)]


def demo_lines(sampler: str, timeout: float = 240) -> list[str]:
    """Run the demo for ``sampler`` and return the README's lines of its output."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    out = subprocess.run(
        demo_command(sampler),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return kept_lines(out.stdout)


def readme_block(text: str) -> tuple[int, int]:
    """``(start, stop)`` character offsets of the README's demo block (inside the fence)."""
    at = text.index(ANCHOR)
    start = text.index("```text\n", at) + len("```text\n")
    return start, text.index("```", start)


def readme_lines(text: str) -> list[list[str]]:
    """The README's block, one list of lines per demo run (runs separated by a blank line)."""
    start, stop = readme_block(text)
    return [run.splitlines() for run in text[start:stop].strip().split("\n\n")]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="replace the README's block")
    args = p.parse_args(argv)
    block = "\n\n".join("\n".join(demo_lines(s)) for s in SAMPLERS) + "\n"
    if not args.write:
        print(block, end="")
        return
    text = README.read_text()
    start, stop = readme_block(text)
    README.write_text(text[:start] + block + text[stop:])
    print(f"wrote {README.name}'s demo block")


if __name__ == "__main__":
    main()

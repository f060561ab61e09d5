"""Why every launch script leaves through ``launch/teardown.py`` (and that it loses no output).

torch 2.13: a DDP model keeps its gloo process group alive past ``destroy_process_group``, so
gloo's worker threads run into interpreter finalisation, where one that frees a Python-owned
tensor aborts the process (SIGABRT) after the run succeeded. ``exit_now`` skips finalisation.
The first test is a canary: when torch releases the group, it fails, and the workaround can go.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One gloo process (world 1, a file store), optionally a DDP step, then destroy_process_group:
# prints how many of gloo's threads are still running. The count reads /proc (Linux).
PROBE = r"""
import gc, json, os, sys, tempfile
import torch, torch.distributed as dist
from launch.teardown import exit_now

def gloo_threads():
    names = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/comm") as f:
            names.append(f.read().strip())
    return sum(n.startswith(("pt_gloo", "gloo_tcp")) for n in names)

store = tempfile.mktemp()
dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
running = gloo_threads()
if sys.argv[1] == "ddp":
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
    model(torch.randn(4, 3)).sum().backward()
    del model
else:
    t = torch.ones(3)
    dist.all_reduce(t)
gc.collect()
dist.barrier()
dist.destroy_process_group()
gc.collect()
print(json.dumps({"running": running, "after_destroy": gloo_threads()}))
exit_now(0)
"""


def probe(mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
@pytest.mark.timeout(120)
def test_ddp_keeps_gloo_threads_alive_past_destroy_process_group():
    plain, ddp = probe("collective"), probe("ddp")
    assert plain["running"] > 0 and ddp["running"] > 0  # the count sees gloo's threads
    assert plain["after_destroy"] == 0  # without DDP, destroy_process_group stops them
    assert ddp["after_destroy"] > 0  # with DDP they outlive it: the workaround is still needed


def test_exit_now_keeps_buffered_output_and_the_exit_code():
    code = (
        "from launch.teardown import exit_now\n"
        "import sys\n"
        "print('stdout line')\n"
        "sys.stderr.write('stderr line')\n"
        "exit_now(3)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    # Piped stdout is block-buffered: without the flush, os._exit would drop the line.
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "stdout line\n", "stderr line")


def _main_block(tree: ast.Module) -> ast.If | None:
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return node
    return None


DISTRIBUTED = ("init_process_group", "Accelerator(", "Trainer(", "import train")


@pytest.mark.parametrize("script", sorted((ROOT / "launch").glob("*.py")), ids=lambda p: p.name)
def test_every_distributed_launch_script_leaves_through_exit_now(script: Path):
    """A new script that forms a process group must end the same way, or it inherits the abort."""
    text = script.read_text()
    if script.name == "teardown.py" or not any(word in text for word in DISTRIBUTED):
        pytest.skip("forms no process group")
    main = _main_block(ast.parse(text))
    assert main is not None, f"{script.name} has no __main__ block"
    last = ast.unparse(main.body[-1])
    assert last.startswith("exit_now("), f"{script.name} ends its __main__ block with {last!r}"

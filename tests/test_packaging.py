"""The package works from its wheel, not only from an editable checkout.

Builds the wheel and the sdist, installs the wheel into a fresh virtual environment, and runs a
small sampler and the command line there, from a directory outside the checkout, asserting that
the wheel's copy is the one imported. torch and numpy come from the environment running the
tests (installing torch again would take minutes): its site-packages directories are appended to
the fresh venv's path with a ``.pth`` file. Not ``--system-site-packages``: that exposes the
*base* interpreter's packages, which lack torch when the suite itself runs in a venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import distsampler

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SMOKE = """
import sys
from pathlib import Path
import distsampler
from distsampler import DistributedQuotaBatchSampler, DistributedWeightedSampler
assert Path(distsampler.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), (
    distsampler.__file__)
labels = [0] * 90 + [1] * 10
s = DistributedWeightedSampler(labels=labels, num_replicas=2, rank=1, dataset_size=100)
assert len(list(s)) == 50
q = DistributedQuotaBatchSampler(labels, 8, {1: 2}, num_replicas=1, rank=0)
assert all(sum(i >= 90 for i in b) == 2 for b in q)
print("ok", distsampler.__version__)
"""


SITE = "import sysconfig; print(sysconfig.get_paths()['purelib'])"


def _run(cmd: list, cwd: Path, env: dict | None = None) -> str:
    out = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> Path:
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the installed setuptools builds it (no download in the test).
    cmd = [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel"]
    _run([*cmd, "--outdir", str(out), str(ROOT)], cwd=out)
    return out


def test_wheel_and_sdist_hold_the_package(dists):
    (wheel,) = dists.glob("distsampler-*.whl")
    (sdist,) = dists.glob("distsampler-*.tar.gz")
    assert distsampler.__version__ in wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    for required in ("distsampler/__init__.py", "distsampler/py.typed", "distsampler/_batch.py"):
        assert required in names, required
    assert not any(n.startswith(("tests/", "benchmarks/", "launch/")) for n in names)
    assert "Requires-Dist: torch" in text and "Requires-Dist: numpy" in text
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert any(m.endswith("/LICENSE") for m in members)


def test_wheel_installs_and_runs_in_a_fresh_venv(dists, tmp_path):
    (wheel,) = dists.glob("distsampler-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    inner = _run([str(python), "-c", SITE], cwd=tmp_path, env=env).strip()
    # The outer environment's packages (torch, numpy), after the venv's own: a plain path
    # entry, so the outer editable install of distsampler (a .pth hook there) is not seen.
    outer = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (Path(inner) / "outer_env.pth").write_text("".join(f"{p}\n" for p in sorted(outer)))
    # pip of the running environment installs into the fresh venv (--python needs pip >= 22.3).
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
    _run([*pip, "--no-index", "--force-reinstall", str(wheel)], cwd=tmp_path, env=env)
    out = _run([str(python), "-c", SMOKE], cwd=tmp_path, env=env)
    assert out.strip() == f"ok {distsampler.__version__}"
    cli = venv / "bin" / "distsampler"
    assert distsampler.__version__ in _run([str(cli), "--version"], cwd=tmp_path, env=env)
    assert "inspect" in _run([str(cli), "inspect", "--help"], cwd=tmp_path, env=env)

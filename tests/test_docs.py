"""The documentation works as written: the site builds strictly, and every example runs.

* ``mkdocs build --strict`` (into a temp dir): a broken link, a missing page or a docstring the
  API reference cannot render fails the suite.
* Every fenced ```` ```python ```` block (fence at the start of a line) in README.md and
  docs/**/*.md runs, each in a fresh namespace and a fresh temp directory, one after the other
  in one worker process (torch is imported once), with a time limit per block. A block that
  cannot run here starts with a comment line ``# not run: <why>`` (it needs a launcher, a GPU,
  a file of yours...). Blocks are self-contained: they make the small data they use.
* Every public name has an entry (``::: distsampler...``) in docs/api/ and a runnable example
  on the same page that uses it.
* Every ``>>>`` example in the package's docstrings runs (doctest, ``...`` matches anything).
* Every test the documentation names (``test_file.py::test_name``) exists, so the guarantees
  table of docs/design.md cannot point at a test that was renamed or removed.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
NOT_RUN = "# not run:"
BLOCK_TIMEOUT = 30  # seconds per block; the slowest examples take 2-3 s
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def code_blocks(page: Path) -> list[tuple[str, str]]:
    """``(id, code)`` of every ```python block of ``page``; id = ``path:line``."""
    text = page.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return blocks


def runnable(code: str) -> bool:
    return not code.lstrip().startswith(NOT_RUN)


BLOCKS = [(bid, code) for page in PAGES for bid, code in code_blocks(page) if runnable(code)]

# Runs in a fresh interpreter: {"blocks": [[id, code], ...], "tmp": dir, "timeout": s}.
RUNNER = r"""
import contextlib, io, json, os, signal, sys, time, traceback
spec = json.load(open(sys.argv[1]))
results = {}

def alarm(*_):
    raise TimeoutError(f"block ran longer than {spec['timeout']} s")

signal.signal(signal.SIGALRM, alarm)
for n, (bid, code) in enumerate(spec["blocks"]):
    work = os.path.join(spec["tmp"], f"block{n}")
    os.makedirs(work)
    os.chdir(work)
    out = io.StringIO()
    start = time.perf_counter()
    signal.alarm(spec["timeout"])
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            exec(compile(code, bid, "exec"), {"__name__": "__main__"})
        error = None
    except BaseException:
        error = traceback.format_exc(limit=-4) + "\n--- output ---\n" + out.getvalue()[-2000:]
    finally:
        signal.alarm(0)
    results[bid] = {"error": error, "seconds": round(time.perf_counter() - start, 2)}
    with open(spec["results"], "w") as f:
        json.dump(results, f)
"""


@pytest.fixture(scope="module")
def block_results(tmp_path_factory) -> dict:
    """Run every runnable block once; ``{id: {"error": traceback or None, "seconds": s}}``."""
    tmp = tmp_path_factory.mktemp("blocks")
    spec = tmp / "spec.json"
    results = tmp / "results.json"
    spec.write_text(
        json.dumps(
            {"blocks": BLOCKS, "tmp": str(tmp), "timeout": BLOCK_TIMEOUT, "results": str(results)}
        )
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(var, None)  # examples run as one plain process
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT * 4 + 60,
    )
    done = json.loads(results.read_text()) if results.exists() else {}
    if len(done) < len(BLOCKS):  # the worker died (a crash, not an exception): say where
        missing = next(bid for bid, _ in BLOCKS if bid not in done)
        pytest.fail(f"the example runner stopped at {missing}:\n{proc.stderr[-3000:]}")
    return done


@pytest.mark.timeout(BLOCK_TIMEOUT * 4 + 120)
@pytest.mark.parametrize("block_id", [bid for bid, _ in BLOCKS])
def test_code_block_runs(block_results: dict, block_id: str) -> None:
    error = block_results[block_id]["error"]
    assert error is None, f"{block_id} failed:\n{error}"


def test_blocks_marked_not_run_say_why() -> None:
    for page in PAGES:
        for bid, code in code_blocks(page):
            first = code.lstrip().splitlines()[0] if code.strip() else ""
            if first.startswith("# not run"):
                assert re.match(r"# not run: \S", first), f"{bid}: '# not run: <why>'"


def package_modules() -> list[str]:
    """Every module of the package, found without importing it (transformers is slow)."""
    return ["distsampler"] + [
        m.name
        for m in pkgutil.walk_packages([str(ROOT / "distsampler")], "distsampler.")
        if not m.name.endswith(".transformers")  # its example needs a model: in docs/api
    ]


@pytest.mark.parametrize("module", package_modules())
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(
        importlib.import_module(module),
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        report=True,
    )
    assert result.failed == 0, f"{result.failed} docstring example(s) of {module} failed (above)"


def public_names() -> list[str]:
    """Every public name, as ``module.name`` (the listed ones unimported: transformers is slow)."""
    names = [
        "distsampler.groups.from_coco",
        "distsampler.collate.collate_detection",
        "distsampler.integrations.transformers.SamplerTrainer",
        "distsampler.integrations.transformers.SamplerTrainerMixin",
    ]
    for module in (
        "distsampler",
        "distsampler.weights",
        "distsampler.transforms",
        "distsampler.shards",
    ):
        mod = importlib.import_module(module)
        names += [
            f"{module}.{name}" for name in mod.__all__ if not inspect.ismodule(getattr(mod, name))
        ]
    integrations = importlib.import_module("distsampler.integrations")
    return names + [f"distsampler.integrations.{name}" for name in integrations.__all__]


def api_pages() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((ROOT / "docs" / "api").glob("*.md"))}


@pytest.mark.parametrize("name", public_names())
def test_public_name_documented_with_an_example(name: str) -> None:
    """An API entry for the name, and a block on the same page that uses it (runnable, but
    for the HF Trainer names, whose example needs a model and a launch)."""
    module, short = name.rsplit(".", 1)
    obj = getattr(importlib.import_module(module), short)
    targets = {name, f"{getattr(obj, '__module__', module)}.{short}"}
    pages = [
        text
        for text in api_pages().values()
        if any(re.search(rf"^::: {re.escape(t)}\s*$", text, re.M) for t in targets)
    ]
    assert pages, f"no '::: {name}' entry in docs/api/*.md"
    uses = [
        code
        for code in FENCE.findall(pages[0])
        if re.search(rf"\b{re.escape(short)}\b", code)
        and (runnable(code) or module.endswith("transformers"))
    ]
    assert uses, f"docs/api/: no runnable example that uses {short}"


def test_ci_runs_the_readme_test_command() -> None:
    """CI runs exactly what the README tells a newcomer to run."""
    readme = (ROOT / "README.md").read_text()
    venv = r"python -m venv \.venv && \. \.venv/bin/activate && "
    commands = re.findall(rf"^{venv}python -m pip install .*&& python -m pytest$", readme, re.M)
    assert len(commands) == 1, "the README's test command, one line"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[0] in ci, ".ci/run must run the README's test command verbatim"


def test_readme_links_resolve() -> None:
    """The README is read on GitHub and PyPI, outside the site: its relative links must hold."""
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local, "the README links no guide"
    for link in local:
        assert (ROOT / link).exists(), f"README.md links {link}, which does not exist"


def test_tests_named_in_the_docs_exist() -> None:
    named = {
        (file, test)
        for page in PAGES
        for file, test in re.findall(r"\b(test_\w+\.py)::(test_\w+)", page.read_text())
    }
    assert named, "no test named in the docs"
    for file, test in sorted(named):
        path = ROOT / "tests" / file
        assert path.exists(), f"the docs name {file}, which does not exist"
        assert re.search(rf"^\s*def {test}\(", path.read_text(), re.M), f"{file}::{test}"


@pytest.mark.timeout(240)
def test_mkdocs_build_strict(tmp_path) -> None:
    """The site builds with --strict: every link, page, anchor and API entry resolves."""
    missing = [m for m in ("mkdocs", "material", "mkdocstrings_handlers.python") if not _has(m)]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} not installed: the test extra installs them")
        pytest.skip(f'needs {missing}: pip install -e ".[docs]"')
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=200,
    )
    problems = [line for line in proc.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert proc.returncode == 0, "\n".join(problems) or proc.stderr[-6000:]
    assert (tmp_path / "site" / "api" / "samplers" / "index.html").exists()


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False

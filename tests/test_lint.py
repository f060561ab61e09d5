"""The code stays clean: ruff (lint and format), mypy on the package, a fully annotated API."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Public modules: every public function and class method in them is part of the API.
PUBLIC_MODULES = (
    "distsampler",
    "distsampler.weights",
    "distsampler.groups",
    "distsampler.weight_index",
    "distsampler.weighted",
    "distsampler.quota",
    "distsampler.bucketed",
    "distsampler.sizes",
    "distsampler.coco",
    "distsampler.transforms",
    "distsampler.collate",
    "distsampler.integrations",
    "distsampler.integrations.accelerate",
    "distsampler.integrations.lightning",
    "distsampler.integrations.torchdata",
    "distsampler.integrations.checkpoint",
    "distsampler.integrations.transformers",
    "distsampler.shards",
    "distsampler.shards.layout",
    "distsampler.shards.reader",
)
OPTIONAL_PUBLIC_MODULES = ("distsampler.feedback", "distsampler.pk_batches")


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_check_is_clean():
    # Through the interpreter that runs the suite: a venv that is not activated has no ruff
    # on PATH, and a skipped lint test would hide findings.
    out = _run(sys.executable, "-m", "ruff", "check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_is_clean():
    out = _run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_is_clean_on_the_package():
    pytest.importorskip("mypy")
    out = _run(sys.executable, "-m", "mypy")  # configuration: pyproject.toml [tool.mypy]
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def _public_callables():
    names = list(PUBLIC_MODULES)
    for name in OPTIONAL_PUBLIC_MODULES:
        if importlib.util.find_spec(name) is not None:
            names.append(name)
    seen = set()
    for module_name in names:
        module = importlib.import_module(module_name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            continue
        for attr in exported:
            obj = getattr(module, attr)
            if inspect.ismodule(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            if inspect.isclass(obj):
                if issubclass(obj, BaseException):
                    continue
                for meth_name, meth in vars(obj).items():
                    if meth_name.startswith("_") and meth_name != "__init__":
                        continue
                    if isinstance(meth, (staticmethod, classmethod)):
                        meth = meth.__func__
                    if isinstance(meth, property):
                        meth = meth.fget
                    if inspect.isfunction(meth):
                        yield f"{module_name}.{attr}.{meth_name}", meth
            elif inspect.isfunction(obj):
                yield f"{module_name}.{attr}", obj


def test_public_api_is_fully_annotated():
    missing = []
    for name, func in _public_callables():
        sig = inspect.signature(func)
        for p in sig.parameters.values():
            if p.name in ("self", "cls"):
                continue
            if p.annotation is inspect.Parameter.empty:
                missing.append(f"{name}: parameter {p.name}")
        if sig.return_annotation is inspect.Signature.empty:
            missing.append(f"{name}: return")
    assert not missing, "unannotated public API:\n  " + "\n  ".join(missing)


def test_the_package_ships_its_type_hints():
    assert (ROOT / "distsampler" / "py.typed").exists()

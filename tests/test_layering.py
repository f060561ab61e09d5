"""The engine depends on nothing above it: ``_core`` imports only ``_core``, numpy and stdlib.

Parsed, not imported (importing ``distsampler._core`` runs the package's ``__init__``): every
``import`` and ``from ... import`` of every module under ``distsampler/_core/``.
"""

import ast
from pathlib import Path

import pytest

from distsampler import GroupIndex, WeightIndex
from distsampler._core.index_store import GroupStore, WeightStore

CORE = Path(__file__).resolve().parents[1] / "distsampler" / "_core"
MODULES = sorted(CORE.glob("*.py"))


def _imports(path: Path) -> list[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = ["distsampler", "_core"]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append(module)
    return found


def test_core_modules_are_found():
    assert {"plan.py", "quota_plan.py", "bucket_plan.py", "index_store.py"} <= {
        p.name for p in MODULES
    }


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_imports_nothing_above_it(path):
    above = [
        m
        for m in _imports(path)
        if (m == "distsampler" or m.startswith("distsampler."))
        and not (m == "distsampler._core" or m.startswith("distsampler._core."))
    ]
    assert not above, f"{path.name} imports {above} from the public layer"


def test_the_check_sees_a_relative_import_upward(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from ..groups import GroupIndex\nfrom . import keyed\nimport numpy\n")
    assert _imports(bad) == ["distsampler.groups", "distsampler._core", "numpy"]


def test_public_indexes_are_the_engine_storage():
    """The public classes extend the storage the plans read: a plan accepts either."""
    assert issubclass(GroupIndex, GroupStore) and issubclass(WeightIndex, WeightStore)
    index = GroupIndex.from_labels([1, 0, 1])
    assert isinstance(index, GroupStore) and type(index) is GroupIndex
    weights = WeightIndex.from_weights([1.0, 2.0, 1.0])
    assert isinstance(weights.groups, GroupStore)

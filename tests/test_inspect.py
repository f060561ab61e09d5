"""``distsampler inspect`` and :mod:`distsampler.diagnostics`.

The numbers the command prints are checked against a plain reference computed here from the
samplers' real iteration (one sampler per rank, ``set_epoch``, ``list(sampler)``), and the closed
forms against Monte Carlo estimates with derived bounds.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import WeightedRandomSampler

from distsampler import DistributedQuotaBatchSampler, DistributedWeightedSampler
from distsampler import weights as W
from distsampler.inspect import cli, runs
from distsampler.inspect import streams as S

HAS_MPL = importlib.util.find_spec("matplotlib") is not None
NAMES = ("defect", "normal")


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    rng = np.random.default_rng(3)
    out = np.array(["normal"] * 290 + ["defect"] * 23)
    rng.shuffle(out)
    return out


@pytest.fixture(scope="module")
def npy(tmp_path_factory, labels) -> str:
    path = tmp_path_factory.mktemp("data") / "labels.npy"
    np.save(path, labels)
    return str(path)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv) -> dict:
    code, out, err = run(capsys, *argv, "--json", "--no-progress")
    assert code == 0, err
    return json.loads(out)


# -- reference: batches from the samplers' real iteration ----------------------------------------
def by_iteration(local: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Per-rank lists of local batches -> batches in iteration order (iteration, rank)."""
    return [rank[i] for i in range(len(local[0])) for rank in local]


def chunks(stream: np.ndarray, size: int) -> list[np.ndarray]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def weighted_epochs(labels, world, batch, epochs, **kw) -> list[list[np.ndarray]]:
    ranks = [
        DistributedWeightedSampler(labels=labels, num_replicas=world, rank=r, **kw)
        for r in range(world)
    ]
    out = []
    for e in range(epochs):
        for s in ranks:
            s.set_epoch(e)
        out.append(by_iteration([chunks(np.array(list(s)), batch) for s in ranks]))
    return out


def quota_epochs(labels, world, batch, epochs, quotas, **kw) -> list[list[np.ndarray]]:
    ranks = [
        DistributedQuotaBatchSampler(labels, batch, quotas, num_replicas=world, rank=r, **kw)
        for r in range(world)
    ]
    out = []
    for e in range(epochs):
        for s in ranks:
            s.set_epoch(e)
        out.append(by_iteration([[np.array(b) for b in s] for s in ranks]))
    return out


def torch_epochs(labels, world, batch, epochs, seed) -> list[list[np.ndarray]]:
    """WeightedRandomSampler (balanced weights), padded and strided like DistributedSampler."""
    counts = {n: np.sum(labels == n) for n in NAMES}
    weights = torch.tensor([1.0 / counts[x] for x in labels], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    sampler = WeightedRandomSampler(weights, len(labels), generator=gen)
    out = []
    for _ in range(epochs):
        stream = np.array(list(sampler))
        stream = np.concatenate([stream, stream[: -len(stream) % world]])
        out.append(by_iteration([chunks(stream[r::world], batch) for r in range(world)]))
    return out


def reference(sets: list[set], epochs_batches, batch: int, minority) -> dict:
    """The printed numbers, computed plainly from the batches.

    ``sets[i]`` is the set of classes sample ``i`` holds (one class for single-label data). A
    draw contains class ``c`` when its sample holds ``c``.
    """
    names = sorted({c for s in sets for c in s}, key=str)
    holds = {c: np.array([c in s for s in sets]) for c in names}
    seen = np.zeros(len(sets), dtype=bool)
    draws, total = {c: 0 for c in names}, 0
    shares, coverage, rep_max = [], {c: [] for c in names}, 0
    for batches in epochs_batches:
        stream = np.concatenate(batches)
        seen[stream] = True
        total += len(stream)
        for c in names:
            draws[c] += int(np.sum(holds[c][stream]))
            coverage[c].append(float(seen[holds[c]].mean()))
        times = np.bincount(stream, minlength=len(sets))
        rep_max = max(rep_max, int(times[holds[minority]].max()))
        shares += [np.mean(holds[minority][b]) for b in batches if len(b) == batch]
    return {
        "realised_share": {str(c): draws[c] / total for c in names},
        "coverage": {str(c): coverage[c] for c in names},
        "min": min(shares),
        "median": float(np.median(shares)),
        "mean": float(np.mean(shares)),
        "max": max(shares),
        "full_batches": len(shares),
        "none": float(np.mean(np.array(shares) == 0)),
        "rep_max": rep_max,
        "draws_per_epoch": len(np.concatenate(epochs_batches[0])),
    }


def single(labels) -> list[set]:
    return [{x} for x in labels]


def assert_matches(got: dict, ref: dict) -> None:
    assert got["realised_share"] == pytest.approx(ref["realised_share"], rel=1e-12)
    assert got["coverage"].keys() == ref["coverage"].keys()
    for n in ref["coverage"]:
        assert got["coverage"][n] == pytest.approx(ref["coverage"][n], rel=1e-12)
    share = got["minority_share"]
    keys = ("min", "median", "mean", "max")
    assert [share[k] for k in keys] == pytest.approx([ref[k] for k in keys], rel=1e-12)
    assert share["full_batches"] == ref["full_batches"]
    assert got["no_minority_fraction"] == pytest.approx(ref["none"])
    assert got["minority_repeats_per_epoch"]["max"] == ref["rep_max"]
    assert got["draws_per_epoch"] == ref["draws_per_epoch"]


WEIGHTED_CASES = [
    # (extra CLI args, sampler kwargs, world, batch, epochs)
    ([], {}, 1, 16, 3),
    (["--block-size", "4"], {"block_size": 4}, 3, 8, 3),  # blocks, padding to 3 ranks
    (["--strategy", "sqrt", "--seed", "5"], {"class_weights": "sqrt", "seed": 5}, 2, 10, 2),
    (  # i.i.d. class draws, effective number of samples
        ["--strategy", "effective", "--beta", "0.99", "--no-stratify"],
        {"class_weights": W.EffectiveNumber(0.99), "stratify": False},
        2,
        16,
        3,
    ),
    (  # epoch-dependent: set_epoch drives it
        ["--strategy", "progressive", "--progressive-epochs", "2"],
        {"class_weights": W.Progressive(2)},
        1,
        32,
        4,
    ),
    (
        ["--strategy", "shares", "--shares", "defect=0.3,normal=0.7"],
        {"class_weights": W.target_shares({"defect": 0.3, "normal": 0.7})},
        4,
        8,
        2,
    ),
]


@pytest.mark.parametrize(("args", "kw", "world", "batch", "epochs"), WEIGHTED_CASES)
def test_weighted_numbers_equal_the_samplers_own(
    capsys, labels, npy, args, kw, world, batch, epochs
):
    report = run_json(
        capsys,
        "inspect", npy, "--sampler", "weighted", "--world-size", world,
        "--batch-size", batch, "--epochs", epochs, *args,
    )  # fmt: skip
    batches = weighted_epochs(labels, world, batch, epochs, **kw)
    ref = reference(single(labels), batches, batch, "defect")
    assert_matches(report["samplers"]["weighted"], ref)
    assert report["minority"] == "defect"


@pytest.mark.parametrize(
    ("quota", "policy", "world", "batch"),
    [
        ("defect=3", None, 1, 16),
        ("defect=3", "defect=replace", 2, 16),  # i.i.d. defects, cycled normals
        ("defect=0.3", None, 3, 10),  # a share: 3 per batch by carried remainders
    ],
)
def test_quota_numbers_equal_the_samplers_own(capsys, labels, npy, quota, policy, world, batch):
    extra = ["--policy", policy] if policy else []
    report = run_json(
        capsys,
        "inspect", npy, "--sampler", "quota", "--quota", quota, *extra,
        "--world-size", world, "--batch-size", batch, "--epochs", 3,
    )  # fmt: skip
    name, value = quota.split("=")
    quotas = {name: float(value) if "." in value else int(value)}
    policies = dict([policy.split("=")]) if policy else None
    batches = quota_epochs(labels, world, batch, 3, quotas, policies=policies)
    ref = reference(single(labels), batches, batch, "defect")
    assert_matches(report["samplers"]["quota"], ref)


@pytest.mark.parametrize("world", [1, 3])
def test_torch_wrs_numbers_equal_weighted_random_sampler(capsys, labels, npy, world):
    report = run_json(
        capsys,
        "inspect", npy, "--sampler", "torch-wrs", "--world-size", world,
        "--batch-size", 8, "--epochs", 3, "--seed", 11,
    )  # fmt: skip
    ref = reference(single(labels), torch_epochs(labels, world, 8, 3, 11), 8, "defect")
    assert_matches(report["samplers"]["torch-wrs"], ref)


def test_table_prints_the_json_numbers(capsys, npy):
    argv = ["inspect", npy, "--sampler", "weighted", "--sampler", "quota", "--sampler",
            "torch-wrs", "--quota", "defect=4", "--world-size", 2, "--epochs", 3]  # fmt: skip
    report = run_json(capsys, *argv)
    code, table, _ = run(capsys, *argv)
    assert code == 0
    lines = table.splitlines()
    for n in NAMES:
        row = next(ln for ln in lines if n in ln.split() and "% (" in ln)  # share of draws
        cells = [
            f"{100 * r['realised_share'][n]:.2f}% ({100 * r['target_share'][n]:.2f}%)"
            for r in report["samplers"].values()
        ]
        assert all(c in row for c in cells), (row, cells)
    for e in range(3):
        row = next(ln for ln in lines if f"coverage after epoch {e + 1}" in ln)
        for r in report["samplers"].values():
            c = r["coverage"]["defect"][e]
            x = r["expected_coverage_iid"]["defect"][e]
            assert f"{100 * c:.1f}% ({100 * x:.1f}%)" in row
    assert any(ln.split() == ["weighted", "quota", "torch-wrs"] for ln in lines)  # side by side


def test_expected_columns_use_the_closed_forms(capsys, npy):
    report = run_json(capsys, "inspect", npy, "--sampler", "weighted", "--epochs", 2)
    r = report["samplers"]["weighted"]
    for n, size in report["classes"].items():
        k = np.cumsum(r["draws"][n])
        assert r["expected_coverage_iid"][n] == pytest.approx(1 - (1 - 1 / size) ** k)
        h = sum(1 / i for i in range(1, size + 1))
        per_epoch = np.mean(r["draws"][n])
        assert r["expected_epochs_to_cover_iid"][n] == pytest.approx(size * h / per_epoch)


# -- inputs ---------------------------------------------------------------------------------------
def test_csv_input_with_column(capsys, tmp_path):
    path = tmp_path / "labels.csv"
    rows = [f"img{i}.png,{7 if i % 5 == 0 else 1}" for i in range(100)]
    path.write_text("file,label\n" + "\n".join(rows) + "\n")
    report = run_json(capsys, "inspect", path, "--column", "label", "--sampler", "weighted")
    assert report["classes"] == {"1": 80, "7": 20}  # integer labels, sorted numerically
    assert report["minority"] == "7"


def test_coco_input_with_group_map_and_repeat_factors(capsys, tmp_path):
    images = [{"id": i} for i in range(1, 101)]
    anns = [{"id": i, "image_id": i, "category_id": 3} for i in range(1, 101)]
    anns += [{"id": 200 + i, "image_id": i, "category_id": 1} for i in range(1, 101, 10)]
    path = tmp_path / "instances.json"
    coco = {"images": images, "annotations": anns, "categories": [{"id": c} for c in (1, 2, 3)]}
    path.write_text(json.dumps(coco))
    report = run_json(
        capsys,
        "inspect", path, "--coco-groups", "defect=1,2", "--coco-default", "normal",
        "--strategy", "repeat", "--threshold", "0.4", "--sampler", "weighted",
    )  # fmt: skip
    assert report["classes"] == {"defect": 10, "normal": 90}
    # f_1 = 0.1, t = 0.4: r = 2 for the 10 defect images; target share 20 / 110
    target = report["samplers"]["weighted"]["target_share"]
    assert target["defect"] == pytest.approx(20 / 110)


# -- errors ---------------------------------------------------------------------------------------
ERRORS = [
    # (argv after "inspect", message in stderr)
    (["{missing}"], "no such file"),
    (["{csv}"], "pick the label column with --column"),  # two columns, none chosen
    (["{csv}", "--column", "nope"], "column 'nope' is not in"),
    (["{npy}", "--minority", "cat"], "--minority names class 'cat', which is not in the labels"),
    (["{npy}", "--sampler", "quota", "--quota", "cat=2"], "--quota names class 'cat'"),
    (["{npy}", "--sampler", "quota", "--policy", "cat=replace"], "--policy names class 'cat'"),
    (["{npy}", "--strategy", "shares", "--shares", "cat=1"], "--shares names class 'cat'"),
    (["{npy}", "--strategy", "shares"], "needs --shares"),
    (["{npy}", "--strategy", "effective", "--beta", "1.5"], "beta should be in [0, 1)"),
    (["{npy}", "--strategy", "repeat"], "needs a COCO file"),
    (["{npy}", "--sampler", "quota", "--quota", "defect=40"], "more than batch_size=32"),
    (["{npy}", "--quota", "defect"], "--quota expects NAME=VALUE"),
    (["{npy}", "--batch-size", "0"], "--batch-size should be a positive integer"),
    (["{txt}"], "should be a .npy, .csv or .json file"),
    (["{json}"], "needs --coco-groups"),
]


@pytest.mark.parametrize(("argv", "message"), ERRORS)
def test_bad_input_exits_non_zero_with_a_clear_message(capsys, tmp_path, npy, argv, message):
    csv_path = tmp_path / "two.csv"
    csv_path.write_text("file,label\na.png,x\n")
    (tmp_path / "labels.txt").write_text("x\n")
    (tmp_path / "coco.json").write_text('{"images": [], "annotations": []}')
    paths = {
        "missing": tmp_path / "missing.npy",
        "csv": csv_path,
        "npy": npy,
        "txt": tmp_path / "labels.txt",
        "json": tmp_path / "coco.json",
    }
    code, out, err = run(capsys, "inspect", *[a.format(**paths) for a in argv])
    assert code != 0
    assert message in err
    assert err.startswith("distsampler inspect: error:")


def test_usage_error_returns_argparse_status(capsys, npy):
    code, _, err = run(capsys, "inspect", npy, "--sampler", "nope")
    assert code == 2 and "invalid choice" in err


def test_torch_wrs_over_the_multinomial_limit_says_why(capsys, npy, monkeypatch):
    monkeypatch.setattr(S, "TORCH_MULTINOMIAL_LIMIT", 100)  # as if N > 2**24
    code, out, _ = run(capsys, "inspect", npy, "--sampler", "weighted", "--sampler", "torch-wrs")
    assert code == 0
    assert "torch-wrs: cannot run: torch.multinomial" in out and "at most 2**24" in out
    report = run_json(capsys, "inspect", npy, "--sampler", "torch-wrs")
    assert "cannot exceed 2^24" in report["skipped"]["torch-wrs"]
    assert report["samplers"] == {}


def test_progress_bar_on_stderr_for_long_runs(capsys, npy, monkeypatch):
    monkeypatch.setattr(runs, "PROGRESS_MIN_DRAWS", 0)  # as if the run were long
    code, out, err = run(capsys, "inspect", npy, "--sampler", "weighted", "--epochs", 2)
    assert code == 0 and "100.0%" in err and "draws" in err and "draws" not in out.split("\n")[0]
    code, _, err = run(capsys, "inspect", npy, "--sampler", "weighted", "--no-progress")
    assert code == 0 and err == ""


# -- plots ----------------------------------------------------------------------------------------
PLOTS = ["composition", "minority_share", "coverage", "times_seen", "inspect"]


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib is not installed")
def test_plots_are_written(capsys, npy, tmp_path):
    code, _, err = run(
        capsys,
        "inspect", npy, "--sampler", "weighted", "--sampler", "quota", "--sampler", "torch-wrs",
        "--quota", "defect=4", "--epochs", 2, "--plots", tmp_path / "figs",
    )  # fmt: skip
    assert code == 0, err
    for name in PLOTS:
        data = (tmp_path / "figs" / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_plots_without_matplotlib_say_how_to_install(capsys, npy, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, _, err = run(capsys, "inspect", npy, "--plots", tmp_path / "figs")
    assert code != 0
    assert 'pip install "distsampler[plots]"' in err
    assert not (tmp_path / "figs").exists()  # fails before simulating anything


def test_python_dash_m_entry_point(npy):
    proc = subprocess.run(
        [sys.executable, "-m", "distsampler", "inspect", npy, "--sampler", "weighted", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["num_samples"] == 313

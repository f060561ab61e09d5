"""``distsampler inspect`` on multi-label data: inputs, realised shares with overlapping classes,
coverage per class, and the figures.

The numbers are checked against a plain reference computed from the samplers' real iteration
(``test_inspect.reference``: a draw contains class ``c`` when its sample holds ``c``).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from test_inspect import (
    assert_matches,
    quota_epochs,
    reference,
    run,
    run_json,
    weighted_epochs,
)

from distsampler import weights as W
from distsampler.groups import GroupIndex
from distsampler.inspect import cli, plots

HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def make_sets() -> list[list[str]]:
    """120 samples: 30 scratch, 12 dent, 6 rust (4 of them also dent), 76 with no label."""
    sets: list[list[str]] = [[] for _ in range(120)]
    for i in range(30):
        sets[i].append("scratch")
    for i in range(30, 42):
        sets[i].append("dent")
    for i in (30, 33, 36, 39, 42, 43):  # 4 rust samples hold dent too
        sets[i].append("rust")
    order = np.random.default_rng(5).permutation(120)
    return [sets[i] for i in order]


SETS = make_sets()
HOLDS = [set(s) or {"ok"} for s in SETS]  # with --background ok
NAMES = ["dent", "rust", "scratch"]


@pytest.fixture(scope="module")
def sets_json(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ml") / "labels.json"
    path.write_text(json.dumps(SETS))
    return str(path)


@pytest.fixture(scope="module")
def index() -> GroupIndex:
    return GroupIndex.from_label_sets(SETS, background="ok")


# -- the numbers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "world", "batch", "block"),
    [
        (["--sampler", "weighted"], 2, 8, 1),
        (["--sampler", "weighted", "--no-stratify"], 3, 8, 4),
        (["--sampler", "quota", "--quota", "rust=2"], 2, 8, 1),
    ],
)
def test_multilabel_numbers_equal_the_samplers_own(
    capsys, sets_json, index, args, world, batch, block
):
    report = run_json(
        capsys,
        "inspect", sets_json, "--background", "ok", *args, "--world-size", world,
        "--batch-size", batch, "--block-size", block, "--epochs", 3,
    )  # fmt: skip
    assert report["multilabel"] is True and report["minority"] == "rust"
    assert report["classes"] == {"dent": 12, "ok": 76, "rust": 6, "scratch": 30}
    if "quota" in args:
        epochs = quota_epochs(index, world, batch, 3, {"rust": 2})
        got = report["samplers"]["quota"]
    else:
        stratify = "--no-stratify" not in args
        epochs = weighted_epochs(index, world, batch, 3, stratify=stratify, block_size=block)
        got = report["samplers"]["weighted"]
    assert_matches(got, reference(HOLDS, epochs, batch, "rust"))


def test_overlapping_classes_are_realised_above_their_target(capsys, sets_json):
    """Balanced and stratified: each epoch picks each of the 4 classes exactly 30 times of
    120, and a class's picks cycle its members (every member once before any twice). Over 2
    epochs dent is picked 60 times = 5 cycles of its 12 members, 4 of which hold rust: 20 more
    draws contain rust, so rust is realised at (60 + 20) / 240 = 1/3 against a target of 1/4.
    Rust's 60 picks are 10 cycles of its 6 members, 4 of which hold dent: dent (60 + 40) / 240.
    """
    report = run_json(
        capsys,
        "inspect", sets_json, "--background", "ok", "--sampler", "weighted",
        "--batch-size", 8, "--epochs", 2,
    )  # fmt: skip
    r = report["samplers"]["weighted"]
    target, realised = r["target_share"], r["realised_share"]
    assert target == pytest.approx(dict.fromkeys(target, 0.25))
    assert r["draws"]["ok"] == [30, 30] and r["draws"]["scratch"] == [30, 30]
    assert realised["ok"] == pytest.approx(0.25)  # co-occurs with nothing: at its target
    assert realised["scratch"] == pytest.approx(0.25)
    assert realised["rust"] == pytest.approx(80 / 240)
    assert realised["dent"] == pytest.approx(100 / 240)
    assert sum(realised.values()) > 1


# -- inputs ---------------------------------------------------------------------------------------
def test_csv_json_npy_and_coco_give_the_same_index(capsys, tmp_path, sets_json):
    argv = ["--sampler", "weighted", "--batch-size", 8, "--epochs", 2]
    want = run_json(capsys, "inspect", sets_json, "--background", "ok", *argv)
    csv_path = tmp_path / "labels.csv"
    rows = [f"img{i}.png,{';'.join(s)}" for i, s in enumerate(SETS)]  # empty cell: no label
    csv_path.write_text("file,defects\n" + "\n".join(rows) + "\n")
    got = run_json(
        capsys,
        "inspect", csv_path, "--multilabel", "--column", "defects", "--separator", ";",
        "--background", "ok", *argv,
    )  # fmt: skip
    assert got["classes"] == want["classes"]
    assert got["samplers"] == want["samplers"]
    hot = np.array([[n in s for n in NAMES] for s in SETS])
    npy = tmp_path / "hot.npy"
    np.save(npy, hot)
    got = run_json(capsys, "inspect", npy, "--background", "ok", *argv)
    assert got["classes"] == {"0": 12, "1": 6, "2": 30, "ok": 76}  # column j is class j
    assert got["samplers"]["weighted"]["realised_share"]["1"] == pytest.approx(
        want["samplers"]["weighted"]["realised_share"]["rust"]
    )
    coco_path = write_coco(tmp_path / "instances.json")
    got = run_json(capsys, "inspect", coco_path, "--multilabel", "--background", "ok", *argv)
    assert got["samplers"] == want["samplers"]


def write_coco(path) -> str:
    """SETS as a COCO file: category k + 1 is NAMES[k]; images without a defect have no box."""
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(NAMES)]
    anns = [
        {"id": len(SETS) * k + i, "image_id": i, "category_id": NAMES.index(n) + 1}
        for i, s in enumerate(SETS)
        for k, n in enumerate(s)
    ]
    images = [{"id": i} for i in range(len(SETS))]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(path)


def test_repeat_factors_on_multilabel_coco_target_the_weight_mass(capsys, tmp_path):
    """Per-image weights (LVIS repeat factors): the target of class c is the weight mass of
    the images holding it, and WeightedRandomSampler can run (one weight per image)."""
    path = write_coco(tmp_path / "instances.json")
    report = run_json(
        capsys,
        "inspect", path, "--multilabel", "--background", "ok", "--strategy", "repeat",
        "--threshold", "0.1", "--sampler", "weighted", "--sampler", "torch-wrs",
    )  # fmt: skip
    r = np.array(W.repeat_factors([[NAMES.index(n) + 1 for n in s] for s in SETS], 0.1))
    want = {c: r[[c in h for h in HOLDS]].sum() / r.sum() for c in ("dent", "ok", "rust")}
    assert report["skipped"] == {}
    for got in report["samplers"].values():
        assert {c: got["target_share"][c] for c in want} == pytest.approx(want)


def test_csv_cells_default_to_a_pipe_and_int_labels(capsys, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text('labels\n3|7\n7\n""\n3\n' + "7\n" * 6)  # "": no label (a blank line: none)
    report = run_json(capsys, "inspect", path, "--multilabel", "--sampler", "weighted")
    assert report["classes"] == {"3": 2, "7": 8} and report["unlabelled_samples"] == 1


def test_table_says_how_to_read_overlapping_shares(capsys, sets_json):
    argv = ["inspect", sets_json, "--epochs", 2, "--batch-size", 8]
    report = run_json(capsys, *argv)
    code, table, _ = run(capsys, *argv)
    assert code == 0
    assert list(report["samplers"]) == ["weighted", "quota"]  # the multi-label defaults
    assert "76 samples hold no class" in table and "samples holding it" in table
    row = next(ln for ln in table.splitlines() if ln.startswith("draws containing (target)"))
    r = report["samplers"]["weighted"]
    first = next(iter(report["classes"]))
    assert f"{100 * r['realised_share'][first]:.2f}%" in row
    assert "counts for both" in table and "FULL local batches only" in table


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "argv", "message"),
    [
        ('["a", "b"]', ["--background", "ok"], "has one label per sample"),
        ('[{"a": 1}]', [], "one list of labels per sample"),
        ("[[], []]", [], "no sample has a label"),
        ('{"images": [], "annotations": []}', ["--background", "ok"], "needs --multilabel"),
        ('[["a"], ["b"]]', ["--background", "a"], "background='a' is also a label"),
    ],
)
def test_bad_multilabel_input_says_why(capsys, tmp_path, content, argv, message):
    path = tmp_path / "labels.json"
    path.write_text(content)
    code, _, err = run(capsys, "inspect", path, *argv)
    assert code == 2 and message in err, err


def test_torch_wrs_says_why_it_cannot_run_class_weights_on_multilabel(capsys, sets_json):
    report = run_json(capsys, "inspect", sets_json, "--sampler", "torch-wrs")
    assert "multi-label" in report["skipped"]["torch-wrs"] and report["samplers"] == {}


# -- figures --------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_MPL, reason="matplotlib is not installed")
@pytest.mark.parametrize("multilabel", [False, True])
def test_every_panel_has_its_legend_and_plain_axis_words(sets_json, tmp_path, multilabel):
    labels = sets_json
    if not multilabel:
        labels = tmp_path / "labels.npy"
        np.save(labels, np.array(["a"] * 20 + ["b"] * 80))
    args = cli.parser().parse_args(
        ["inspect", str(labels), "--sampler", "weighted", "--sampler", "quota",
         "--world-size", "2", "--batch-size", "8", "--epochs", "2"]
    )  # fmt: skip
    data, runs, minority = cli.simulation(args)
    fig = plots.figure(list(plots.PANELS), runs, data, args, minority)
    axes = fig.axes
    assert len(axes) == 4 * 2
    assert all(ax.get_legend() is not None for ax in axes)  # every column, not only the first
    labels = [ax.get_xlabel() for ax in axes]
    assert not any("iteration-major" in x for x in labels)
    assert all("in training order" in x for x in labels[:2])
    assert all("value at 0 = never seen" in x for x in labels[-2:])  # the ECDF's caption

"""Tests for distsampler.collate: detection batches as pairs, triples or both."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from distsampler import collate
from distsampler.collate import collate_detection

IMG = torch.zeros(3, 4, 4)
OK = {"boxes": torch.zeros(1, 4), "labels": [0]}

EMPTY_TARGETS = [
    pytest.param(
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}, id="tensor"
    ),
    pytest.param({"boxes": [], "labels": []}, id="list"),
    pytest.param({"boxes": np.zeros((0, 4)), "labels": np.zeros(0, dtype=np.int64)}, id="numpy"),
    pytest.param({"boxes": np.zeros(0), "labels": np.zeros(0)}, id="numpy_flat"),
]


@pytest.mark.parametrize("empty", EMPTY_TARGETS)
def test_mixes_empty_and_non_empty_targets(empty):
    img = torch.rand(3, 8, 8)
    full = {"boxes": torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 4.0, 4.0]]), "labels": [2, 1]}
    lists = {"boxes": [[1, 2, 3, 4]], "labels": torch.tensor([5], dtype=torch.int32)}
    images, boxes, labels = collate_detection([(img, full), (img * 2, empty), (img, lists)])
    assert images.shape == (3, 3, 8, 8)
    torch.testing.assert_close(images[1], img * 2)
    assert [tuple(b.shape) for b in boxes] == [(2, 4), (0, 4), (1, 4)]
    assert [tuple(lb.shape) for lb in labels] == [(2,), (0,), (1,)]
    assert all(b.dtype == torch.float32 for b in boxes)
    assert all(lb.dtype == torch.int64 for lb in labels)
    assert labels[0].tolist() == [2, 1] and labels[2].tolist() == [5]
    torch.testing.assert_close(boxes[2], torch.tensor([[1.0, 2.0, 3.0, 4.0]]))


def _samples(seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    counts = [2, 0, 3, 1]
    return [
        (torch.rand(3, 6, 6, generator=g), torch.rand(n, 4, generator=g) * 6, torch.arange(n) % 3)
        for n in counts
    ]


def _same(a, b) -> None:
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    for xs, ys in zip(a[1:], b[1:], strict=True):
        for x, y in zip(xs, ys, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_triples_pairs_and_mixed_batches_collate_the_same():
    triples = _samples(0)
    pairs = [(img, {"boxes": b, "labels": lb}) for img, b, lb in triples]
    mixed = [p if i % 2 else t for i, (p, t) in enumerate(zip(pairs, triples, strict=True))]
    lists = [[img, b.tolist(), lb.tolist()] for img, b, lb in triples]  # list samples, list data
    expected = collate_detection(pairs)
    for batch in (triples, mixed, lists):
        _same(collate_detection(batch), expected)
    assert [b.shape[0] for b in expected[1]] == [2, 0, 3, 1]


class DefectDataset(Dataset):
    """The shape a typical custom detection dataset has: ``return image, boxes, labels``."""

    def __init__(self) -> None:
        self.samples = _samples(1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        image, boxes, labels = self.samples[i]
        return image, boxes, labels


def test_custom_triple_dataset_in_a_dataloader():
    loader = DataLoader(DefectDataset(), batch_size=3, collate_fn=collate_detection)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(3, 3, 6, 6), (1, 3, 6, 6)]
    assert [[b.shape[0] for b in boxes] for _, boxes, _ in batches] == [[2, 0, 3], [1]]


def test_docstring_examples_run():
    result = doctest.testmod(collate, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- errors

# Rule: wrong type -> TypeError, wrong value -> ValueError; bad samples named by index.
DETECTION_ERRORS = [
    # no samples at all
    pytest.param([], ValueError, r"non-empty sequence of samples, but got 0 samples", id="empty"),
    # an iterator has no length and no batch[i] to report
    pytest.param(
        iter([(IMG, OK)]),
        TypeError,
        r"batch should be a sequence of samples, but got list_iterator$",
        id="iterator",
    ),
    # a bare tensor is not a sample
    pytest.param(
        [IMG],
        TypeError,
        r"batch\[0\] should be an \(image, target\) pair or \(image, boxes, labels\) triple, "
        r"but got Tensor of shape \(3, 4, 4\)",
        id="sample_tensor",
    ),
    # four items: neither a pair nor a triple
    pytest.param(
        [(IMG, OK), (IMG, OK), (IMG, OK), (IMG, OK, 0, 1)],
        ValueError,
        r"^batch\[3\] should be an \(image, target\) pair or \(image, boxes, labels\) triple, "
        r"but got tuple of length 4$",
        id="sample_len_4",
    ),
    # a single item
    pytest.param([[IMG]], ValueError, r"but got list of length 1$", id="sample_len_1"),
    # (image, target, index): a common dataset shape that is not a triple of boxes
    pytest.param(
        [(IMG, OK, 7)],
        TypeError,
        r"batch\[0\] is a triple, so it should be \(image, boxes, labels\), but its second "
        r"item is a dict with keys \['boxes', 'labels'\]",
        id="triple_with_target",
    ),
    # the second image differs in height
    pytest.param(
        [(IMG, OK), (torch.zeros(3, 5, 4), OK)],
        ValueError,
        r"batch\[0\] shape \(3, 4, 4\) and batch\[1\] shape \(3, 5, 4\)",
        id="image_shapes_differ",
    ),
    # a 2-D image is a tensor of the wrong shape
    pytest.param(
        [(torch.zeros(4, 4), OK)],
        ValueError,
        r"batch\[0\] image should be a \(C, H, W\) tensor, but got shape \(4, 4\)",
        id="image_2d",
    ),
    # a numpy image is the wrong type (convert with torch.from_numpy first)
    pytest.param(
        [(np.zeros((3, 4, 4)), OK)],
        TypeError,
        r"image should be a \(C, H, W\) tensor, but got ndarray of shape \(3, 4, 4\)",
        id="image_numpy",
    ),
    # the target is a tensor, not a mapping
    pytest.param(
        [(IMG, torch.zeros(1, 4))],
        TypeError,
        r"target should be a mapping with 'boxes' and 'labels', but got Tensor of shape",
        id="target_tensor",
    ),
    # the mapping lacks 'labels'; its keys are listed, its values never
    pytest.param(
        [(IMG, {"boxes": torch.zeros(1, 4)})],
        ValueError,
        r"batch\[0\] target should be a mapping with 'boxes' and 'labels', "
        r"but got dict with keys \['boxes'\]$",
        id="target_no_labels",
    ),
    # flat boxes of one object: (4,) instead of (1, 4)
    pytest.param(
        [(IMG, OK), (IMG, {"boxes": torch.zeros(4), "labels": [0]})],
        ValueError,
        r"batch\[1\] target\['boxes'\] should have shape \(N, 4\), but got shape \(4,\)",
        id="boxes_flat",
    ),
    # five coordinates per box, in a triple
    pytest.param(
        [(IMG, torch.zeros(2, 5), [0, 1])],
        ValueError,
        r"^batch\[0\] boxes should have shape \(N, 4\), but got shape \(2, 5\)$",
        id="boxes_5_wide",
    ),
    # (3, 0) is not "no objects": three boxes without coordinates
    pytest.param(
        [(IMG, {"boxes": torch.zeros(3, 0), "labels": []})], ValueError, r"shape \(3, 0\)", id="3x0"
    ),
    # NaN coordinates are counted, never printed
    pytest.param(
        [(IMG, {"boxes": [[0, 0, 1, float("nan")]], "labels": [0]})],
        ValueError,
        r"target\['boxes'\] should be finite, but got 1 non-finite values in a \(1, 4\) tensor$",
        id="boxes_nan",
    ),
    # a ragged nested list
    pytest.param(
        [(IMG, {"boxes": [[0, 0, 1, 1], [0, 1]], "labels": [0, 1]})],
        ValueError,
        r"target\['boxes'\] should be a rectangular array of numbers, but got a ragged list "
        r"of length 2",
        id="boxes_ragged",
    ),
    # bool boxes are a wrong type
    pytest.param(
        [(IMG, {"boxes": [[True] * 4], "labels": [1]})],
        TypeError,
        r"should hold real numbers, but got dtype torch.bool",
        id="boxes_bool",
    ),
    # string boxes are a wrong type
    pytest.param(
        [(IMG, [["0", "0", "1", "1"]], [1])],
        TypeError,
        r"batch\[0\] boxes should hold real numbers, but got list of length 1 holding dtype <U1",
        id="boxes_str",
    ),
    # one label for two boxes
    pytest.param(
        [(IMG, {"boxes": torch.zeros(2, 4), "labels": [0]})],
        ValueError,
        r"target\['labels'\] should have shape \(2,\) to match 2 boxes, but got shape \(1,\)",
        id="labels_short",
    ),
    # float labels are a wrong type
    pytest.param(
        [(IMG, torch.zeros(1, 4), [0.5])],
        TypeError,
        r"^batch\[0\] labels should be integers, but got dtype torch.float64$",
        id="labels_float",
    ),
]


@pytest.mark.parametrize("bad, exc, match", DETECTION_ERRORS)
def test_errors(bad, exc, match):
    with pytest.raises(exc, match=match):
        collate_detection(bad)


BIG = 100_000  # rows: tolist() or a full repr of this would be megabytes
HUGE_SAMPLES = [
    # wrong length: the old message printed the whole sample
    pytest.param((torch.zeros(3, 4, 4), {"boxes": torch.rand(BIG, 4)}, 0, 1), id="sample_len"),
    # missing key: the old message printed the whole target mapping
    pytest.param((torch.zeros(3, 4, 4), {"boxes": torch.rand(BIG, 4), "x": 1}), id="no_labels"),
    # non-finite boxes: the old message printed boxes.tolist()
    pytest.param(
        (torch.zeros(3, 4, 4), {"boxes": torch.full((BIG, 4), float("nan")), "labels": [0]}),
        id="nan_boxes",
    ),
    pytest.param((torch.zeros(3, 4, 4), np.full((BIG, 4), np.inf), [0]), id="inf_boxes_triple"),
    # a huge tensor in place of the image
    pytest.param((torch.rand(BIG, 4), torch.zeros(1, 4), [0]), id="image_2d"),
    # a huge tensor in place of the target mapping
    pytest.param((torch.zeros(3, 4, 4), torch.rand(BIG, 4)), id="target_tensor"),
    # mislabelled: a huge label tensor of the wrong length
    pytest.param(
        (torch.zeros(3, 4, 4), torch.zeros(1, 4), torch.zeros(BIG, dtype=torch.long)), id="labels"
    ),
]


@pytest.mark.parametrize("sample", HUGE_SAMPLES)
def test_error_describes_a_huge_sample_by_type_and_shape(sample):
    with pytest.raises((TypeError, ValueError)) as info:
        collate_detection([(torch.zeros(3, 4, 4), OK), sample])
    msg = str(info.value)
    assert len(msg) < 300, msg
    assert msg.startswith("batch[1] ")
    for value_repr in ("tensor(", "array(", "[[", "nan,", "inf,", "0."):
        assert value_repr not in msg, msg

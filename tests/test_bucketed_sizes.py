"""Sizes for bucketing: checks, the HF datasets helper, COCO heights and widths."""

import numpy as np
import pytest

from distsampler import (
    DistributedBucketBatchSampler,
    DistributedQuotaBatchSampler,
)
from distsampler.coco import image_sizes
from distsampler.groups import from_coco
from distsampler.sizes import check_sizes, from_hf_dataset


class FakeDataset:
    """Stands for a ``datasets.Dataset`` (not a dependency): columns by name."""

    def __init__(self, **columns):
        self.columns = columns
        self.column_names = list(columns)

    def __getitem__(self, name):
        return self.columns[name]

    def __len__(self):
        return len(next(iter(self.columns.values())))


def test_from_hf_dataset_lengths_of_token_ids_or_a_length_column():
    ds = FakeDataset(input_ids=[[1, 2, 3], [4], [5, 6]], length=[3, 1, 2])
    assert from_hf_dataset(ds).tolist() == [3, 1, 2]
    assert from_hf_dataset(ds, "length").tolist() == [3, 1, 2]
    with pytest.raises(ValueError, match="column='labels'.*input_ids"):
        from_hf_dataset(ds, "labels")


def test_from_real_hf_dataset():
    import datasets  # the test extra installs it: a missing package fails, not skips

    ds = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3], [4], [5, 6]]})
    assert from_hf_dataset(ds).tolist() == [3, 1, 2]
    assert from_hf_dataset(ds.select([2, 0])).tolist() == [2, 3]  # an index mapping


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ([3, -1, 2], r"sizes\[1\]=-1"),
        ([3.0, float("inf")], r"sizes\[1\]=inf"),
        ([[3, 4], [0, 2]], r"sizes\[1\]=\[0, 2\]"),
        ([], "should not be empty"),
    ],
)
def test_check_sizes_names_the_bad_entry(sizes, match):
    with pytest.raises(ValueError, match=match):
        check_sizes(np.asarray(sizes))


def test_check_sizes_refuses_strings_and_wrong_length():
    with pytest.raises(TypeError, match="integers or floats"):
        check_sizes(np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"len\(sizes\) should equal .* 3"):
        check_sizes([1, 2], dataset_size=3)


COCO = {
    "images": [
        {"id": 1, "height": 480, "width": 640},
        {"id": 2, "height": 640, "width": 480},
        {"id": 3, "height": 500, "width": 500},
    ],
    "categories": [{"id": 1, "name": "defect"}],
    "annotations": [{"image_id": 2, "category_id": 1}],
}


def test_coco_sizes_follow_the_ids_in_both_modes():
    ids, labels, sizes = from_coco(COCO, {"defect": [1]}, default="ok", with_sizes=True)
    assert ids.tolist() == [1, 2, 3] and labels.tolist() == ["ok", "defect", "ok"]
    assert sizes.tolist() == [[480, 640], [640, 480], [500, 500]]
    ids, labels, sizes = from_coco(COCO, {"defect": [1]}, with_sizes=True)  # images left out
    assert ids.tolist() == [2] and sizes.tolist() == [[640, 480]]
    ids, index, sizes = from_coco(COCO, multilabel=True, background="ok", with_sizes=True)
    assert sizes.shape == (3, 2) and len(index) == 3
    assert len(from_coco(COCO, {"defect": [1]}, default="ok")) == 2  # unchanged default


def test_coco_sizes_must_be_positive_integers():
    bad = {"images": [{"id": 4, "height": 0, "width": 5}], "annotations": []}
    with pytest.raises(ValueError, match=r"image 4 \(images\[0\]\).*positive height"):
        image_sizes(bad)
    bad = {"images": [{"id": 4, "height": 5}], "annotations": []}
    with pytest.raises(ValueError, match="positive width, but got width=None"):
        image_sizes(bad)


def test_detection_recipe_aspect_ratio_and_one_defect_per_batch():
    rng = np.random.default_rng(0)
    n = 400
    coco = {
        "images": [
            {"id": i, "height": int(rng.integers(300, 900)), "width": int(rng.integers(300, 900))}
            for i in range(n)
        ],
        "categories": [{"id": 1, "name": "defect"}],
        "annotations": [{"image_id": i, "category_id": 1} for i in range(0, n, 20)],
    }
    ids, labels, sizes = from_coco(coco, {"defect": [1]}, default="ok", with_sizes=True)
    source = DistributedQuotaBatchSampler(labels, 4, {"defect": 1}, num_replicas=1, rank=0)
    sampler = DistributedBucketBatchSampler(source, sizes, buckets=[1.0], num_replicas=2, rank=1)
    ratio = sizes[:, 0] / sizes[:, 1]
    batches = list(sampler)
    assert all(sum(labels[i] == "defect" for i in b) == 1 for b in batches)
    same_side = np.mean([len({bool(ratio[i] >= 1) for i in b}) == 1 for b in batches])
    # Random batches of 4 are on one side 2 * 0.5**4 = 12% of the time. The quota wins: where
    # the defects' share of one side differs from the normals', some batches must mix sides.
    assert same_side > 0.7

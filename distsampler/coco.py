"""Reading COCO annotation files: the one place that parses them.

:func:`distsampler.groups.from_coco` (groups of images), :func:`distsampler.weights.
coco_image_categories` (LVIS repeat factors) and ``distsampler inspect`` all read COCO through
:func:`image_categories`, so they agree on the order of the images: the order of the file's
``images`` list.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np

__all__ = ["image_categories", "image_sizes", "load_coco"]


def load_coco(annotation_file: str | os.PathLike | Mapping) -> Mapping:
    """A COCO annotation file (path or loaded dict), checked to have images and annotations."""
    if isinstance(annotation_file, Mapping):
        coco = annotation_file
    else:
        with open(annotation_file, encoding="utf-8") as fh:
            coco = json.load(fh)
    if not isinstance(coco, Mapping):
        raise ValueError("annotation_file should hold a JSON object; is it a COCO file?")
    for key in ("images", "annotations"):
        if key not in coco:
            raise ValueError(f"annotation_file has no {key!r} list; is it a COCO file?")
    return coco


def image_categories(coco: Mapping) -> tuple[np.ndarray, list[list[int]]]:
    """``(image_ids, categories)``: the distinct category ids of each image, in file order.

    Annotations of images that ``images`` does not list are ignored (as COCO tools do).
    """
    ids = np.asarray([int(img["id"]) for img in coco["images"]], dtype=np.int64)
    where = {int(i): k for k, i in enumerate(ids)}
    if len(where) != len(ids):
        raise ValueError("annotation_file lists an image id twice in 'images'")
    cats: list[list[int]] = [[] for _ in ids]
    for ann in coco["annotations"]:
        k = where.get(int(ann["image_id"]))
        if k is None:
            continue
        c = int(ann["category_id"])
        if c not in cats[k]:
            cats[k].append(c)
    return ids, cats


def image_sizes(coco: Mapping) -> np.ndarray:
    """``(height, width)`` of every image, ``(N, 2)`` int64, in the order of ``images``.

    The sizes for :class:`~distsampler.DistributedBucketBatchSampler` (aspect-ratio batches),
    read from the file's metadata, never from the images. Every image must give a positive
    integer ``height`` and ``width``.

    Examples:
        >>> image_sizes({"images": [{"id": 7, "height": 480, "width": 640}]}).tolist()
        [[480, 640]]
    """
    images = coco["images"]
    out = np.empty((len(images), 2), dtype=np.int64)
    for k, img in enumerate(images):
        for j, field in enumerate(("height", "width")):
            value = img.get(field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(
                    f"annotation_file: image {img.get('id')!r} (images[{k}]) should have a "
                    f"positive {field}, but got {field}={value!r}"
                )
            if value != int(value):
                raise ValueError(
                    f"annotation_file: image {img.get('id')!r} (images[{k}]) should have an "
                    f"integer {field}, but got {field}={value!r}"
                )
            out[k, j] = int(value)
    return out

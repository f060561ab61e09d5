"""Collation for detection data: images stacked, boxes and labels kept per image.

``default_collate`` cannot stack ``(N_i, 4)`` boxes whose count ``N_i`` differs per image;
``collate_detection`` stacks the images and keeps boxes and labels as per-image lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["collate_detection"]

_SAMPLE = "an (image, target) pair or (image, boxes, labels) triple"


def _describe(x: Any) -> str:
    """A short description of ``x`` by type and shape; never its values (they can be huge)."""
    kind = type(x).__name__
    if isinstance(x, (Tensor, np.ndarray)):
        return f"{kind} of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, Mapping):
        keys = [k if isinstance(k, str) else type(k).__name__ for k in islice(x, 6)]
        more = ", ..." if len(x) > 6 else ""
        return f"{kind} with keys [{', '.join(repr(k[:30]) for k in keys)}{more}]"
    if isinstance(x, (tuple, list)):
        return f"{kind} of length {len(x)}"
    return kind


def _as_tensor(where: str, value: Any) -> Tensor:
    """``value`` (tensor, array or nested list) as a real tensor; values never appear in errors."""
    if isinstance(value, Tensor):
        t = value
    else:
        try:
            arr = np.asarray(value)
        except ValueError:  # ragged nested lists
            raise ValueError(
                f"{where} should be a rectangular array of numbers, but got a ragged "
                f"{_describe(value)}"
            ) from None
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                f"{where} should hold real numbers, but got {_describe(value)} "
                f"holding dtype {arr.dtype}"
            )
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{where} should hold real numbers, but got dtype {t.dtype}")
    return t


def _as_boxes(where: str, boxes: Any) -> Tensor:
    t = _as_tensor(where, boxes)
    if t.shape in ((0,), (0, 0), (0, 4)):  # no objects: [], np.zeros(0), (0, 4)
        return torch.zeros((0, 4), dtype=torch.float32, device=t.device)
    if t.ndim != 2 or t.shape[1] != 4:
        raise ValueError(f"{where} should have shape (N, 4), but got shape {tuple(t.shape)}")
    t = t.to(torch.float32)
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise ValueError(
            f"{where} should be finite, but got {bad} non-finite values in a "
            f"{tuple(t.shape)} tensor"
        )
    return t


def _as_labels(where: str, labels: Any, n: int) -> Tensor:
    t = _as_tensor(where, labels)
    if t.numel() == 0:
        t = t.reshape(0).to(torch.int64)
    if t.is_floating_point():
        raise TypeError(f"{where} should be integers, but got dtype {t.dtype}")
    if t.shape != (n,):
        raise ValueError(
            f"{where} should have shape ({n},) to match {n} boxes, but got shape {tuple(t.shape)}"
        )
    return t.to(torch.int64)


def _split(i: int, sample: Any) -> tuple[Any, Any, Any, str, str]:
    """``(image, boxes, labels, boxes_name, labels_name)`` of one sample, pair or triple."""
    if not isinstance(sample, (tuple, list)):
        raise TypeError(f"batch[{i}] should be {_SAMPLE}, but got {_describe(sample)}")
    if len(sample) == 3:
        image, boxes, labels = sample
        if isinstance(boxes, Mapping):
            raise TypeError(
                f"batch[{i}] is a triple, so it should be (image, boxes, labels), but its "
                f"second item is a {_describe(boxes)}; pass (image, target) pairs instead"
            )
        return image, boxes, labels, f"batch[{i}] boxes", f"batch[{i}] labels"
    if len(sample) != 2:
        raise ValueError(f"batch[{i}] should be {_SAMPLE}, but got {_describe(sample)}")
    image, target = sample
    if not isinstance(target, Mapping):
        raise TypeError(
            f"batch[{i}] target should be a mapping with 'boxes' and 'labels', "
            f"but got {_describe(target)}"
        )
    if "boxes" not in target or "labels" not in target:
        raise ValueError(
            f"batch[{i}] target should be a mapping with 'boxes' and 'labels', "
            f"but got {_describe(target)}"
        )
    name = f"batch[{i}] target"
    return image, target["boxes"], target["labels"], f"{name}['boxes']", f"{name}['labels']"


def collate_detection(
    batch: Sequence[tuple[Tensor, Mapping[str, Any]] | tuple[Tensor, Any, Any]],
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Collate detection samples whose images share a shape but hold different box counts.

    Each sample is either an ``(image, target)`` pair with a target mapping holding
    ``"boxes"`` and ``"labels"`` (the torchvision form), or an ``(image, boxes, labels)``
    triple (what a plain custom dataset's ``__getitem__`` returns). The forms may be mixed
    within one batch (e.g. a ``ConcatDataset`` of two sources): each sample is read on its
    own, and both give the same output.

    Args:
        batch: a non-empty sequence of samples. ``image`` is a ``(C, H, W)`` tensor, the same
            shape in every sample; ``boxes`` is ``(N, 4)`` real numbers in any box format
            (tensor, array or nested list); ``labels`` is ``(N,)`` integers. ``N`` may be 0
            (``[]``, ``np.zeros(0)`` and ``(0, 4)`` all mean "no objects").

    Returns:
        ``(images, boxes, labels)``: ``images`` is ``(B, C, H, W)``, ``boxes[i]`` is float32
        ``(N_i, 4)`` and ``labels[i]`` int64 ``(N_i,)``; an image without objects gets
        ``(0, 4)`` / ``(0,)``. Boxes keep their device; they are never moved or rescaled.

    Raises:
        TypeError: batch not a sequence, a sample not a tuple/list, a non-tensor image, a
            non-mapping target, boxes or labels that are not real numbers, float labels.
        ValueError: empty batch, a sample of length other than 2 or 3, a target without
            ``"boxes"`` or ``"labels"``, an image not ``(C, H, W)``, images of different
            shapes, boxes not ``(N, 4)`` or not finite, a labels count different from the
            boxes count. Messages describe the bad sample by type and shape, never by values.

    Trap: any other key of a target mapping (``"masks"``, ``"area"``, ``"image_id"``, ...) is
    dropped, and images of different sizes must be resized or padded first (the batch is one
    stacked tensor). Mixing transforms (``MixUp``, ...) do not
    apply to detection targets.

    Examples:
        >>> import torch
        >>> from distsampler.collate import collate_detection
        >>> img = torch.zeros(3, 8, 8)
        >>> pair = (img, {"boxes": [[0, 0, 4, 4], [2, 2, 6, 6]], "labels": [1, 2]})
        >>> triple = (img, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))  # no objects
        >>> images, boxes, labels = collate_detection([pair, triple])
        >>> images.shape
        torch.Size([2, 3, 8, 8])
        >>> [tuple(b.shape) for b in boxes], [lb.tolist() for lb in labels]
        ([(2, 4), (0, 4)], [[1, 2], []])
        >>> from torch.utils.data import DataLoader
        >>> loader = DataLoader([pair, triple, pair], batch_size=2, collate_fn=collate_detection)
        >>> [len(boxes) for images, boxes, labels in loader]
        [2, 1]
    """
    if not isinstance(batch, Sequence):
        raise TypeError(f"batch should be a sequence of samples, but got {_describe(batch)}")
    if len(batch) == 0:
        raise ValueError("batch should be a non-empty sequence of samples, but got 0 samples")
    images: list[Tensor] = []
    boxes: list[Tensor] = []
    labels: list[Tensor] = []
    for i, sample in enumerate(batch):
        image, raw_boxes, raw_labels, boxes_name, labels_name = _split(i, sample)
        if not isinstance(image, Tensor):
            raise TypeError(
                f"batch[{i}] image should be a (C, H, W) tensor, but got {_describe(image)}"
            )
        if image.ndim != 3:
            raise ValueError(
                f"batch[{i}] image should be a (C, H, W) tensor, but got shape {tuple(image.shape)}"
            )
        if images and image.shape != images[0].shape:
            raise ValueError(
                "all images should have the same shape to be stacked, but got "
                f"batch[0] shape {tuple(images[0].shape)} and batch[{i}] shape "
                f"{tuple(image.shape)}; resize or pad them first"
            )
        b = _as_boxes(boxes_name, raw_boxes)
        images.append(image)
        boxes.append(b)
        labels.append(_as_labels(labels_name, raw_labels, b.shape[0]))
    return torch.stack(images), boxes, labels

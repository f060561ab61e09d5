"""Collation for detection data: images stacked, boxes and labels kept per image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["collate_detection"]


def _as_boxes(i: int, boxes: Any) -> Tensor:
    try:
        t = torch.as_tensor(np.asarray(boxes) if not isinstance(boxes, Tensor) else boxes)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"batch[{i}] target['boxes'] is not a numeric array: {e}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"batch[{i}] target['boxes'] should be real numbers, but got {t.dtype}")
    if t.shape in ((0,), (0, 0), (0, 4)):  # no objects: [], np.zeros(0), (0, 4)
        return torch.zeros((0, 4), dtype=torch.float32, device=t.device)
    if t.ndim != 2 or t.shape[1] != 4:
        raise ValueError(
            f"batch[{i}] target['boxes'] should have shape (N, 4), but got shape {tuple(t.shape)}"
        )
    t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"batch[{i}] target['boxes'] should be finite, but got {t.tolist()}")
    return t


def _as_labels(i: int, labels: Any, n: int) -> Tensor:
    try:
        t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"batch[{i}] target['labels'] is not a numeric array: {e}") from None
    if t.numel() == 0:
        t = t.reshape(0).to(torch.int64)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"batch[{i}] target['labels'] should be integers, but got {t.dtype}")
    if t.shape != (n,):
        raise ValueError(
            f"batch[{i}] target['labels'] should have shape ({n},) to match {n} boxes, "
            f"but got shape {tuple(t.shape)}"
        )
    return t.to(torch.int64)


def collate_detection(
    batch: Sequence[tuple[Tensor, Mapping[str, Any]]],
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Collate detection samples whose images share a shape but hold different box counts.

    ``default_collate`` cannot stack ``(N_i, 4)`` boxes of different ``N_i``; this stacks the
    images and keeps boxes and labels as per-image lists.

    Args:
        batch: ``(image, target)`` pairs; image a ``(C, H, W)`` tensor, target a mapping with
            ``"boxes"`` ``(N, 4)`` (any box format; tensor, array or nested list) and
            ``"labels"`` ``(N,)`` integers. ``N`` may be 0, or both may be empty lists.

    Returns:
        ``(images (B, C, H, W), boxes, labels)`` with ``boxes[i]`` float32 ``(N_i, 4)`` and
        ``labels[i]`` int64 ``(N_i,)``; an image without objects gets ``(0, 4)`` / ``(0,)``.

    Raises:
        ValueError: empty batch, images of different shapes, missing keys, boxes not
            ``(N, 4)`` or not finite, or a labels count different from the boxes count.
        TypeError: non-tensor image, non-mapping target, non-integer labels.

    Trap: images of different sizes must be resized (or padded) first; mixing transforms do
    not apply to detection targets.
    """
    if not isinstance(batch, Sequence) or len(batch) == 0:
        raise ValueError("batch should be a non-empty sequence of (image, target) pairs")
    images, boxes, labels = [], [], []
    for i, sample in enumerate(batch):
        if not isinstance(sample, (tuple, list)) or len(sample) != 2:
            raise TypeError(f"batch[{i}] should be an (image, target) pair, but got {sample!r}")
        image, target = sample
        if not isinstance(image, Tensor) or image.ndim != 3:
            desc = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise TypeError(f"batch[{i}] image should be a (C, H, W) tensor, but got {desc}")
        if images and image.shape != images[0].shape:
            raise ValueError(
                "all images should have the same shape to be stacked, but got "
                f"batch[0] shape {tuple(images[0].shape)} and batch[{i}] shape "
                f"{tuple(image.shape)}; resize or pad them first"
            )
        if not isinstance(target, Mapping) or "boxes" not in target or "labels" not in target:
            raise ValueError(
                f"batch[{i}] target should be a mapping with 'boxes' and 'labels', "
                f"but got {target!r}"
            )
        b = _as_boxes(i, target["boxes"])
        images.append(image)
        boxes.append(b)
        labels.append(_as_labels(i, target["labels"], b.shape[0]))
    return torch.stack(images), boxes, labels

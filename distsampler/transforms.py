"""Batch transforms for imbalanced training: MixUp, CutMix and Remix.

Oversampling shows the same few minority samples again and again; blending each sample with a
partner from the same batch is the usual cure. Every transform here is a callable on a collated
batch ``(inputs, targets)`` and returns ``(mixed_inputs, soft_targets)``: float ``(B, C)`` rows
that sum to 1, which ``torch.nn.CrossEntropyLoss`` accepts directly as probabilities.

Randomness. Each call draws, from the transform's ``generator`` only, a partner permutation
(``torch.randperm``) and one 63-bit seed (``torch.randint``); the Beta lambdas and the
CutMix box come from ``np.random.Generator(np.random.PCG64(seed))``. (``torch.distributions.Beta``
and ``torch._standard_gamma`` cannot take a generator.) With ``generator=None`` the global torch
RNG is used instead. Build one generator per rank and epoch from a *tuple* with
``seeded_generator`` -- never ``seed + epoch``, which collides (seed 1 / epoch 0 is seed 0 /
epoch 1):

```python
import torch
from distsampler.transforms import CutMix, MixUp, RandomChoice, seeded_generator

mix = RandomChoice([MixUp(alpha=0.2, num_classes=10), CutMix(alpha=1.0, num_classes=10)])
loss_fn = torch.nn.CrossEntropyLoss()
for epoch in range(epochs):
    mix.set_generator(seeded_generator(seed, rank=rank, epoch=epoch))
    for x, y in loader:                      # y: (B,) int64 class indices
        x, y = mix(x.to(device), y.to(device))   # y: (B, 10) float soft targets
        loss = loss_fn(model(x), y)
        ...
```

Trap: a transform used inside ``DataLoader`` workers (e.g. via ``MixUpCollate``) is
pickled into every worker *with its generator state*, so all workers would draw the same
lambdas. Either apply the transform in the training loop (as above), or pass ``generator=None``
there: the DataLoader seeds each worker's global torch RNG differently (and reproducibly when
the DataLoader itself gets a ``generator``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate

from ._core.checks import MAX_SEED, check_bool, check_int, check_real
from .collate import collate_detection  # re-exported: it lived here before collate.py

__all__ = [
    "CutMix",
    "MixParams",
    "MixUp",
    "MixUpCollate",
    "RandomChoice",
    "Remix",
    "collate_detection",
    "seeded_generator",
]

BatchTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


# --------------------------------------------------------------------------- validation helpers


def _check_alpha(alpha: Any) -> float:
    return check_real("alpha", alpha, 0.0, low_open=True)


def _check_generator(value: Any) -> torch.Generator | None:
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(
            f"generator should be a torch.Generator or None, but got {type(value).__name__}"
        )
    return value


def seeded_generator(seed: int, *, rank: int = 0, epoch: int = 0) -> torch.Generator:
    """A CPU generator keyed by the tuple ``(seed, rank, epoch)``.

    The key is ``np.random.SeedSequence([seed, rank, epoch])``'s first 64-bit word (the same
    derivation as the samplers' plan keys), so distinct tuples give unrelated streams;
    ``seed + epoch`` or ``seed + rank`` would make different runs share streams. Include
    ``rank`` so every DDP rank mixes its own shard with its own lambdas.

    Raises:
        TypeError: if a part is not an integer (``bool`` included).
        ValueError: if a part is negative or above ``2**63 - 1``.
    """
    for name, v in (("seed", seed), ("rank", rank), ("epoch", epoch)):
        check_int(name, v, 0, MAX_SEED)
    key = np.random.SeedSequence([int(seed), int(rank), int(epoch)]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(key[0]))


def _draw(generator: torch.Generator | None, batch_size: int) -> tuple[Tensor, np.random.Generator]:
    """Partner permutation (CPU int64) and a numpy Generator, both from ``generator`` only."""
    device = generator.device if generator is not None else "cpu"
    perm = torch.randperm(batch_size, generator=generator, device=device).cpu()
    seed = int(torch.randint(2**63 - 1, (1,), generator=generator, device=device).item())
    return perm, np.random.Generator(np.random.PCG64(seed))


def _check_inputs(inputs: Any) -> None:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs should be a Tensor, but got {type(inputs).__name__}")
    if inputs.ndim < 1:
        raise ValueError("inputs should have a batch dimension, but got a 0-d tensor")


def _soft_targets(targets: Any, batch_size: int, num_classes: int, dtype: torch.dtype) -> Tensor:
    """Validated ``(B, num_classes)`` float targets from class indices or soft targets."""
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets should be a Tensor, but got {type(targets).__name__}")
    if targets.ndim == 0 or targets.shape[0] != batch_size:
        raise ValueError(
            "inputs and targets should have the same batch size, but got "
            f"inputs batch size {batch_size} and targets shape {tuple(targets.shape)}"
        )
    if targets.ndim == 1 and not targets.is_floating_point() and targets.dtype != torch.bool:
        if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
            bad = targets[(targets < 0) | (targets >= num_classes)][0].item()
            raise ValueError(
                f"targets should be class indices in [0, num_classes={num_classes}), "
                f"but got a target {bad}"
            )
        return torch.nn.functional.one_hot(targets.long(), num_classes).to(dtype)
    if targets.ndim == 2 and targets.is_floating_point():
        if targets.shape[1] != num_classes:
            raise ValueError(
                f"soft targets should have shape (B, num_classes={num_classes}), "
                f"but got shape {tuple(targets.shape)}"
            )
        return targets
    raise ValueError(
        "targets should be class indices (B,) of an integer dtype or soft targets "
        f"(B, num_classes) of a floating dtype, but got shape {tuple(targets.shape)} "
        f"and dtype {targets.dtype}"
    )


def _target_dtype(inputs: Tensor) -> torch.dtype:
    return inputs.dtype if inputs.is_floating_point() else torch.get_default_dtype()


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class MixParams:
    """The random draws of one call; pass your own to a transform to force them (tests, demos).

    Attributes:
        lam: weight of each sample's own input, a float or a tensor of shape ``()`` or ``(B,)``
            with values in ``[0, 1]``. ``lam=1`` leaves the batch unchanged. CutMix ignores it
            and uses the kept area of ``box``.
        perm: partner index of each sample, shape ``(B,)`` with values in ``[0, B)``
            (a permutation when sampled).
        box: CutMix only: ``(x0, y0, x1, y1)``, half-open pixel ranges ``[x0, x1)`` of columns
            and ``[y0, y1)`` of rows pasted from the partner.
    """

    lam: float | Tensor
    perm: Tensor
    box: tuple[int, int, int, int] | None = None

    def checked(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """``(lam, perm)`` as CPU float64 / int64 tensors of shape ``(B,)``, validated."""
        lam = torch.as_tensor(self.lam, dtype=torch.float64).cpu()
        if lam.ndim == 0:
            lam = lam.expand(batch_size)
        if lam.shape != (batch_size,):
            raise ValueError(
                f"params.lam should be a scalar or have shape ({batch_size},), "
                f"but got shape {tuple(lam.shape)}"
            )
        bad = ~((lam >= 0) & (lam <= 1))  # NaN included
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"params.lam should lie in [0, 1], but got lam[{i}]={lam[i].item()}")
        perm = torch.as_tensor(self.perm).cpu()
        if perm.is_floating_point() or perm.dtype == torch.bool or perm.shape != (batch_size,):
            raise ValueError(
                f"params.perm should be integer indices of shape ({batch_size},), but got "
                f"shape {tuple(perm.shape)} and dtype {perm.dtype}"
            )
        bad = (perm < 0) | (perm >= batch_size)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"params.perm should lie in [0, {batch_size}), but got perm[{i}]={perm[i].item()}"
            )
        return lam, perm.long()


# --------------------------------------------------------------------------- transforms


class _Seeded:
    generator: torch.Generator | None

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Replace the generator, e.g. with ``seeded_generator(seed, rank=r, epoch=e)``."""
        self.generator = _check_generator(generator)


class MixUp(_Seeded):
    """MixUp (Zhang et al., 2018): blend each sample with a shuffled partner from the batch.

    ``x = lam * x + (1 - lam) * x[perm]`` and the same for the one-hot (or soft) targets, with
    ``lam ~ Beta(alpha, alpha)``, one per batch or one per sample (``per_sample=True``).

    Args:
        alpha: Beta concentration, > 0. Small (0.1-0.4) puts lambda near 0 or 1, so most
            mixed samples stay close to one of the pair; 1.0 gives uniform lambdas.
        num_classes: number of classes C; class-index targets become one-hot ``(B, C)``.
        per_sample: draw one lambda per sample instead of one per batch.
        generator: CPU ``torch.Generator`` driving all randomness; None uses the global torch
            RNG. See ``seeded_generator`` for per-rank, per-epoch seeding.

    Traps: inputs must be floating point (convert ``uint8`` images first). Index targets become
    soft targets of the inputs' dtype, so use a loss that accepts probabilities (e.g.
    ``CrossEntropyLoss``), not ``NLLLoss``. With a small batch a partner may be the sample
    itself; that sample is then unchanged.
    """

    def __init__(
        self,
        alpha: float,
        num_classes: int,
        per_sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.alpha = _check_alpha(alpha)
        self.num_classes = check_int("num_classes", num_classes, 1)
        self.per_sample = check_bool("per_sample", per_sample)
        self.generator = _check_generator(generator)

    def sample_params(self, inputs: Tensor) -> MixParams:
        """Draw the permutation and lambda(s) for a batch like ``inputs``."""
        _check_inputs(inputs)
        batch_size = inputs.shape[0]
        perm, rng = _draw(self.generator, batch_size)
        draws = rng.beta(self.alpha, self.alpha, size=batch_size if self.per_sample else 1)
        lam = torch.from_numpy(np.clip(draws, 0.0, 1.0)).expand(batch_size)
        return MixParams(lam=lam, perm=perm)

    def _check_call(self, inputs: Tensor, targets: Tensor) -> Tensor:
        _check_inputs(inputs)
        if not inputs.is_floating_point():
            raise TypeError(
                f"{type(self).__name__} blends inputs, so they should be floating point, "
                f"but got inputs.dtype={inputs.dtype}; convert with inputs.float() first"
            )
        return _soft_targets(targets, inputs.shape[0], self.num_classes, _target_dtype(inputs))

    def _label_lam(self, targets: Tensor, lam: Tensor, perm: Tensor) -> Tensor:
        return lam

    def __call__(
        self, inputs: Tensor, targets: Tensor, params: MixParams | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mix a batch.

        Args:
            inputs: ``(B, ...)`` floating tensor.
            targets: ``(B,)`` integer class indices or ``(B, num_classes)`` float soft targets.
            params: force the draws (see ``MixParams``); None samples them.

        Returns:
            ``(mixed_inputs, soft_targets)`` on the inputs' / targets' device; soft targets are
            ``(B, num_classes)`` float rows summing to 1 (if soft input rows did).
        """
        soft = self._check_call(inputs, targets)
        params = self.sample_params(inputs) if params is None else params
        lam, perm = params.checked(inputs.shape[0])
        label_lam = self._label_lam(targets, lam, perm)
        perm_x = perm.to(inputs.device)
        lam_x = lam.to(inputs.device, inputs.dtype).view(-1, *([1] * (inputs.ndim - 1)))
        mixed = lam_x * inputs + (1 - lam_x) * inputs[perm_x]
        lam_y = label_lam.to(soft.device, soft.dtype).view(-1, 1)
        return mixed, lam_y * soft + (1 - lam_y) * soft[perm.to(soft.device)]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(alpha={self.alpha}, num_classes={self.num_classes}, "
            f"per_sample={self.per_sample})"
        )


class CutMix(_Seeded):
    """CutMix (Yun et al., 2019): paste a box from each sample's partner, one box per batch.

    The box has area about ``(1 - lam) * H * W`` with ``lam ~ Beta(alpha, alpha)`` and a uniform
    centre; it is clipped to the image, and the label weight is the area actually kept,
    ``1 - box_area / (H * W)`` (the returned ``MixParams`` ``lam`` is that value).

    Args:
        alpha: Beta concentration, > 0 (1.0 is the paper's default).
        num_classes: number of classes C.
        generator: CPU ``torch.Generator``; None uses the global torch RNG.

    Traps: inputs must be ``(B, C, H, W)`` (channels first); any dtype works (``uint8`` too),
    index targets then become soft targets of the default float dtype.
    """

    def __init__(
        self, alpha: float, num_classes: int, generator: torch.Generator | None = None
    ) -> None:
        self.alpha = _check_alpha(alpha)
        self.num_classes = check_int("num_classes", num_classes, 1)
        self.generator = _check_generator(generator)

    @staticmethod
    def _check_image(inputs: Any) -> None:
        _check_inputs(inputs)
        if inputs.ndim != 4:
            raise ValueError(
                "CutMix inputs should be images of shape (B, C, H, W), "
                f"but got shape {tuple(inputs.shape)}"
            )

    def sample_params(self, inputs: Tensor) -> MixParams:
        """Draw the permutation and the (clipped) box for a batch like ``inputs``."""
        self._check_image(inputs)
        batch_size, _, height, width = inputs.shape
        perm, rng = _draw(self.generator, batch_size)
        lam = float(np.clip(rng.beta(self.alpha, self.alpha), 0.0, 1.0))
        cx, cy = int(rng.integers(width)), int(rng.integers(height))
        half = 0.5 * math.sqrt(1.0 - lam)
        half_w, half_h = int(half * width), int(half * height)
        box = (
            max(cx - half_w, 0),
            max(cy - half_h, 0),
            min(cx + half_w, width),
            min(cy + half_h, height),
        )
        kept = torch.full((batch_size,), self._kept(box, height, width), dtype=torch.float64)
        return MixParams(lam=kept, perm=perm, box=box)

    @staticmethod
    def _kept(box: tuple[int, int, int, int], height: int, width: int) -> float:
        x0, y0, x1, y1 = box
        return 1.0 - (x1 - x0) * (y1 - y0) / (height * width)

    def __call__(
        self, inputs: Tensor, targets: Tensor, params: MixParams | None = None
    ) -> tuple[Tensor, Tensor]:
        """Cut and paste a box; see ``MixUp.__call__`` for arguments and returns."""
        self._check_image(inputs)
        batch_size, _, height, width = inputs.shape
        soft = _soft_targets(targets, batch_size, self.num_classes, _target_dtype(inputs))
        params = self.sample_params(inputs) if params is None else params
        _, perm = params.checked(batch_size)
        if params.box is None or len(params.box) != 4:
            raise ValueError(f"CutMix params.box should be (x0, y0, x1, y1), got {params.box!r}")
        x0, y0, x1, y1 = (int(v) for v in params.box)
        if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
            raise ValueError(
                f"params.box should satisfy 0 <= x0 <= x1 <= W={width} and "
                f"0 <= y0 <= y1 <= H={height}, but got box={params.box!r}"
            )
        mixed = inputs.clone()
        mixed[:, :, y0:y1, x0:x1] = inputs[perm.to(inputs.device), :, y0:y1, x0:x1]
        lam = self._kept((x0, y0, x1, y1), height, width)
        return mixed, lam * soft + (1 - lam) * soft[perm.to(soft.device)]

    def __repr__(self) -> str:
        return f"CutMix(alpha={self.alpha}, num_classes={self.num_classes})"


def _check_counts(class_counts: Any, num_classes: int) -> Tensor:
    """``num_classes`` positive finite counts as a CPU float64 tensor."""
    if isinstance(class_counts, (Tensor, np.ndarray)):
        if class_counts.ndim != 1:
            raise ValueError(
                f"class_counts should be one-dimensional, but got shape {tuple(class_counts.shape)}"
            )
        values = class_counts.tolist()
    elif isinstance(class_counts, Sequence) and not isinstance(class_counts, str):
        values = list(class_counts)
    else:
        raise TypeError(
            f"class_counts should be a sequence, array or tensor of numbers, "
            f"but got {type(class_counts).__name__}"
        )
    if len(values) != num_classes:
        raise ValueError(
            f"class_counts should have length num_classes={num_classes}, but got length "
            f"{len(values)}"
        )
    checked = [
        check_real(f"class_counts[{i}]", c, 0.0, low_open=True) for i, c in enumerate(values)
    ]
    return torch.tensor(checked, dtype=torch.float64)


class Remix(MixUp):
    """Remix (Chou et al., 2020): mixup whose *label* favours the minority class.

    Inputs are mixed exactly as ``MixUp`` (one lambda per batch, weighting sample i).
    With ``n_i`` / ``n_j`` the class counts of sample i and its partner j, the label weight is
    ``0`` (all j's label) if ``n_i / n_j >= kappa`` and ``lam < tau``; else ``1`` (all i's label)
    if ``n_i / n_j <= 1 / kappa`` and ``1 - lam < tau``; else ``lam``. The first rule wins when
    both hold (possible only for ``kappa == 1`` and ``tau > 0.5``).

    Args:
        alpha: Beta concentration, > 0.
        num_classes: number of classes C.
        class_counts: ``num_classes`` positive counts (or effective numbers) per class.
        kappa: imbalance ratio, >= 1, from which the label goes to the minority sample.
        tau: lambda threshold in ``[0, 1]``; 0 disables relabelling (plain mixup).
        generator: CPU ``torch.Generator``; None uses the global torch RNG.

    Traps: targets must be class indices (the rule needs each sample's class count); soft
    targets raise ``TypeError``.
    """

    def __init__(
        self,
        alpha: float,
        num_classes: int,
        class_counts: Sequence[float] | Tensor | np.ndarray,
        kappa: float = 3.0,
        tau: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(alpha, num_classes, per_sample=False, generator=generator)
        self.class_counts = _check_counts(class_counts, self.num_classes)
        self.kappa = check_real("kappa", kappa, 1.0)
        self.tau = check_real("tau", tau, 0.0, 1.0)

    def _check_call(self, inputs: Tensor, targets: Tensor) -> Tensor:
        if isinstance(targets, Tensor) and targets.is_floating_point():
            raise TypeError(
                "Remix needs class-index targets of shape (B,) to look up class counts, "
                f"but got floating targets of shape {tuple(targets.shape)}"
            )
        return super()._check_call(inputs, targets)

    def _label_lam(self, targets: Tensor, lam: Tensor, perm: Tensor) -> Tensor:
        n_i = self.class_counts[targets.detach().long().cpu()]
        n_j = n_i[perm]
        to_j = (n_i / n_j >= self.kappa) & (lam < self.tau)
        to_i = (n_j / n_i >= self.kappa) & (1 - lam < self.tau)
        return torch.where(to_j, 0.0, torch.where(to_i, 1.0, lam))

    def __repr__(self) -> str:
        return (
            f"Remix(alpha={self.alpha}, num_classes={self.num_classes}, "
            f"kappa={self.kappa}, tau={self.tau})"
        )


class RandomChoice:
    """Apply one of several batch transforms per call, chosen with probabilities ``p``.

    Args:
        transforms: non-empty sequence of callables ``(inputs, targets) -> (inputs, targets)``.
        p: probabilities, one per transform, non-negative and summing to 1; None is uniform.
        generator: CPU ``torch.Generator`` for the choice only (each transform keeps its own);
            None uses the global torch RNG.

    Trap: every choice should return targets of the same form (all soft), or the loss breaks
    on some batches.
    """

    def __init__(
        self,
        transforms: Sequence[BatchTransform],
        p: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        transforms = list(transforms)
        if not transforms:
            raise ValueError("transforms should be a non-empty sequence of callables, but got none")
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"transforms[{i}] should be callable, but got {type(t).__name__}")
        if p is None:
            p = [1.0 / len(transforms)] * len(transforms)
        p = p.tolist() if isinstance(p, (Tensor, np.ndarray)) else list(p)
        if len(p) != len(transforms):
            raise ValueError(
                f"p should have one probability per transform ({len(transforms)}), "
                f"but got {len(p)} probabilities"
            )
        p = [check_real(f"p[{i}]", v, 0.0) for i, v in enumerate(p)]
        if abs(sum(p) - 1.0) > 1e-6:
            raise ValueError(f"p should sum to 1, but got p={p!r} (sum {sum(p)})")
        self.transforms = transforms
        self.p = p
        total = sum(self.p)
        self._cum = list(np.cumsum(self.p) / total)
        self._cum[-1] = 1.0
        self.generator = _check_generator(generator)

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Replace the generator of the choice and of every child with a ``set_generator``.

        Children get independent streams: each gets its own generator seeded from ``generator``.
        """
        self.generator = _check_generator(generator)
        for t in self.transforms:
            if hasattr(t, "set_generator"):
                child = None
                if generator is not None:
                    seed = int(torch.randint(2**63 - 1, (1,), generator=generator).item())
                    child = torch.Generator().manual_seed(seed)
                t.set_generator(child)

    def __call__(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Apply the chosen transform to ``(inputs, targets)``."""
        u = torch.rand((), generator=self.generator, dtype=torch.float64).item()
        return self.transforms[bisect.bisect_right(self._cum, u)](inputs, targets)

    def __repr__(self) -> str:
        return f"RandomChoice({self.transforms!r}, p={self.p})"


class MixUpCollate:
    """A DataLoader ``collate_fn``: ``base_collate`` the samples, then apply ``transform``.

    Args:
        transform: batch transform, e.g. ``MixUp`` or ``RandomChoice``.
        base_collate: turns the list of samples into ``(inputs, targets)``.

    Trap: with ``num_workers > 0`` each worker gets a pickled copy of ``transform`` including
    its generator state, so workers repeat each other's lambdas. Use ``generator=None`` there
    (the DataLoader seeds each worker's torch RNG), or mix in the training loop instead.
    """

    def __init__(
        self,
        transform: BatchTransform,
        base_collate: Callable[[list[Any]], Any] = default_collate,
    ) -> None:
        if not callable(transform):
            raise TypeError(f"transform should be callable, but got {type(transform).__name__}")
        if not callable(base_collate):
            raise TypeError(
                f"base_collate should be callable, but got {type(base_collate).__name__}"
            )
        self.transform = transform
        self.base_collate = base_collate

    def __call__(self, batch: list[Any]) -> tuple[Tensor, Tensor]:
        """Collate ``batch`` to ``(inputs, targets)`` and transform it."""
        collated = self.base_collate(batch)
        if not isinstance(collated, (tuple, list)) or len(collated) != 2:
            raise TypeError(
                "base_collate should return (inputs, targets), but got "
                f"{type(collated).__name__}"
                + (f" of length {len(collated)}" if isinstance(collated, (tuple, list)) else "")
            )
        return self.transform(collated[0], collated[1])

    def __repr__(self) -> str:
        return f"MixUpCollate({self.transform!r})"

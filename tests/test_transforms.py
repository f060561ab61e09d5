"""Tests for distsampler.transforms: MixUp, CutMix, Remix, RandomChoice and MixUpCollate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.functional import one_hot
from torch.utils.data import DataLoader, TensorDataset

from distsampler import transforms
from distsampler.transforms import (
    CutMix,
    MixParams,
    MixUp,
    MixUpCollate,
    RandomChoice,
    Remix,
    seeded_generator,
)

B, C, H, W, K = 8, 3, 6, 5, 4  # batch, channels, height, width, classes
COUNTS = [1000, 300, 100, 10]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(1000 + seed)
    return torch.randn(B, C, H, W, generator=g, dtype=dtype), torch.randint(K, (B,), generator=g)


# name -> factory(generator); every transform under test, built the same way
FACTORIES = {
    "mixup": lambda g: MixUp(alpha=0.4, num_classes=K, generator=g),
    "mixup_per_sample": lambda g: MixUp(alpha=0.4, num_classes=K, per_sample=True, generator=g),
    "cutmix": lambda g: CutMix(alpha=1.0, num_classes=K, generator=g),
    "remix": lambda g: Remix(alpha=1.0, num_classes=K, class_counts=COUNTS, generator=g),
    "choice": lambda g: RandomChoice(
        [MixUp(alpha=1.0, num_classes=K, generator=gen(1)), CutMix(1.0, K, generator=gen(2))],
        p=[0.5, 0.5],
        generator=g,
    ),
}
ALL = list(FACTORIES)
SOFT_OK = ["mixup", "mixup_per_sample", "cutmix", "choice"]  # Remix needs class indices


def soft(targets: torch.Tensor) -> torch.Tensor:
    return one_hot(targets, K).float() * 0.9 + 0.1 / K


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize(
    "name, soft_targets",
    [(n, False) for n in ALL] + [(n, True) for n in SOFT_OK],  # Remix rejects soft targets
)
@pytest.mark.parametrize("alpha_scale", [1.0, 1e-3], ids=["alpha", "tiny_alpha"])
def test_output_is_a_valid_soft_target(name, soft_targets, alpha_scale):
    t = FACTORIES[name](gen(3))
    for m in getattr(t, "transforms", [t]):
        m.alpha *= alpha_scale
    x, y = batch()
    out_x, out_y = t(x, soft(y) if soft_targets else y)
    assert out_x.shape == x.shape and out_x.dtype == x.dtype
    assert out_y.shape == (B, K) and out_y.dtype == torch.float32
    assert torch.isfinite(out_x).all() and torch.isfinite(out_y).all()
    torch.testing.assert_close(out_y.sum(1), torch.ones(B))
    assert (out_y >= 0).all()
    logits = torch.randn(B, K, requires_grad=True)
    loss = torch.nn.CrossEntropyLoss()(logits, out_y)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None


ROLL = torch.roll(torch.arange(B), 1)  # a derangement: every sample gets another partner
IDENTITY_PARAMS = {
    "mixup": MixParams(lam=1.0, perm=ROLL),
    "mixup_per_sample": MixParams(lam=torch.ones(B), perm=ROLL),
    "remix": MixParams(lam=1.0, perm=ROLL),
    "cutmix": MixParams(lam=1.0, perm=ROLL, box=(2, 3, 2, 3)),  # empty box
}


@pytest.mark.parametrize("name", list(IDENTITY_PARAMS))
def test_forced_lambda_one_leaves_batch_unchanged(name):
    x, y = batch()
    out_x, out_y = FACTORIES[name](gen())(x, y, params=IDENTITY_PARAMS[name])
    torch.testing.assert_close(out_x, x, rtol=0, atol=0)
    torch.testing.assert_close(out_y, one_hot(y, K).float(), rtol=0, atol=0)


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("soft_targets", [False, True], ids=["index", "soft"])
def test_mixup_matches_formula(per_sample, soft_targets):
    t = MixUp(alpha=1.0, num_classes=K, per_sample=per_sample, generator=gen(5))
    x, y = batch()
    targets = soft(y) if soft_targets else y
    params = t.sample_params(x)
    assert sorted(params.perm.tolist()) == list(range(B))  # a permutation
    out_x, out_y = t(x, targets, params=params)
    lam = params.lam.float()
    expected_y = soft(y) if soft_targets else one_hot(y, K).float()
    torch.testing.assert_close(
        out_x, lam.view(B, 1, 1, 1) * x + (1 - lam.view(B, 1, 1, 1)) * x[params.perm]
    )
    torch.testing.assert_close(
        out_y, lam.view(B, 1) * expected_y + (1 - lam.view(B, 1)) * expected_y[params.perm]
    )
    # the same generator state replays the same call
    torch.testing.assert_close(MixUp(1.0, K, per_sample, gen(5))(x, targets), (out_x, out_y))


@pytest.mark.parametrize("per_sample, n_distinct", [(False, 1), (True, B)])
def test_lambda_per_batch_or_per_sample(per_sample, n_distinct):
    t = MixUp(alpha=1.0, num_classes=K, per_sample=per_sample, generator=gen(7))
    lam = t.sample_params(batch()[0]).lam
    assert lam.shape == (B,) and ((lam >= 0) & (lam <= 1)).all()
    assert len(set(lam.tolist())) == n_distinct


@pytest.mark.parametrize("seed", range(12))
def test_cutmix_label_weight_is_kept_area(seed):
    # unique pixel values and distinct labels: a pixel equal to the original was kept
    x = torch.arange(B * C * H * W, dtype=torch.float32).view(B, C, H, W)
    y = torch.arange(B) % K
    t = CutMix(alpha=1.0, num_classes=K, generator=gen(seed))
    params = t.sample_params(x)
    x0, y0, x1, y1 = params.box
    assert 0 <= x0 <= x1 <= W and 0 <= y0 <= y1 <= H
    out_x, out_y = t(x, y, params=params)
    moved = params.perm != torch.arange(B)
    kept = (out_x == x).all(dim=1).float().mean(dim=(1, 2))  # per image, over pixels
    torch.testing.assert_close(
        kept[moved], torch.full((int(moved.sum()),), 1 - (x1 - x0) * (y1 - y0) / (H * W))
    )
    torch.testing.assert_close(params.lam.float()[moved], kept[moved])
    differ = moved & (y != y[params.perm])
    torch.testing.assert_close(out_y[differ, y[differ]], kept[differ])


def test_cutmix_clips_box_at_the_border_and_keeps_dtype():
    x = torch.randint(0, 255, (B, C, H, W), dtype=torch.uint8)
    y = torch.arange(B) % K
    params = MixParams(lam=0.0, perm=ROLL, box=(3, 4, W, H))  # bottom-right corner, clipped
    out_x, out_y = CutMix(1.0, K)(x, y, params=params)
    assert out_x.dtype == torch.uint8
    torch.testing.assert_close(out_x[:, :, 4:, 3:], x[ROLL][:, :, 4:, 3:])
    torch.testing.assert_close(out_x[:, :, :4], x[:, :, :4])
    kept = 1 - (W - 3) * (H - 4) / (H * W)
    torch.testing.assert_close(out_y.max(1).values, torch.full((B,), max(kept, 1 - kept)))


# --------------------------------------------------------------------------- Remix rule

# (n_i, n_j, lam, kappa, tau, expected label weight of sample i)
REMIX_CASES = [
    pytest.param(300, 100, 0.3, 3.0, 0.5, 0.0, id="i_majority_ratio_eq_kappa_lam_lt_tau->0"),
    pytest.param(1000, 10, 0.49, 3.0, 0.5, 0.0, id="i_majority_lam_lt_tau->0"),
    pytest.param(300, 100, 0.5, 3.0, 0.5, 0.5, id="i_majority_lam_eq_tau->lam"),
    pytest.param(100, 300, 0.7, 3.0, 0.5, 1.0, id="i_minority_1-lam_lt_tau->1"),
    pytest.param(100, 300, 0.4, 3.0, 0.5, 0.4, id="i_minority_1-lam_ge_tau->lam"),
    pytest.param(200, 100, 0.1, 3.0, 0.5, 0.1, id="ratio_below_kappa->lam"),
    pytest.param(300, 100, 0.3, 3.0, 0.0, 0.3, id="tau_0_is_mixup->lam"),
    pytest.param(100, 100, 0.5, 1.0, 0.8, 0.0, id="kappa_1_both_rules_first_wins->0"),
]


def remix_rule(n_i: float, n_j: float, lam: float, kappa: float, tau: float) -> float:
    """Scalar reference of the paper's label rule (label weight of sample i)."""
    if n_i / n_j >= kappa and lam < tau:
        return 0.0
    if n_i / n_j <= 1 / kappa and 1 - lam < tau:
        return 1.0
    return lam


@pytest.mark.parametrize("n_i, n_j, lam, kappa, tau, expected", REMIX_CASES)
def test_remix_label_rule(n_i, n_j, lam, kappa, tau, expected):
    x = torch.tensor([[1.0, 2.0], [10.0, 20.0]])
    y = torch.tensor([0, 1])
    t = Remix(alpha=1.0, num_classes=2, class_counts=[n_i, n_j], kappa=kappa, tau=tau)
    out_x, out_y = t(x, y, params=MixParams(lam=lam, perm=torch.tensor([1, 0])))
    torch.testing.assert_close(out_x[0], lam * x[0] + (1 - lam) * x[1])  # inputs: plain lam
    assert remix_rule(n_i, n_j, lam, kappa, tau) == expected
    torch.testing.assert_close(out_y[0], torch.tensor([expected, 1 - expected]))
    # sample 1 keeps weight lam on itself with the counts swapped: check it against the rule
    e1 = remix_rule(n_j, n_i, lam, kappa, tau)
    torch.testing.assert_close(out_y[1], torch.tensor([1 - e1, e1]))


# --------------------------------------------------------------------------- randomness


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_output_different_seed_differs(name):
    x, y = batch()
    a = FACTORIES[name](gen(11))
    b = FACTORIES[name](gen(11))
    c = FACTORIES[name](gen(12))
    for _ in range(3):  # repeated calls stay in lockstep
        out_a, out_b = a(x, y), b(x, y)
        torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    assert any(not torch.equal(a(x, y)[0], c(x, y)[0]) for _ in range(3))


@pytest.mark.parametrize("name", ALL)
def test_generator_given_global_rngs_untouched(name):
    x, y = batch()
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()  # noqa: NPY002
    FACTORIES[name](gen(4))(x, y)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002


def test_no_generator_follows_global_torch_seed():
    x, y = batch()
    torch.manual_seed(123)
    first = MixUp(1.0, K)(x, y)
    torch.manual_seed(123)
    torch.testing.assert_close(MixUp(1.0, K)(x, y), first)


def test_seeded_generator_keys_by_tuple():
    def draw(**kw):
        return torch.rand(4, generator=seeded_generator(**kw)).tolist()

    assert draw(seed=1, rank=0, epoch=3) == draw(seed=1, rank=0, epoch=3)
    # seed + epoch would collide here; the tuple does not
    assert draw(seed=1, epoch=0) != draw(seed=0, epoch=1)
    assert draw(seed=0, rank=1) != draw(seed=0, epoch=1)


def test_random_choice_set_generator_reseeds_children_reproducibly():
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        t = FACTORIES["choice"](None)
        t.set_generator(seeded_generator(5, rank=1, epoch=2))
        assert all(m.generator is not None for m in t.transforms)
        return t(*batch())

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


@pytest.mark.parametrize("p, allowed", [([0.0, 1.0, 0.0], {1}), ([0.5, 0.0, 0.5], {0, 2})])
def test_random_choice_respects_probabilities(p, allowed):
    picks = []
    t = RandomChoice([lambda x, y, i=i: picks.append(i) or (x, y) for i in range(3)], p, gen(9))
    for _ in range(400):
        t(None, None)
    assert set(picks) == allowed
    if len(allowed) == 2:
        assert 150 < picks.count(0) < 250


# --------------------------------------------------------------------------- validation


def case(call, exc, match, id):
    return pytest.param(call, exc, match, id=id)


# Rule: wrong type -> TypeError, wrong value -> ValueError, in torch's wording.
ERRORS = [
    # alpha's lower end is open: 0 is refused
    case(
        lambda: MixUp(0, K),
        ValueError,
        r"alpha should be in \(0, inf\), but got alpha=0$",
        "alpha_0",
    ),
    # a negative alpha, through CutMix's own check
    case(
        lambda: CutMix(-1, K),
        ValueError,
        r"alpha should be in \(0, inf\), but got alpha=-1$",
        "alpha_neg",
    ),
    # infinity is not a Beta concentration
    case(lambda: MixUp(float("inf"), K), ValueError, r"but got alpha=inf$", "alpha_inf"),
    # NaN fails every comparison, so only the finiteness check catches it
    case(lambda: MixUp(float("nan"), K), ValueError, r"but got alpha=nan$", "alpha_nan"),
    # True is an int to Python, never a number to a user
    case(
        lambda: MixUp(True, K),
        TypeError,
        r"alpha should be a real number, but got alpha=True",
        "alpha_bool",
    ),
    # a numeric string is not converted
    case(lambda: CutMix("1", K), TypeError, r"alpha should be a real number", "alpha_str"),
    # zero classes
    case(
        lambda: MixUp(1.0, 0),
        ValueError,
        r"num_classes should be a positive integer, but got num_classes=0",
        "classes_0",
    ),
    # a bool count of classes
    case(
        lambda: CutMix(1.0, True),
        TypeError,
        r"num_classes should be an integer, but got num_classes=True",
        "classes_bool",
    ),
    # an integral float is still a float
    case(
        lambda: MixUp(1.0, 4.0),
        TypeError,
        r"num_classes should be an integer, but got num_classes=4.0",
        "classes_float",
    ),
    # 1 is not a bool
    case(
        lambda: MixUp(1.0, K, per_sample=1),
        TypeError,
        r"per_sample should be a boolean value, but got per_sample=1",
        "per_sample_int",
    ),
    # a seed is not a Generator
    case(
        lambda: MixUp(1.0, K, generator=0),
        TypeError,
        r"generator should be a torch.Generator or None",
        "generator_int",
    ),
    # fewer counts than classes
    case(
        lambda: Remix(1.0, K, [1, 2]),
        ValueError,
        r"class_counts should have length num_classes=4, but got length 2",
        "counts_short",
    ),
    # a zero count would divide by zero in the ratio
    case(
        lambda: Remix(1.0, K, [1, 2, 0, 4]),
        ValueError,
        r"class_counts\[2\] should be in \(0, inf\), but got class_counts\[2\]=0$",
        "counts_zero",
    ),
    # NaN inside a tensor is reported by index
    case(
        lambda: Remix(1.0, K, torch.tensor([1.0, float("nan"), 2, 3])),
        ValueError,
        r"class_counts\[1\]=nan$",
        "counts_nan_tensor",
    ),
    # a bool entry is a wrong type, not a count of 1
    case(
        lambda: Remix(1.0, K, [1, 2, True, 4]),
        TypeError,
        r"class_counts\[2\] should be a real number, but got class_counts\[2\]=True",
        "counts_bool",
    ),
    # a 2-D array is not one count per class
    case(
        lambda: Remix(1.0, K, np.ones((2, 2))),
        ValueError,
        r"class_counts should be one-dimensional, but got shape \(2, 2\)",
        "counts_2d",
    ),
    # a scalar is not a sequence of counts
    case(
        lambda: Remix(1.0, K, 10),
        TypeError,
        r"class_counts should be a sequence, array or tensor of numbers, but got int",
        "counts_scalar",
    ),
    # kappa below 1 would relabel towards the majority
    case(
        lambda: Remix(1.0, K, COUNTS, kappa=0.5),
        ValueError,
        r"kappa should be in \[1, inf\), but got kappa=0.5$",
        "kappa_lt_1",
    ),
    # tau above 1 is not a lambda threshold
    case(
        lambda: Remix(1.0, K, COUNTS, tau=1.5),
        ValueError,
        r"tau should be in \[0, 1\], but got tau=1.5$",
        "tau_gt_1",
    ),
    # a numeric string tau is not converted
    case(
        lambda: Remix(1.0, K, COUNTS, tau="0.5"),
        TypeError,
        r"tau should be a real number",
        "tau_str",
    ),
    # nothing to choose from
    case(
        lambda: RandomChoice([]),
        ValueError,
        r"transforms should be a non-empty sequence of callables",
        "choice_empty",
    ),
    # a non-callable choice, named by index
    case(
        lambda: RandomChoice([MixUp(1.0, K), 3]),
        TypeError,
        r"transforms\[1\] should be callable, but got int",
        "choice_not_callable",
    ),
    # one probability short
    case(
        lambda: RandomChoice([MixUp(1.0, K)] * 2, p=[0.5]),
        ValueError,
        r"one probability per transform \(2\), but got 1",
        "p_length",
    ),
    # a negative probability, even if the sum is 1
    case(
        lambda: RandomChoice([MixUp(1.0, K)] * 2, p=[1.5, -0.5]),
        ValueError,
        r"p\[1\] should be in \[0, inf\), but got p\[1\]=-0.5$",
        "p_negative",
    ),
    # None is not a probability
    case(
        lambda: RandomChoice([MixUp(1.0, K)] * 2, p=[0.5, None]),
        TypeError,
        r"p\[1\] should be a real number",
        "p_none",
    ),
    # probabilities that do not sum to 1
    case(
        lambda: RandomChoice([MixUp(1.0, K)] * 2, p=[0.5, 0.6]),
        ValueError,
        r"p should sum to 1",
        "p_sum",
    ),
    # MixUpCollate needs a callable transform
    case(
        lambda: MixUpCollate(3),
        TypeError,
        r"transform should be callable, but got int",
        "collate_not_callable",
    ),
    # a negative seed
    case(
        lambda: seeded_generator(-1),
        ValueError,
        r"seed should be a non-negative integer, but got seed=-1",
        "seed_neg",
    ),
    # a bool rank
    case(
        lambda: seeded_generator(0, rank=True),
        TypeError,
        r"rank should be an integer, but got rank=True",
        "rank_bool",
    ),
    # class index == num_classes: the open upper end
    case(
        lambda: MixUp(1.0, K)(batch()[0], torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])),
        ValueError,
        r"targets should be class indices in \[0, num_classes=4\), but got a target 4",
        "target_eq_classes",
    ),
    # a negative class index
    case(
        lambda: MixUp(1.0, K)(batch()[0], torch.full((B,), -1)),
        ValueError,
        r"but got a target -1",
        "target_neg",
    ),
    # one target short of the batch
    case(
        lambda: MixUp(1.0, K)(batch()[0], torch.zeros(B - 1, dtype=torch.long)),
        ValueError,
        r"same batch size, but got inputs batch size 8 and targets shape \(7,\)",
        "target_batch",
    ),
    # soft targets one class too wide
    case(
        lambda: MixUp(1.0, K)(batch()[0], torch.rand(B, K + 1)),
        ValueError,
        r"soft targets should have shape \(B, num_classes=4\), but got shape \(8, 5\)",
        "soft_width",
    ),
    # 1-D float targets are neither indices nor soft rows
    case(
        lambda: MixUp(1.0, K)(batch()[0], torch.rand(B)),
        ValueError,
        r"targets should be class indices \(B,\) of an integer dtype",
        "target_float_1d",
    ),
    # uint8 inputs cannot be blended
    case(
        lambda: MixUp(1.0, K)(batch()[0].to(torch.uint8), batch()[1]),
        TypeError,
        r"inputs.dtype=torch.uint8",
        "inputs_uint8",
    ),
    # CutMix needs (B, C, H, W)
    case(
        lambda: CutMix(1.0, K)(torch.rand(B, H, W), batch()[1]),
        ValueError,
        r"CutMix inputs should be images of shape \(B, C, H, W\), but got shape \(8, 6, 5\)",
        "cutmix_3d",
    ),
    # Remix needs class indices to look up counts
    case(
        lambda: Remix(1.0, K, COUNTS)(batch()[0], soft(batch()[1])),
        TypeError,
        r"Remix needs class-index targets",
        "remix_soft",
    ),
    # a forced lam above 1, reported by index rather than as a tensor
    case(
        lambda: MixUp(1.0, K)(*batch(), params=MixParams(lam=torch.full((B,), 1.5), perm=ROLL)),
        ValueError,
        r"params.lam should lie in \[0, 1\], but got lam\[0\]=1.5$",
        "lam_gt_1",
    ),
    # a forced perm of the wrong length
    case(
        lambda: MixUp(1.0, K)(*batch(), params=MixParams(lam=0.5, perm=ROLL[:3])),
        ValueError,
        r"params.perm should be integer indices of shape \(8,\)",
        "perm_shape",
    ),
    # a forced perm index == batch size
    case(
        lambda: MixUp(1.0, K)(*batch(), params=MixParams(lam=0.5, perm=ROLL + 1)),
        ValueError,
        r"params.perm should lie in \[0, 8\), but got perm\[0\]=8$",
        "perm_range",
    ),
    # a forced box past the right edge
    case(
        lambda: CutMix(1.0, K)(
            *batch(), params=MixParams(lam=0.5, perm=ROLL, box=(0, 0, W + 1, H))
        ),
        ValueError,
        r"params.box should satisfy",
        "box_out",
    ),
]


@pytest.mark.parametrize("call, exc, match", ERRORS)
def test_bad_input_raises_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_validated_parameters_are_plain_floats():
    t = Remix(np.float32(0.5), np.int64(K), np.array(COUNTS), kappa=2, tau=np.float64(0.25))
    assert type(t.alpha) is float and type(t.num_classes) is int
    assert type(t.kappa) is float and type(t.tau) is float
    assert t.class_counts.dtype == torch.float64 and t.class_counts.tolist() == COUNTS


# --------------------------------------------------------------------------- MixUpCollate


def test_mixup_collate_in_a_dataloader():
    x, y = torch.randn(10, 3, 4, 4), torch.arange(10) % K
    collate = MixUpCollate(MixUp(alpha=1.0, num_classes=K, generator=gen(2)))
    loader = DataLoader(TensorDataset(x, y), batch_size=4, collate_fn=collate)
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    for bx, by in batches:
        assert bx.shape[1:] == (3, 4, 4) and by.shape == (bx.shape[0], K)
        torch.testing.assert_close(by.sum(1), torch.ones(bx.shape[0]))
        torch.nn.CrossEntropyLoss()(torch.randn(bx.shape[0], K), by)


def test_mixup_collate_rejects_non_pair_collation():
    collate = MixUpCollate(MixUp(1.0, K), base_collate=lambda b: torch.stack(b))
    with pytest.raises(TypeError, match="base_collate should return \\(inputs, targets\\)"):
        collate([torch.zeros(2), torch.zeros(2)])


def test_collate_detection_still_importable_from_transforms():
    from distsampler import collate

    assert transforms.collate_detection is collate.collate_detection
    assert "collate_detection" in transforms.__all__


# --------------------------------------------------------------------------- devices and dtypes


def test_index_targets_follow_input_float_dtype():
    x, y = batch(dtype=torch.float64)
    out_x, out_y = MixUp(1.0, K, generator=gen())(x, y)
    assert out_x.dtype == out_y.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL)
def test_cuda_tensors_stay_on_device_and_match_cpu(name):
    x, y = batch()
    cpu = FACTORIES[name](gen(8))(x, y)
    dev = FACTORIES[name](gen(8))(x.cuda(), y.cuda())
    assert dev[0].is_cuda and dev[1].is_cuda
    torch.testing.assert_close((dev[0].cpu(), dev[1].cpu()), cpu)

"""The older deep_learning tool's losses and evals, each against a computation by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from dlscaffold import losses
from dlscaffold.losses import EVALS, LOSSES, members_fn

ENSEMBLES = [
    "L1Ensemble",
    "MultinomialKLEnsemble",
    "MultinomialAccuracyEnsemble",
    "MultinomialEntropyEnsemble",
    "ContinuousErrorMagEnsemble",
    "ContinuousAccuracyEnsemble",
]


def _softmax_by_hand(logits: torch.Tensor) -> torch.Tensor:
    return logits.exp() / logits.exp().sum(dim=-1, keepdim=True)


def test_multinomial_kl_is_kl_of_the_second_input_from_the_first() -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, generator=generator), 2 * torch.randn(5, 4, generator=generator)
    p, q = _softmax_by_hand(a), _softmax_by_hand(b)
    by_hand = (q * (q.log() - p.log())).sum(dim=1)  # KL(b || a), the older tool's direction
    value = LOSSES["MultinomialKL"](a, b)
    assert value.shape == (5,)
    torch.testing.assert_close(value, by_hand, atol=1e-6, rtol=1e-5)
    reference = kl_divergence(Categorical(logits=b), Categorical(logits=a))
    assert (value - reference).abs().max().item() < 1e-6
    other_way = (p * (p.log() - q.log())).sum(dim=1)
    assert (value - other_way).abs().max().item() > 1e-2  # the direction matters on these inputs


def test_multinomial_kl_stays_finite_where_a_probability_underflows() -> None:
    a, b = torch.tensor([[0.0, -200.0]]), torch.tensor([[0.0, 0.0]])  # softmax(a)[1] == 0 in float32
    value = LOSSES["MultinomialKL"](a, b)
    assert torch.isfinite(value).all() and value.item() == pytest.approx(0.5 * 200 - math.log(2), rel=1e-4)


def test_multinomial_kl_ensemble_sums_each_members_kl_from_the_target() -> None:
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 3, 4, generator=generator), torch.randn(2, 4, generator=generator)  # (B, E, K), (B, K)
    q = _softmax_by_hand(b)
    per_member = torch.stack([(q * (q.log() - _softmax_by_hand(a[:, e]).log())).sum(dim=1) for e in range(3)], dim=1)
    torch.testing.assert_close(members_fn(LOSSES["MultinomialKLEnsemble"])(a, b), per_member)
    torch.testing.assert_close(LOSSES["MultinomialKLEnsemble"](a, b), per_member.sum(dim=1))


def test_l2_is_the_mean_squared_error() -> None:
    prediction, target = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 4.0], [3.0, 4.0]])
    assert LOSSES["L2"](prediction, target).tolist() == [(0 + 4) / 2, (9 + 16) / 2]


def test_l1_ensemble_sums_each_members_l1() -> None:
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0]])  # (B=2, D=2)
    prediction = torch.tensor(
        [
            [[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]],  # (B=2, E=3, D=2)
            [[1.0, 1.0], [1.0, 3.0], [0.0, -1.0]],
        ]
    )
    members = [[1.0, 1.0, 0.0], [0.0, 1.0, 1.5]]  # mean |prediction[:, e] - target| over D
    assert members_fn(LOSSES["L1Ensemble"])(prediction, target).tolist() == members
    assert LOSSES["L1Ensemble"](prediction, target).tolist() == [2.0, 2.5]


def test_l1_ensemble_gives_each_member_the_gradient_of_its_own_l1() -> None:
    prediction = torch.tensor([[[3.0], [-3.0]]], requires_grad=True)  # (B=1, E=2, D=1)
    LOSSES["L1Ensemble"](prediction, torch.zeros(1, 1)).sum().backward()
    assert prediction.grad.view(-1).tolist() == [1.0, -1.0]


def test_multinomial_nll_with_softmax_and_on_log_probabilities() -> None:
    logits, labels = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]), torch.tensor([0, 1])
    by_hand = [-math.log(math.exp(2) / (math.exp(2) + 2)), -math.log(math.e / (1 + math.e + math.exp(3)))]
    assert LOSSES["MultinomialNLLwSoftmax"](logits, labels).tolist() == pytest.approx(by_hand)
    log_probs = torch.tensor([[math.log(0.5), math.log(0.25), math.log(0.25)]] * 2)
    # the older tool's MultinomialNLL took log-probabilities: -log_probs[class_idx]
    assert LOSSES["MultinomialNLL"](log_probs, labels).tolist() == pytest.approx([math.log(2), math.log(4)])


def test_continuous_accuracy_ensemble_scores_the_mean_and_each_member() -> None:
    prediction = torch.tensor([[[1.0, 4.0], [1.0, 3.0]]])  # (B=1, E=2, D=2); mean (1.0, 3.5)
    target = torch.tensor([[1.0, 4.0]])
    # within 10% of |target|: mean -> (yes, 0.5 > 0.4 no); member 0 -> (yes, yes); member 1 -> (yes, 1 > 0.4 no)
    assert EVALS["ContinuousAccuracyEnsemble"](prediction, target).tolist() == [0.5]
    assert members_fn(EVALS["ContinuousAccuracyEnsemble"])(prediction, target).tolist() == [[1.0, 0.5]]


def test_error_magnitude_ensemble_members() -> None:
    prediction = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])  # (B=1, E=2, D=2)
    target = torch.zeros(1, 2)
    assert members_fn(EVALS["ContinuousErrorMagEnsemble"])(prediction, target).tolist() == [[5.0, 1.0]]
    assert EVALS["ContinuousErrorMagEnsemble"](prediction, target).tolist() == pytest.approx([math.hypot(1.5, 2.5)])


def test_multinomial_ensemble_evals_members() -> None:
    logits = torch.tensor([[[10.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 5.0]]])  # (B=2, E=2, K=2)
    labels = torch.tensor([0, 1])
    assert members_fn(EVALS["MultinomialAccuracyEnsemble"])(logits, labels).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    entropies = members_fn(EVALS["MultinomialEntropyEnsemble"])(logits)  # (B, E)
    p = 1 / (1 + math.exp(5))  # sample 1, member 1: its probability of class 0
    assert entropies.shape == (2, 2)
    by_hand = [math.log(2), -(p * math.log(p) + (1 - p) * math.log(1 - p))]
    assert entropies[1].tolist() == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize("name", ENSEMBLES)
def test_every_ensemble_built_in_gives_members_of_shape_b_e(name: str) -> None:
    fn = LOSSES.get(name) or EVALS[name]
    spec = losses.spec_of(fn)
    example = {
        "prediction": torch.randn(4, 3, 2),
        "target": torch.randn(4, 2),
        "class_logits": torch.randn(4, 3, 5),
        "target_logits": torch.randn(4, 5),
        "class_idx": torch.tensor([0, 1, 4, 2]),
    }
    args = [example[i.name] for i in spec.inputs]
    assert members_fn(fn)(*args).shape == (4, 3)
    assert fn(*args).shape == (4,)


def test_members_fn_is_none_for_the_rest() -> None:
    rest = [fn for name, fn in {**LOSSES, **EVALS}.items() if name not in ENSEMBLES]
    assert rest and all(members_fn(fn) is None for fn in rest)
    assert members_fn(lambda a, b: a) is None

"""Built-in losses and evals compute what their names say; the registry guards its names."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dlscaffold import losses
from dlscaffold.errors import UserError
from dlscaffold.project.registry import Registry, build_registries


def test_design_names_are_registered() -> None:
    # the older deep_learning tool's names (its utils_sl.py and deep_learning/ registries) plus the everyday regressions
    loss_names = {
        "MultinomialNLL",
        "MultinomialNLLwSoftmax",
        "BinomialNLL",
        "MultinomialEntropy",
        "MultinomialKL",
        "MultinomialKLEnsemble",
        "GaussianNLL",
        "GaussianKL",
        "IdentityLoss",
        "MSE",
        "L2",
        "L1",
        "L1Ensemble",
        "SmoothL1",
    }
    eval_names = {
        "MultinomialAccuracy",
        "MultinomialEntropy",
        "BinomialAccuracy",
        "ContinuousAccuracy",
        "ContinuousErrorMag",
        "MultinomialAccuracyEnsemble",
        "MultinomialEntropyEnsemble",
        "ContinuousAccuracyEnsemble",
        "ContinuousErrorMagEnsemble",
    }
    assert loss_names <= set(losses.LOSSES) and eval_names <= set(losses.EVALS)


def test_per_sample_values() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 1])
    nll = losses.multinomial_nll(logits, labels)
    assert nll.shape == (2,)
    assert nll[0].item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)))
    assert losses.multinomial_accuracy(logits, labels).tolist() == [1.0, 0.0]
    assert losses.multinomial_entropy(torch.zeros(1, 4)).item() == pytest.approx(math.log(4))
    assert losses.multinomial_kl(logits, logits).abs().max().item() < 1e-6
    pred, target = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 4.0], [3.0, 4.0]])
    assert losses.mse(pred, target).tolist() == [2.0, 12.5]
    assert losses.l1(pred, target).tolist() == [1.0, 3.5]
    assert losses.continuous_error_mag(pred, target).tolist() == [2.0, 5.0]
    assert losses.continuous_accuracy(torch.tensor([[1.05, 3.0]]), torch.tensor([[1.0, 4.0]])).tolist() == [0.5]
    bce = losses.binomial_nll(torch.zeros(2, 3), torch.ones(2, 3))
    assert bce.tolist() == pytest.approx([math.log(2)] * 2)
    assert losses.binomial_accuracy(torch.tensor([[1.0, -1.0]]), torch.tensor([[1, 1]])).tolist() == [0.5]


def test_gaussian_terms_match_torch() -> None:
    mean, var, target = torch.zeros(3, 2), torch.full((3, 2), 4.0), torch.ones(3, 2)
    expected = F.gaussian_nll_loss(mean, target, var, full=True, reduction="none").sum(dim=1)
    assert torch.allclose(losses.gaussian_nll(mean, var, target), expected)
    kl = losses.gaussian_kl(mean, var, mean + 1, var)
    assert torch.allclose(kl, torch.full((3,), 2 * 0.5 * 1 / 4))


def test_ensemble_accuracy_averages_probabilities() -> None:
    # member 1 is sure of class 0, member 2 mildly prefers class 1: the average picks class 0
    logits = torch.tensor([[[10.0, 0.0], [0.0, 1.0]]])  # (B=1, E=2, K=2)
    assert losses.multinomial_accuracy_ensemble(logits, torch.tensor([0])).tolist() == [1.0]


def test_registry_clash_and_unknown_names() -> None:
    with pytest.raises(UserError, match="loss 'MSE' is already registered"):
        build_registries({"MSE": lambda a, b: a}, {})
    with pytest.raises(UserError, match=r"collides with the built-in eval dlscaffold.losses.multinomial_accuracy;"):
        build_registries({}, {"MultinomialAccuracy": lambda a, b: a})
    registry = Registry("eval", {"Accuracy": lambda a, b: a})
    with pytest.raises(UserError, match=r"unknown eval 'Acuracy'; did you mean 'Accuracy'\? available: Accuracy"):
        registry.get("Acuracy")
    with pytest.raises(UserError, match="expected a function"):
        registry.register("Broken", 3)

"""Built-ins declare their inputs' shapes; check_inputs names a misfit, and a built-in never broadcasts."""

from __future__ import annotations

import pytest
import torch

from dlscaffold.losses import EVALS, LOSSES, check_inputs, mse, multinomial_nll

B, K, E = 4, 5, 3


def _logits(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def _idx(*shape: int) -> torch.Tensor:
    return torch.randint(0, K, shape)


def _var(*shape: int) -> torch.Tensor:
    return torch.rand(*shape) + 0.5


# name -> (inputs that fit, inputs that do not); the misfits are ones torch would broadcast or accept
CASES: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {
    "MultinomialNLL": ([_logits(B, K), _idx(B)], [_logits(B, K), _idx(B, 1)]),
    "MultinomialNLLwSoftmax": ([_logits(B, K), _idx(B)], [_logits(B, K, 1), _idx(B)]),
    "BinomialNLL": ([_logits(B, 3), torch.rand(B, 3)], [_logits(B, 3), torch.rand(B, 1)]),
    "MultinomialEntropy": ([_logits(B, K)], [_logits(B, K, 2)]),
    "MultinomialKL": ([_logits(B, K), _logits(B, K)], [_logits(B, K), _logits(1, K)]),
    "MultinomialKLEnsemble": ([_logits(B, E, K), _logits(B, K)], [_logits(B, E, K), _logits(B, E, K)]),
    "GaussianNLL": ([_logits(B, 2), _var(B, 2), _logits(B, 2)], [_logits(B, 2), _var(B, 1), _logits(B, 2)]),
    "GaussianKL": (
        [_logits(B, 2), _var(B, 2), _logits(B, 2), _var(B, 2)],
        [_logits(B, 2), _var(B, 2), _logits(B, 2), _var(2)],
    ),
    "MSE": ([_logits(B, 2), _logits(B, 2)], [_logits(B, 1), _logits(B)]),
    "L2": ([_logits(B), _logits(B)], [_logits(B), _logits(B, 1)]),
    "L1": ([_logits(B, 2, 3), _logits(B, 2, 3)], [_logits(B, 2, 3), _logits(B, 1, 3)]),
    "L1Ensemble": ([_logits(B, E, 2), _logits(B, 2)], [_logits(B, E, 2), _logits(B, 1, 2)]),
    "SmoothL1": ([_logits(B, 2), _logits(B, 2)], [_logits(B, 2), _logits(2)]),
    "MultinomialAccuracy": ([_logits(B, K), _idx(B)], [_logits(B, K), _idx(B, 1)]),
    "BinomialAccuracy": ([_logits(B, 3), torch.randint(0, 2, (B, 3))], [_logits(B, 3), torch.randint(0, 2, (B,))]),
    "ContinuousAccuracy": ([_logits(B, 2), _logits(B, 2)], [_logits(B, 2), _logits(B, 2, 1)]),
    "ContinuousErrorMag": ([_logits(B, 2), _logits(B, 2)], [_logits(B, 1), _logits(B, 2)]),
    "MultinomialAccuracyEnsemble": ([_logits(B, E, K), _idx(B)], [_logits(B, K), _idx(B)]),
    "MultinomialEntropyEnsemble": ([_logits(B, E, K)], [_logits(B, K)]),
    "ContinuousErrorMagEnsemble": ([_logits(B, E, 2), _logits(B, 2)], [_logits(B, 2), _logits(B, 2)]),
    "ContinuousAccuracyEnsemble": ([_logits(B, E, 2), _logits(B, 2)], [_logits(B, E, 2), _logits(B, E)]),
    "IdentityLoss": ([_logits(B, 2)], []),  # any shape fits
}
BUILT_INS = {**LOSSES, **EVALS}


def test_every_built_in_has_a_case() -> None:
    assert set(CASES) == set(BUILT_INS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fitting_inputs_pass_and_give_one_value_per_sample(name: str) -> None:
    fits, _ = CASES[name]
    assert check_inputs(BUILT_INS[name], fits) is None
    assert BUILT_INS[name](*fits).shape == (B,)


@pytest.mark.parametrize("name", sorted(n for n in CASES if CASES[n][1]))
def test_misfits_are_named_with_every_shape_and_raise(name: str) -> None:
    _, misfits = CASES[name]
    message = check_inputs(BUILT_INS[name], misfits)
    assert message is not None and message.startswith("expected ") and "\n" not in message
    found = message.split("; found ", 1)[1]
    for tensor in misfits:
        assert str(tuple(tensor.shape)) in found
    with pytest.raises(ValueError) as raised:
        BUILT_INS[name](*misfits)
    assert str(raised.value) == message


def test_mse_never_broadcasts_b_1_against_b() -> None:
    prediction, target = torch.zeros(4, 1), torch.zeros(4)
    expected = "expected prediction and target of the same shape; found (4, 1) and (4,)"
    assert check_inputs(mse, [prediction, target]) == expected
    with pytest.raises(ValueError) as raised:
        mse(prediction, target)
    assert str(raised.value) == expected


def test_class_indices_shape_dtype_and_range() -> None:
    logits = torch.zeros(4, 10)
    expectation = "expected class_logits (B, K) and class_idx (B,) integers in [0, K)"
    assert check_inputs(multinomial_nll, [logits, torch.zeros(4, 1, dtype=torch.long)]) == (
        f"{expectation}; found (4, 10) and (4, 1)"
    )
    assert check_inputs(multinomial_nll, [logits, torch.zeros(4)]) == (
        f"{expectation}; found (4, 10) and (4,); class_idx is torch.float32, expected integer"
    )
    assert check_inputs(multinomial_nll, [logits, torch.tensor([0, 1, 10, 2])]) == (
        f"{expectation}; found (4, 10) and (4,); class_idx holds 10, outside [0, 10)"
    )
    negative = check_inputs(multinomial_nll, [logits, torch.tensor([0, -1, 9, 2])])
    assert negative.endswith("class_idx holds -1, outside [0, 10)")
    assert check_inputs(multinomial_nll, [logits, torch.tensor([0, 1, 9, 2], dtype=torch.int32)]) is None


def test_other_misfits() -> None:
    assert check_inputs(LOSSES["GaussianNLL"], [torch.zeros(2, 3), torch.ones(2, 1), torch.zeros(2, 3)]) == (
        "expected mean, variance and target of the same shape, variance positive; found (2, 3), (2, 1) and (2, 3)"
    )
    assert check_inputs(EVALS["MultinomialAccuracyEnsemble"], [torch.zeros(2, 3, 5), torch.zeros(2, 5)]) == (
        "expected class_logits (B, E, K) and class_idx (B,) integers in [0, K); found (2, 3, 5) and (2, 5)"
    )
    assert check_inputs(LOSSES["MSE"], [torch.zeros(2, dtype=torch.long), torch.zeros(2)]) == (
        "expected prediction and target of the same shape; found (2,) and (2,); prediction is torch.int64, "
        "expected floating point"
    )
    assert check_inputs(LOSSES["IdentityLoss"], [[1.0, 2.0]]) == "expected loss (any shape); found list"
    assert check_inputs(LOSSES["MSE"], [torch.zeros(2)]) == "expected 2 inputs (prediction and target); found 1"


def test_targets_of_any_real_dtype_fit() -> None:
    prediction = torch.zeros(3, 2)
    for dtype in (torch.long, torch.bool, torch.float64, torch.uint8):
        target = torch.zeros(3, 2, dtype=dtype)
        assert check_inputs(LOSSES["MSE"], [prediction, target]) is None
    assert check_inputs(LOSSES["BinomialNLL"], [prediction, torch.ones(3, 2, dtype=torch.bool)]) is None


def test_a_projects_own_function_is_not_checked() -> None:
    def my_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (prediction - target).pow(2).mean(dim=-1)

    assert check_inputs(my_loss, [torch.zeros(4, 1), torch.zeros(4)]) is None


def test_the_guard_reads_no_values(monkeypatch: pytest.MonkeyPatch) -> None:
    # calls during training must not sync with the device: no .item()/int() of a tensor
    def forbidden(*_: object) -> None:
        raise AssertionError("the guard read a value")

    monkeypatch.setattr(torch.Tensor, "item", forbidden)
    monkeypatch.setattr(torch.Tensor, "__int__", forbidden)
    monkeypatch.setattr(torch.Tensor, "tolist", forbidden)
    multinomial_nll(torch.zeros(4, K), torch.tensor([0, 1, 2, 3]))
    EVALS["MultinomialAccuracyEnsemble"](torch.zeros(4, E, K), torch.tensor([0, 1, 2, 3]))

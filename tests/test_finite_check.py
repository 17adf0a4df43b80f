"""The non-finite guard's test (``dlscaffold.parts.finite.FiniteCheck``): one fused kernel finds a
NaN or inf anywhere, leaves every value as it was (bit for bit), resets itself after a hit, and
falls back to the norm for tensors the kernel does not take."""

from __future__ import annotations

import torch

from dlscaffold.parts.finite import FiniteCheck


def grads() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    values = [torch.randn(33, 7, generator=generator), torch.randn(5, generator=generator), torch.zeros(())]
    values[0][0, 0] = -0.0
    values[0][0, 1] = 1e-40  # a denormal
    return values


def test_finite_values_pass_and_stay_bit_for_bit_the_same() -> None:
    check, values = FiniteCheck(), grads()
    before = [v.clone() for v in values]
    assert check(values) and check.fused
    for new, old in zip(values, before, strict=True):
        assert torch.equal(new.view(torch.int32) if new.dim() else new, old.view(torch.int32) if old.dim() else old)


def test_a_nan_or_inf_anywhere_fails_once_and_the_check_resets() -> None:
    check = FiniteCheck()
    for bad in (float("nan"), float("inf"), float("-inf")):
        for index in range(3):
            values = grads()
            values[index].view(-1)[-1] = bad
            assert not check(values), (bad, index)
            assert check(grads())  # the next finite step passes: the flag was reset


def test_tensors_the_kernel_does_not_take_are_checked_through_the_norm() -> None:
    check = FiniteCheck()
    sparse = torch.eye(4).to_sparse()
    assert check([sparse, torch.ones(3)]) and not check.fused
    assert not check([sparse, torch.tensor([1.0, float("nan")])])
    assert FiniteCheck()([])

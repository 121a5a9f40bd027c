"""``all_finite``: one reduction on the fast path, exact on every input."""

from __future__ import annotations

import pytest
import torch

from circuits.validation import all_finite


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_one_bad_element_anywhere_is_found(bad):
    x = torch.rand(3, 5, 7)
    for index in [(0, 0, 0), (2, 4, 6), (1, 2, 3)]:
        y = x.clone()
        y[index] = bad
        assert not all_finite(y)


def test_finite_tensors_pass_even_when_their_sum_overflows():
    assert all_finite(torch.rand(4, 4))
    assert all_finite(torch.full((8,), 3e38))  # the float32 sum is inf; every element is finite
    assert not all_finite(torch.tensor([float("inf"), float("-inf")]))  # the sum is NaN


def test_integers_empty_and_meta_tensors_have_nothing_to_check():
    assert all_finite(torch.arange(5))
    assert all_finite(torch.empty(0))
    assert all_finite(torch.empty(3, device="meta"))

"""The bf16-weight kernel (lmlab.models.bf16): float32 products of bf16-stored weights equal the float32
reference on the upcast weights, for every batch size path, odd sizes, with and without bias, on 1 and 2 threads."""

from __future__ import annotations

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.models import bf16


@pytest.mark.parametrize("rows", [1, 3, 8, 37])
@pytest.mark.parametrize("threads,with_bias", [(1, True), (2, False)], ids=["1-thread-bias", "2-threads-no-bias"])
@pytest.mark.parametrize("shape", [(70, 45), (9, 3), (4100, 33)], ids=str)
def test_linear_equals_the_float32_product_of_the_upcast_weights(rows, threads, with_bias, shape, monkeypatch):
    monkeypatch.setattr(bf16, "_THREAD_MIN_ELEMENTS", 0)  # small matrices split over threads too
    monkeypatch.setattr(bf16, "GEMM_BLOCK_ROWS", 1000)  # the GEMM path in several blocks
    out_features, in_features = shape
    g = torch.Generator().manual_seed(rows * 1000 + out_features)
    weight = torch.randn(out_features, in_features, generator=g).to(torch.bfloat16)
    bias = torch.randn(out_features, generator=g) if with_bias else None
    x = torch.randn(rows, in_features, generator=g)
    expected = torch.nn.functional.linear(x.double(), weight.double(), None if bias is None else bias.double())
    got = bf16.linear(x, weight, bias, threads=threads)
    assert got.dtype == torch.float32 and got.shape == (rows, out_features)
    scale = x.double().abs() @ weight.double().abs().T  # the error bound of a float32 sum scales with sum |x w|
    assert ((got.double() - expected).abs() / scale).max() < 1e-6
    assert weight.dtype == torch.bfloat16  # kept, not converted in place


def test_linear_takes_leading_dimensions_and_a_non_contiguous_weight():
    weight = torch.randn(40, 24).to(torch.bfloat16)
    x = torch.randn(2, 3, 24)
    expected = torch.nn.functional.linear(x, weight.float())
    torch.testing.assert_close(bf16.linear(x, weight), expected, atol=1e-5, rtol=1e-5)
    column_major = weight.t().contiguous().t()
    torch.testing.assert_close(bf16.linear(x, column_major), expected, atol=1e-5, rtol=1e-5)
    assert bf16.linear(torch.randn(0, 24), weight).shape == (0, 40)


def test_embedding_rows_are_the_exact_float32_values():
    weight = torch.randn(50, 12).to(torch.bfloat16)
    ids = torch.tensor([[3, 49, 0]])
    got = bf16.embedding(ids, weight)
    assert got.dtype == torch.float32 and torch.equal(got, weight.float()[ids])


def test_wrong_dtypes_are_refused():
    with pytest.raises(TypeError, match="float32 x and bfloat16 weight"):
        bf16.linear(torch.randn(1, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="features"):
        bf16.linear(torch.randn(1, 5), torch.randn(3, 4).to(torch.bfloat16))


def test_a_missing_kernel_is_a_one_line_error(monkeypatch):
    import importlib

    real = importlib.import_module

    def fail(name, *args, **kwargs):
        if name == "lmlab.models._bf16_kernels":
            raise ImportError("No module named 'lmlab.models._bf16_kernels'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(bf16, "_kernels", None)
    monkeypatch.setattr(importlib, "import_module", fail)
    with pytest.raises(LmlabError, match=r"_bf16_kernels is missing .*pip install -e \.") as info:
        bf16.linear(torch.randn(1, 4), torch.randn(3, 4).to(torch.bfloat16))
    assert "\n" not in str(info.value)

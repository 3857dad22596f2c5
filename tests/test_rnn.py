"""Recurrent cells: reference cells vs torch.nn's fused kernels, gradchecks, and single steps computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lmlab.models.rnn import (
    GRU,
    LSTM,
    RNN,
    GRUCell,
    LSTMCell,
    RecurrentStack,
    RNNCell,
    build_recurrent,
    detach_state,
    select_state,
)

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


def _grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters()}


def _loss(output: torch.Tensor, state) -> torch.Tensor:
    # weight every output and final-state element differently so a swapped gate or direction shows up
    states = state if isinstance(state, tuple) else (state,)
    total = (output * torch.linspace(-1, 1, output.numel()).view_as(output)).sum()
    for s in states:
        total = total + (s * torch.linspace(0.5, 2, s.numel()).view_as(s)).sum()
    return total


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_reference_matches_fused_outputs_and_gradients(cell: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    stack = build_recurrent(cell, 6, 8, num_layers=2, bidirectional=bidirectional, dropout=0.3)
    stack.eval()  # dropout off: the two implementations draw different masks
    x = torch.randn(3, 7, 6)
    state0 = stack.init_state(3)
    state0 = tuple(torch.randn_like(s) for s in state0) if cell == "lstm" else torch.randn_like(state0)

    results = {}
    for impl in ("fused", "reference"):
        stack.impl = impl
        stack.zero_grad()
        xi = x.clone().requires_grad_()
        out, state = stack(xi, state0)
        _loss(out, state).backward()
        results[impl] = (out.detach(), detach_state(state), _grads(stack), xi.grad.clone())

    (out_f, st_f, g_f, gx_f), (out_r, st_r, g_r, gx_r) = results["fused"], results["reference"]
    assert out_f.shape == (3, 7, 8 * (2 if bidirectional else 1))
    torch.testing.assert_close(out_r, out_f, atol=1e-5, rtol=1e-5)
    for a, b in zip(st_r if cell == "lstm" else (st_r,), st_f if cell == "lstm" else (st_f,), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert g_f.keys() == g_r.keys()
    for name in g_f:
        torch.testing.assert_close(g_r[name], g_f[name], atol=1e-5, rtol=1e-5, msg=name)
    torch.testing.assert_close(gx_r, gx_f, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_time_major_input_matches_batch_major(cell: str) -> None:
    torch.manual_seed(1)
    a = build_recurrent(cell, 4, 5, num_layers=2, batch_first=True, impl="reference")
    b = build_recurrent(cell, 4, 5, num_layers=2, batch_first=False, impl="reference")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 6, 4)
    out_a, _ = a(x)
    out_b, _ = b(x.transpose(0, 1))
    torch.testing.assert_close(out_b.transpose(0, 1), out_a)
    b.impl = "fused"
    torch.testing.assert_close(b(x.transpose(0, 1))[0].transpose(0, 1), out_a, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "cell_factory",
    [
        lambda: RNNCell(3, 4, nonlinearity="tanh"),
        lambda: RNNCell(3, 4, nonlinearity="relu"),
        lambda: LSTMCell(3, 4),
        lambda: GRUCell(3, 4),
    ],
    ids=["rnn_tanh", "rnn_relu", "lstm", "gru"],
)
def test_reference_cells_pass_gradcheck(cell_factory) -> None:
    torch.manual_seed(2)
    cell = cell_factory().double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    params = [p for p in cell.parameters()]
    if isinstance(cell, LSTMCell):
        c = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)

        def fn(x, h, c, *ps):
            return cell(x, (h, c))

        inputs = (x, h, c, *params)
    else:

        def fn(x, h, *ps):
            return cell(x, h)

        inputs = (x, h, *params)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def test_reference_stack_passes_gradcheck() -> None:
    torch.manual_seed(3)
    stack = LSTM(2, 3, num_layers=2, bidirectional=True, impl="reference").double()
    x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)

    def fn(x, *params):
        out, (h, c) = stack(x)
        return out, h, c

    assert torch.autograd.gradcheck(fn, (x, *stack.parameters()), eps=1e-6, atol=1e-5)


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_lstm_cell_by_hand() -> None:
    # one input feature, hidden size 2; gate blocks (i, f, g, o), each 2 rows
    w_ih = np.array([[0.5], [-0.3], [0.8], [0.1], [-0.6], [0.4], [0.2], [0.9]])
    w_hh = np.array(
        [[0.1, -0.2], [0.3, 0.05], [-0.4, 0.2], [0.6, -0.1], [0.25, 0.3], [-0.5, 0.15], [0.05, 0.4], [-0.3, -0.2]]
    )
    b_ih = np.array([0.1, -0.1, 0.2, 0.0, -0.2, 0.3, 0.05, -0.05])
    b_hh = np.array([0.0, 0.05, -0.1, 0.1, 0.2, -0.3, 0.1, 0.0])
    x, h, c = np.array([1.5]), np.array([0.2, -0.4]), np.array([0.7, -1.1])

    # the equations, one gate at a time, written out with numpy
    def gate(k):
        rows = slice(2 * k, 2 * k + 2)
        return w_ih[rows] @ x + b_ih[rows] + w_hh[rows] @ h + b_hh[rows]

    i, f, g, o = _sigmoid(gate(0)), _sigmoid(gate(1)), np.tanh(gate(2)), _sigmoid(gate(3))
    c_expected = f * c + i * g
    h_expected = o * np.tanh(c_expected)
    # and the first component fully by hand, to pin the arithmetic itself
    pre_i0 = 0.5 * 1.5 + 0.1 + (0.1 * 0.2 + -0.2 * -0.4) + 0.0
    pre_f0 = 0.8 * 1.5 + 0.2 + (-0.4 * 0.2 + 0.2 * -0.4) + -0.1
    pre_g0 = -0.6 * 1.5 - 0.2 + (0.25 * 0.2 + 0.3 * -0.4) + 0.2
    pre_o0 = 0.2 * 1.5 + 0.05 + (0.05 * 0.2 + 0.4 * -0.4) + 0.1
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    c0 = sig(pre_f0) * 0.7 + sig(pre_i0) * math.tanh(pre_g0)
    assert c_expected[0] == pytest.approx(c0, abs=1e-12)
    assert h_expected[0] == pytest.approx(sig(pre_o0) * math.tanh(c0), abs=1e-12)

    cell = LSTMCell(1, 2).double()
    with torch.no_grad():
        for name, value in [("weight_ih", w_ih), ("weight_hh", w_hh), ("bias_ih", b_ih), ("bias_hh", b_hh)]:
            getattr(cell, name).copy_(torch.from_numpy(value))
    h_t, c_t = cell(torch.from_numpy(x[None]), (torch.from_numpy(h[None]), torch.from_numpy(c[None])))
    np.testing.assert_allclose(c_t[0].detach().numpy(), c_expected, atol=1e-12)
    np.testing.assert_allclose(h_t[0].detach().numpy(), h_expected, atol=1e-12)


def test_gru_cell_by_hand() -> None:
    # one input feature, hidden size 2; gate blocks (r, z, n)
    w_ih = np.array([[0.4], [-0.7], [0.3], [0.5], [-0.2], [0.9]])
    w_hh = np.array([[0.2, -0.1], [0.4, 0.3], [-0.3, 0.6], [0.1, -0.5], [0.7, 0.2], [-0.4, 0.35]])
    b_ih = np.array([0.05, -0.15, 0.1, 0.2, -0.1, 0.0])
    b_hh = np.array([0.1, 0.0, -0.05, 0.15, 0.3, -0.2])
    x, h = np.array([-0.8]), np.array([0.6, -0.3])

    def part(w, b, v, k):
        rows = slice(2 * k, 2 * k + 2)
        return w[rows] @ v + b[rows]

    r = _sigmoid(part(w_ih, b_ih, x, 0) + part(w_hh, b_hh, h, 0))
    z = _sigmoid(part(w_ih, b_ih, x, 1) + part(w_hh, b_hh, h, 1))
    n = np.tanh(part(w_ih, b_ih, x, 2) + r * part(w_hh, b_hh, h, 2))  # reset gate AFTER the matrix product
    h_expected = (1 - z) * n + z * h
    # the first component by hand
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    r0 = sig(0.4 * -0.8 + 0.05 + 0.2 * 0.6 + -0.1 * -0.3 + 0.1)
    z0 = sig(0.3 * -0.8 + 0.1 + -0.3 * 0.6 + 0.6 * -0.3 - 0.05)
    n0 = math.tanh(-0.2 * -0.8 - 0.1 + r0 * (0.7 * 0.6 + 0.2 * -0.3 + 0.3))
    assert h_expected[0] == pytest.approx((1 - z0) * n0 + z0 * 0.6, abs=1e-12)

    cell = GRUCell(1, 2).double()
    with torch.no_grad():
        for name, value in [("weight_ih", w_ih), ("weight_hh", w_hh), ("bias_ih", b_ih), ("bias_hh", b_hh)]:
            getattr(cell, name).copy_(torch.from_numpy(value))
    h_t = cell(torch.from_numpy(x[None]), torch.from_numpy(h[None]))
    np.testing.assert_allclose(h_t[0].detach().numpy(), h_expected, atol=1e-12)


def test_rnn_cell_by_hand() -> None:
    cell = RNNCell(2, 1, nonlinearity="relu").double()
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[0.5, -1.0]]))
        cell.weight_hh.copy_(torch.tensor([[2.0]]))
        cell.bias_ih.fill_(0.25)
        cell.bias_hh.fill_(-0.5)
    x = torch.tensor([[1.0, 0.5], [0.0, 2.0]], dtype=torch.float64)
    h = torch.tensor([[0.3], [0.1]], dtype=torch.float64)
    # row 0: 0.5 - 0.5 + 0.25 + 0.6 - 0.5 = 0.35; row 1: -2 + 0.25 + 0.2 - 0.5 = -2.05 -> relu 0
    torch.testing.assert_close(cell(x, h), torch.tensor([[0.35], [0.0]], dtype=torch.float64))
    cell.nonlinearity = "tanh"
    torch.testing.assert_close(cell(x, h), torch.tensor([[math.tanh(0.35)], [math.tanh(-2.05)]], dtype=torch.float64))


@pytest.mark.parametrize("cell", CELLS)
def test_weights_round_trip_through_torch_nn(cell: str) -> None:
    torch.manual_seed(4)
    ours = build_recurrent(cell, 5, 6, num_layers=2, bidirectional=True)
    theirs = ours.to_torch()
    assert type(theirs) is {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell, nn.RNN)
    x = torch.randn(2, 4, 5)
    torch.testing.assert_close(theirs(x)[0], ours(x)[0])
    # a fresh torch module's weights flow into a new stack, and both implementations agree with it
    fresh = type(theirs)(5, 6, num_layers=2, bidirectional=True, batch_first=True, **(
        {"nonlinearity": cell.split("_")[1]} if cell.startswith("rnn") else {}))
    back = RecurrentStack.from_torch(fresh, impl="reference")
    assert type(back) is {"lstm": LSTM, "gru": GRU}.get(cell, RNN)
    expected = fresh(x)[0]
    torch.testing.assert_close(back(x)[0], expected, atol=1e-6, rtol=1e-5)
    back.impl = "fused"
    torch.testing.assert_close(back(x)[0], expected)
    # parameters are shared, not copied: an update to our cell shows in the fused path
    with torch.no_grad():
        back.layers[1][1].weight_hh.add_(0.5)
    assert not torch.allclose(back(x)[0], expected)


def test_load_torch_rejects_mismatched_module() -> None:
    ours = LSTM(5, 6, num_layers=2)
    with pytest.raises(ValueError, match="hidden_size"):
        ours.load_torch(nn.LSTM(5, 7, num_layers=2, batch_first=True))
    with pytest.raises(ValueError, match="expected a torch.nn.LSTM"):
        ours.load_torch(nn.GRU(5, 6, num_layers=2))
    with pytest.raises(ValueError, match="impl"):
        LSTM(5, 6, impl="cudnn")


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_dropout_only_between_layers_and_only_in_training(impl: str) -> None:
    torch.manual_seed(5)
    x = torch.randn(4, 5, 3)
    one = GRU(3, 8, num_layers=1, dropout=0.5, impl=impl)
    one.train()
    torch.testing.assert_close(one(x)[0], one(x)[0])  # nothing random in a single layer
    two = GRU(3, 8, num_layers=2, dropout=0.5, impl=impl)
    two.train()
    assert not torch.allclose(two(x)[0], two(x)[0])
    two.eval()
    torch.testing.assert_close(two(x)[0], two(x)[0])


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_state_carries_across_chunks(impl: str) -> None:
    torch.manual_seed(6)
    stack = LSTM(3, 4, num_layers=2, impl=impl)
    x = torch.randn(2, 10, 3)
    whole, (h, c) = stack(x)
    first, state = stack(x[:, :6])
    second, (h2, c2) = stack(x[:, 6:], detach_state(state))
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    torch.testing.assert_close(h2, h)
    torch.testing.assert_close(c2, c)


def test_detach_and_select_state() -> None:
    h = torch.randn(2, 3, 4, requires_grad=True) * 2
    c = torch.randn(2, 3, 4, requires_grad=True) * 2
    dh, dc = detach_state((h, c))
    assert not dh.requires_grad and not dc.requires_grad and torch.equal(dh, h)
    assert detach_state(None) is None
    picked = select_state((h, c), torch.tensor([2, 2, 0]))
    torch.testing.assert_close(picked[0][:, 0], h[:, 2])
    torch.testing.assert_close(picked[1][:, 2], c[:, 0])
    assert select_state(h, torch.tensor([1])).shape == (2, 1, 4)


# ------------------------------------------------------------------------- padded batches without packing
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padded_birnn_equals_packed_sequence(cell):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from lmlab.models.rnn import PaddedBiRNN, reverse_padded

    torch.manual_seed(0)
    B, T, I, H, layers = 5, 9, 6, 4, 2
    ours = PaddedBiRNN(cell, I, H, num_layers=layers, bidirectional=True).double()
    ref = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H, num_layers=layers, bidirectional=True, batch_first=True).double()
    with torch.no_grad():  # the same weights: PyTorch's layer i / i_reverse are our fwd[i] / bwd[i]
        for i in range(layers):
            for name, p in ours.fwd[i].named_parameters():
                getattr(ref, name.replace("_l0", f"_l{i}")).copy_(p)
            for name, p in ours.bwd[i].named_parameters():
                getattr(ref, name.replace("_l0", f"_l{i}_reverse")).copy_(p)
    lengths = torch.tensor([9, 3, 1, 6, 9])
    x = torch.randn(B, T, I, dtype=torch.float64)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, h_n = ours(x_ours, lengths)
    packed = pack_padded_sequence(x_ref, lengths, batch_first=True, enforce_sorted=False)
    ref_out, ref_h = ref(packed)
    ref_out, _ = pad_packed_sequence(ref_out, batch_first=True, total_length=T)
    ref_h = ref_h[0] if cell == "lstm" else ref_h
    torch.testing.assert_close(out, ref_out)  # zeros past each length, as pad_packed_sequence gives
    torch.testing.assert_close(h_n, ref_h)
    # and the same gradients with respect to the inputs (padding gets none)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (ref_out * w).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad)
    assert x_ours.grad[1, 3:].abs().sum() == 0
    # reversing within the length twice is the identity; the padding stays in place
    torch.testing.assert_close(reverse_padded(reverse_padded(x, lengths), lengths), x)
    assert torch.equal(reverse_padded(x, lengths)[1, :3], x[1, :3].flip(0)) and torch.equal(reverse_padded(x, lengths)[1, 3:], x[1, 3:])

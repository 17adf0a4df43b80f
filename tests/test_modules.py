"""Tests of the size-driven module library (dlscaffold.modules)."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dlscaffold.modules import (
    CONV1DN,
    CONV2DN,
    DECONV1DN,
    DECONV2DN,
    FCN,
    Embedding,
    LayerSpec,
    MCDropout,
    ResNetFCN,
    Transformer,
    TransformerComparer,
    choose_nhead,
    plan_conv,
    plan_fcn,
    set_uc,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run torch on one thread here: these tensors are tiny, and on a busy machine OpenMP's
    thread hand-offs cost far more than the work itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FAMILIES = [
    pytest.param(CONV2DN, DECONV2DN, 2, id="2d"),
    pytest.param(CONV1DN, DECONV1DN, 1, id="1d"),
]


@st.composite
def spatial_pairs(draw, max_in: int) -> tuple[int, int]:
    """(size_in, size_out): size_out times a product of the served primes, at most max_in."""
    size_out = draw(st.integers(1, 8))
    size_in = size_out
    for p in draw(st.lists(st.sampled_from([2, 3, 5, 7]), max_size=4)):
        if size_in * p <= max_in:
            size_in *= p
    return size_in, size_out


@st.composite
def conv_pairs(draw, spatial_dims: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A valid (input_size, output_size) pair for a conv stack; tiny so forward passes are cheap."""
    max_in = 48 if spatial_dims == 2 else 210
    dims = [draw(spatial_pairs(max_in)) for _ in range(spatial_dims)]
    c_in, c_out = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    return (c_in, *(d[0] for d in dims)), (c_out, *(d[1] for d in dims))


def _assert_chained(plan: list[LayerSpec], size_in: tuple, size_out: tuple) -> None:
    assert plan[0].input_shape == size_in
    assert plan[-1].output_shape == size_out
    for before, after in zip(plan, plan[1:], strict=False):
        assert before.output_shape == after.input_shape


# ---- shapes: the property the whole family promises ----------------------------------------


@pytest.mark.parametrize("conv_class, deconv_class, dims", FAMILIES)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_conv_output_shape_is_the_requested_one(conv_class, deconv_class, dims, data):
    size_in, size_out = data.draw(conv_pairs(dims))
    net = conv_class(size_in, size_out, dropout=data.draw(st.booleans()))
    _assert_chained(net.plan, size_in, size_out)
    for spec in net.plan:  # each stride-k layer divides its size by exactly k
        spatial = zip(spec.input_shape[1:], spec.output_shape[1:], spec.stride, strict=False)
        assert all(n == m * k for n, m, k in spatial)
    with torch.no_grad():
        out = net(torch.randn(2, *size_in))
    assert tuple(out.shape) == (2, *size_out)


@pytest.mark.parametrize("conv_class, deconv_class, dims", FAMILIES)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_deconv_inverts_its_conv_twin(conv_class, deconv_class, dims, data):
    size_in, size_out = data.draw(conv_pairs(dims))
    conv_plan = plan_conv(size_in, size_out)
    net = deconv_class(size_out, size_in, batchnorm=data.draw(st.booleans()))
    assert [(s.input_shape, s.output_shape) for s in net.plan] == [
        (s.output_shape, s.input_shape) for s in reversed(conv_plan)
    ]
    assert [s.kernel for s in net.plan] == [s.kernel for s in reversed(conv_plan)]
    with torch.no_grad():
        out = net(torch.randn(2, *size_out))
    assert tuple(out.shape) == (2, *size_in)


def test_cifar_encoder_plan_is_the_documented_one():
    plan = CONV2DN((3, 32, 32), (64, 1, 1)).plan
    rows = [(s.in_channels, s.out_channels, s.kernel, s.stride, s.padding) for s in plan]
    assert rows == [
        (3, 8, (4, 4), (2, 2), (1, 1)),
        (8, 16, (4, 4), (2, 2), (1, 1)),
        (16, 32, (4, 4), (2, 2), (1, 1)),
        (32, 64, (4, 4), (2, 2), (1, 1)),
        (64, 64, (4, 4), (2, 2), (1, 1)),
    ]


def test_mixed_strides_and_extra_channel_layers():
    # H: 28 = 7 * 2 * 2, W: 20 / 5 = 2 * 2, channels 1 -> 2 -> 4 -> 8 -> 16 -> 32: five layers,
    # with the stride factors spread evenly over them (H at layers 0, 1, 3; W at 0, 2).
    plan = plan_conv((1, 28, 20), (32, 1, 5))
    assert [s.stride for s in plan] == [(7, 2), (2, 1), (1, 2), (2, 1), (1, 1)]
    assert [s.kernel for s in plan] == [(9, 4), (4, 3), (3, 4), (4, 3), (3, 3)]
    assert [s.out_channels for s in plan] == [2, 4, 8, 16, 32]
    assert [s.output_shape[1:] for s in plan] == [(4, 10), (2, 10), (2, 5), (1, 5), (1, 5)]


# ---- sizes the heuristic cannot serve ----------------------------------------------------------


@pytest.mark.parametrize(
    "module_class, size_in, size_out, fragments",
    [
        (CONV2DN, (3, 32, 32), (8, 3, 3),
         ["cannot map H 32 -> 3: 32/3 is not an integer", "sizes that work: 1, 2, 4, 8, 16, 32",
          "adaptive_pool=True"]),
        (CONV2DN, (3, 32, 32), (8, 16, 64), ["cannot map W 32 -> 64", "cannot enlarge", "DECONV"]),
        (CONV2DN, (3, 26, 26), (8, 2, 2), ["26/2 = 13 has the prime factor 13", "work: 13, 26"]),
        (CONV1DN, (3, 13), (8, 1), ["L 13 -> 1", "inputs that reach 1: 10, 12, 14, 15"]),
        (DECONV1DN, (3, 4), (8, 44), ["44/4 = 11", "40, 48"]),
        (DECONV2DN, (3, 32, 32), (8, 16, 16), ["cannot shrink", "CONV modules"]),
        (CONV2DN, (3, 32), (8, 1, 1), ["input_size must have 3 entries (C, H, W)"]),
        (CONV1DN, (3, 0), (8, 1), ["positive integers"]),
        (CONV1DN, "3,32", (8, 1), ["positive integers"]),
    ],
)  # fmt: skip
def test_invalid_sizes_raise_with_sizes_that_work(module_class, size_in, size_out, fragments):
    with pytest.raises(ValueError) as error:
        module_class(size_in, size_out)
    for fragment in fragments:
        assert fragment in str(error.value)


def _listed(message: str, label: str) -> list[int]:
    match = re.search(label + r": ([\d, ]+)", message)
    return [int(n) for n in match.group(1).split(", ")]


@settings(max_examples=200, deadline=None)
@given(size_in=st.integers(1, 300), size_out=st.integers(1, 300), transposed=st.booleans())
def test_every_suggested_size_works(size_in, size_out, transposed):
    try:
        plan_conv((1, size_in), (1, size_out), transposed=transposed)
    except ValueError as error:
        message = str(error)
        for good_out in _listed(message, "sizes that work"):
            plan_conv((1, size_in), (1, good_out), transposed=transposed)
        for good_in in _listed(message, f"inputs that reach {size_out}"):
            plan_conv((1, good_in), (1, size_out), transposed=transposed)


def test_adaptive_pool_is_an_explicit_fallback():
    net = CONV2DN((3, 13, 13), (8, 1, 1), adaptive_pool=True)
    assert net.plan[-1].kind == "pool" and net.plan[-2].output_shape == (8, 13, 13)
    assert net(torch.randn(2, 3, 13, 13)).shape == (2, 8, 1, 1)
    up = DECONV1DN((4, 3), (2, 32), adaptive_pool=True)  # 3 -> 36 by strides, then pooled to 32
    assert up.plan[-2].output_shape == (2, 36)
    assert up(torch.randn(2, 4, 3)).shape == (2, 2, 32)
    with pytest.raises(ValueError, match="cannot enlarge"):
        CONV1DN((3, 8), (3, 16), adaptive_pool=True)


def test_plan_reads_without_torch():
    code = (
        "import sys; from dlscaffold.modules import plan_conv; "
        "plan_conv((3, 32, 32), (64, 1, 1)); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_forward_rejects_a_wrong_input_shape():
    with pytest.raises(ValueError, match=r"expects \(N, 3, 32, 32\), got \(2, 3, 16, 16\)"):
        CONV2DN((3, 32, 32), (8, 1, 1))(torch.randn(2, 3, 16, 16))


# ---- initialisation ---------------------------------------------------------------------------


def test_kaiming_init_and_batchnorm_identity():
    gain = math.sqrt(2.0 / (1 + 0.1**2))  # Kaiming gain for LeakyReLU(0.1)
    conv = CONV2DN((64, 4, 4), (64, 4, 4), nonlinear=True)  # one 3x3 conv, then BN
    weight = conv.blocks[0].conv.weight
    assert weight.std().item() == pytest.approx(gain / math.sqrt(64 * 9), rel=0.05)
    assert conv.blocks[0].conv.bias is None  # BatchNorm's shift replaces it
    assert torch.all(conv.blocks[0].norm.weight == 1) and torch.all(conv.blocks[0].norm.bias == 0)
    deconv = DECONV2DN((64, 2, 2), (32, 4, 4), batchnorm=False)  # one 4x4 stride-2 layer
    weight = deconv.blocks[0].conv.weight  # (in, out, 4, 4): fan-in is in_channels * 16
    assert weight.std().item() == pytest.approx(gain / math.sqrt(64 * 16), rel=0.05)
    assert torch.all(deconv.blocks[0].conv.bias == 0)


# ---- MC dropout (uc) --------------------------------------------------------------------------

DROPOUT_MODELS = {
    "CONV2DN": (lambda uc: CONV2DN((3, 8, 8), (16, 2, 2), dropout=True, uc=uc), (2, 3, 8, 8)),
    "DECONV1DN": (lambda uc: DECONV1DN((8, 2), (2, 12), dropout=True, uc=uc), (2, 8, 2)),
    "FCN": (lambda uc: FCN(16, 4, 3, dropout=True, uc=uc), (2, 16)),
    "ResNetFCN": (lambda uc: ResNetFCN(16, 4, 3, dropout=True, uc=uc), (2, 16)),
    "TransformerComparer": (lambda uc: TransformerComparer(8, 2, uc=uc), (2, 5, 8)),
}


@pytest.mark.parametrize("name", DROPOUT_MODELS)
@pytest.mark.parametrize("uc", [True, False])
def test_uc_keeps_dropout_active_in_eval(name, uc):
    build, input_shape = DROPOUT_MODELS[name]
    torch.manual_seed(0)
    net = build(uc).eval()
    x = torch.randn(*input_shape)
    with torch.no_grad():
        first, second = net(x), net(x)
    assert torch.equal(first, second) is not uc


def test_set_uc_switches_mc_dropout_after_construction():
    net = FCN(16, 4, 3, dropout=True).eval()
    x = torch.randn(2, 16)
    set_uc(net, True)
    assert not torch.equal(net(x), net(x))
    set_uc(net, False)
    assert torch.equal(net(x), net(x))


def test_channelwise_dropout_drops_whole_channels():
    out = MCDropout(0.5, channelwise=True)(torch.ones(4, 16, 3, 3))  # (N, C, H, W)
    per_channel = out.flatten(2)  # (N, C, H * W)
    assert torch.all(per_channel.amin(-1) == per_channel.amax(-1))  # each channel: all 0 or all 2
    with pytest.raises(ValueError, match="dropout_prob"):
        MCDropout(1.0)


# ---- fully-connected, embedding, transformers ---------------------------------------------------


def test_fcn_widths_and_layers():
    assert [(s.in_features, s.out_features) for s in plan_fcn(10, 64, 3)] == [
        (10, 64), (64, 64), (64, 64),
    ]  # fmt: skip
    net = FCN(32, 4, 3, hidden_size=8)
    assert [s.out_features for s in net.plan] == [8, 8, 4]
    assert net(torch.randn(2, 32)).shape == (2, 4)
    assert isinstance(FCN(32, 4, 1).blocks[0].linear, nn.Linear) and len(FCN(32, 4, 1).blocks) == 1
    with pytest.raises(ValueError, match="num_layers must be a positive integer, got 0"):
        FCN(32, 4, 0)


def test_resnet_fcn_adds_its_input_back():
    net = ResNetFCN(16, 4, 3)
    assert [s.kind for s in net.plan] == ["residual", "residual", "linear"]
    for block in net.blocks[:2]:  # with zero residual branches the stack is its projection
        nn.init.zeros_(block.linear.weight)
        nn.init.zeros_(block.linear.bias)
    x = torch.randn(2, 16)
    torch.testing.assert_close(net(x), net.blocks[2](x))


def test_embedding_is_a_thin_lookup():
    embed = Embedding(10, 4, padding_idx=0)
    assert embed(torch.tensor([[0, 3, 9]])).shape == (1, 3, 4)
    assert torch.all(embed(torch.tensor([0])) == 0)
    with pytest.raises(ValueError, match="embed_dim"):
        Embedding(10, 0)


@pytest.mark.parametrize("size, nhead", [(64, 8), (12, 6), (10, 5), (9, 3), (14, 7), (16, 8)])
def test_nhead_is_the_largest_divisor_in_range(size, nhead):
    assert choose_nhead(size) == nhead


def test_nhead_without_a_divisor_in_range_is_an_error():
    with pytest.raises(ValueError) as error:
        Transformer(13, 1, 1)
    assert "no divisor between 2 and 8" in str(error.value)
    assert "sizes that work: 12, 14" in str(error.value)
    assert "min_nhead=1" in str(error.value)
    assert TransformerComparer(13, 1, min_nhead=1).nhead == 1
    with pytest.raises(ValueError, match="must not exceed"):
        choose_nhead(16, max_nhead=2, min_nhead=4)
    with pytest.raises(ValueError, match="input_size must be a positive integer"):
        choose_nhead(0)


def test_transformer_shapes_with_masks():
    net = Transformer(16, 1, 1, dim_feedforward=32).eval()
    source, target = torch.randn(2, 5, 16), torch.randn(2, 3, 16)  # (N, S, E), (N, T, E)
    src_pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])  # (N, S), True = padding
    out = net(source, target, src_key_padding_mask=src_pad, causal=True)
    assert out.shape == (2, 3, 16) and torch.isfinite(out).all()


def test_comparer_ignores_padded_positions():
    torch.manual_seed(0)
    net = TransformerComparer(8, 2).eval()
    seq = torch.randn(2, 6, 8)  # (N, T, E)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 4:] = True  # the second sequence is 4 long
    changed = seq.clone()
    changed[1, 4:] = 100.0  # garbage where the padding is
    with torch.no_grad():
        torch.testing.assert_close(net(seq, pad)[1, :4], net(changed, pad)[1, :4])
        assert not torch.allclose(net(seq)[1, :4], net(changed)[1, :4])


# ---- composition: the CIFAR-10 example's model -------------------------------------------------


class Cifar10Classifier(nn.Module):
    """The example project's model: a CONV2DN encoder, then a ResNetFCN classifier."""

    def __init__(self, image_size=(3, 32, 32), encoding_size=(64, 1, 1), num_resnet_layers=3):
        super().__init__()
        self.image_processor = CONV2DN(image_size, encoding_size, nonlinear=True)
        self.encoding_classifier = ResNetFCN(encoding_size[0], 10, num_resnet_layers)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        encoding = self.image_processor(image).flatten(1)  # (N, 64, 1, 1) -> (N, 64)
        return {"class_logits": self.encoding_classifier(encoding)}  # (N, 10)


def test_cifar10_classifier_trains_one_step():
    torch.manual_seed(0)
    model = Cifar10Classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(image=images)["class_logits"], labels)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=False))

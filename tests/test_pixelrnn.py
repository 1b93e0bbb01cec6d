"""Row LSTM, Diagonal BiLSTM and the Spatial LSTM baseline: exact causality, dependency fields,
skewing, the LSTM equations against hand-written loops, row-crop consistency (relied on by the
sampler) and sampling."""

from __future__ import annotations

import math

import pytest
import torch
from dependency import assert_causal, dependency_matrix, dimension
from support import sample_both_ways, tiny_model

from pixel_lightning.models import diagonal_bilstm
from pixel_lightning.models.diagonal_bilstm import DiagonalBiLSTM, DiagonalBiLSTMLayer, scan_order
from pixel_lightning.models.row_lstm import RowLSTM, RowLSTMLayer
from pixel_lightning.models.spatial_lstm import SpatialLSTM, SpatialLSTMLayer

MODELS = {"row_lstm": RowLSTM, "diagonal_bilstm": DiagonalBiLSTM, "spatial_lstm": SpatialLSTM}
DATA = [(1, 2), (3, 4)]  # (channels, levels): binary, and RGB with a softmax head
SHAPES = [(5, 5), (4, 6), (3, 4), (3, 9)]  # 3x9: wider than the 7x7 input conv reaches


def make(name: str, channels: int, levels: int, seed: int = 0, **sizes) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = MODELS[name](channels, levels, **{"hidden": 12, "layers": 2, **sizes})
    # Non-zero initial states, so that the boundary handling is exercised too.
    for p in net.parameters():
        if p.dim() == 2:
            torch.nn.init.normal_(p)
    return net.double()


def full_field(channels: int, height: int, width: int) -> torch.Tensor:
    """D[d, e] True exactly for e < d: every earlier dimension, nothing else."""
    n = height * width * channels
    return torch.ones(n, n, dtype=torch.bool).tril(-1)


def gapped_field(channels: int, height: int, width: int) -> torch.Tensor:
    """The field of the Diagonal BiLSTM without its raw-image term: every earlier dimension but one.

    The last channel of the last pixel of row r-1 then enters the net only through the 7x7 mask-A
    conv at pixels of row r, columns >= W-4 (the mask hides a pixel's last channel from the pixel
    itself, and the row above ends there). Pixel (r, c) reads row r only up to column c, so for
    c < W-4 that one dimension is out of reach.
    """
    field = full_field(channels, height, width)
    for row in range(1, height):
        blind = dimension(row - 1, width - 1, channels - 1, width, channels)
        for col in range(width - 4):
            for ch in range(channels):
                field[dimension(row, col, ch, width, channels), blind] = False
    return field


def spatial_field(channels: int, height: int, width: int) -> torch.Tensor:
    """The Spatial LSTM's field (models/spatial_lstm.py): the rows above up to column c + 3, the
    pixels left in the row and the pixel's earlier channels; nothing above-right beyond c + 3."""
    cols = torch.arange(width)
    reach = cols[None, :] <= cols[:, None] + 3  # (W out, W in)
    reach = reach.repeat_interleave(channels, 0).repeat_interleave(channels, 1)  # (W*C, W*C)
    return full_field(channels, height, width) & reach.repeat(height, height)


def assert_field(deps: torch.Tensor, expected: torch.Tensor) -> None:
    assert torch.equal(deps, expected), f"field differs at {(deps ^ expected).nonzero()[:5].tolist()}"


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels,levels", DATA)
@pytest.mark.parametrize("height,width", SHAPES)
def test_causal(name, channels, levels, height, width, skip):
    deps = assert_causal(make(name, channels, levels, skip=skip), channels, height, width)
    if name == "diagonal_bilstm":  # the whole past (Figure 4), on any width
        assert_field(deps, full_field(channels, height, width))
    if name == "spatial_lstm":  # the same field for any number of layers: the scan covers it all at once
        assert_field(deps, spatial_field(channels, height, width))


@pytest.mark.parametrize("channels,levels", DATA)
def test_diagonal_needs_the_raw_image_term(channels, levels):
    net = make("diagonal_bilstm", channels, levels)
    # Only the first layer's right-to-left scan has it.
    terms = [(layer.lstm.left_to_right.image_to_state, layer.lstm.right_to_left.image_to_state) for layer in net.layers]
    assert [(a is None, b is None) for a, b in terms] == [(True, False), (True, True)]
    with torch.no_grad():
        net.layers[0].lstm.right_to_left.image_to_state.weight.zero_()
    height, width = 3, 9  # wide: the 7x7 input conv no longer spans the previous row
    deps = assert_causal(net, channels, height, width)
    with pytest.raises(AssertionError, match="field differs"):
        assert_field(deps, full_field(channels, height, width))
    assert_field(deps, gapped_field(channels, height, width))


@pytest.mark.parametrize("channels,levels", DATA)
def test_paper_diagonal_bilstm_has_the_documented_blind_spot(channels, levels):
    # close_blind_spot=False is the paper's architecture as written: no raw-image term anywhere,
    # and exactly the dimensions that gapped_field documents are out of reach.
    net = make("diagonal_bilstm", channels, levels, close_blind_spot=False)
    assert all(layer.lstm.right_to_left.image_to_state is None for layer in net.layers)
    height, width = 3, 9
    deps = assert_causal(net, channels, height, width)
    with pytest.raises(AssertionError, match="field differs"):
        assert_field(deps, full_field(channels, height, width))
    assert_field(deps, gapped_field(channels, height, width))


def test_diagonal_leaks_without_the_down_shift(monkeypatch):
    monkeypatch.setattr(diagonal_bilstm, "shift_down", lambda x: x)
    deps, _ = dependency_matrix(make("diagonal_bilstm", 1, 2, layers=1), 1, 4, 4)
    # The right-to-left state at (r, c) has read the pixels right of it: (r, c) sees (r, c+1).
    assert deps[dimension(2, 1, 0, 4, 1), dimension(2, 2, 0, 4, 1)]
    with pytest.raises(AssertionError, match="leak"):
        assert_causal(make("diagonal_bilstm", 1, 2, layers=1), 1, 4, 4)


def test_scan_order_layout():
    # 2x3 raster indices [[0, 1, 2], [3, 4, 5]]; diagonals {0}, {1, 3}, {2, 4}, {5}, rows ascending;
    # the mirrored image [[2, 1, 0], [5, 4, 3]] for the right-to-left scan.
    assert scan_order(2, 3, torch.device("cpu")).tolist() == [[0, 1, 3, 2, 4, 5], [2, 1, 5, 0, 4, 3]]


@pytest.mark.parametrize("height,width", [(4, 4), (3, 5), (5, 2), (1, 4), (4, 1), (7, 3)])
def test_scan_order_goes_diagonal_by_diagonal(height, width):
    order = scan_order(height, width, torch.device("cpu"))
    rows, cols = order // width, order % width  # (2, N) each
    diagonals = torch.stack([rows[0] + cols[0], rows[1] + width - 1 - cols[1]])  # direction 1: mirrored
    for direction in range(2):
        assert sorted(order[direction].tolist()) == list(range(height * width))
        key = (diagonals[direction] * height + rows[direction]).tolist()  # diagonal, then row
        assert key == sorted(key)


# ---- the LSTM equations, against loops over pixels written straight from the paper -----------


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def randomise(layer: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    for p in layer.parameters():
        torch.nn.init.normal_(p)
    return layer.double()


def lstm_cell(pre: list[float], c_prev: float) -> tuple[float, float]:
    """Gates in the order o, f, i, g."""
    o, f, i, g = sigmoid(pre[0]), sigmoid(pre[1]), sigmoid(pre[2]), math.tanh(pre[3])
    c = f * c_prev + i * g
    return o * math.tanh(c), c


def test_row_lstm_layer_matches_loops():
    hidden, height, width, k = 2, 3, 3, 3
    layer = randomise(RowLSTMLayer(1, hidden, 1, k))
    x = torch.randn(1, 1, height, width, dtype=torch.float64)
    w_is = layer.input_to_state.weight.tolist()  # (4h, 1, 1, k)
    bias = layer.input_to_state.bias.tolist()
    w_ss = layer.state_to_state.weight.tolist()  # (4h, h, k)
    h_prev = [[layer.h0[u, 0].item()] * width for u in range(hidden)]
    c_prev = [[layer.c0[u, 0].item()] * width for u in range(hidden)]
    img = x[0, 0].tolist()
    expected = []
    for r in range(height):
        h_row, c_row = [[0.0] * width for _ in range(hidden)], [[0.0] * width for _ in range(hidden)]
        for col in range(width):
            for u in range(hidden):
                pre = []
                for gate in range(4):
                    q = gate * hidden + u
                    s = bias[q]
                    for t in range(k // 2 + 1):  # mask B: pixels to the left, and this one
                        if col + t - k // 2 >= 0:
                            s += w_is[q][0][0][t] * img[r][col + t - k // 2]
                    for v in range(hidden):  # previous row, unmasked, zero-padded at the ends
                        for t in range(k):
                            if 0 <= col + t - k // 2 < width:
                                s += w_ss[q][v][t] * h_prev[v][col + t - k // 2]
                    pre.append(s)
                h_row[u][col], c_row[u][col] = lstm_cell(pre, c_prev[u][col])
        expected.append(h_row)
        h_prev, c_prev = h_row, c_row
    expected = torch.tensor(expected, dtype=torch.float64).permute(1, 0, 2)  # (h, H, W)
    torch.testing.assert_close(layer(x)[0], expected, rtol=1e-12, atol=1e-12)


def diagonal_loops(lstm, img: list[list[float]], step: int, raw=None) -> list[list[list[float]]]:
    """States (H, W, h) of one direction: step = -1 reads the left neighbour, +1 the right one.

    raw (C, H, W): the raw image, read unmasked at the same pixel if the direction has that term.
    """
    hidden, height, width = lstm.hidden, len(img), len(img[0])
    w_is = lstm.input_to_state.weight.tolist()  # (4h, 1, 1, 1)
    bias = lstm.input_to_state.bias.tolist()
    w_ss = lstm.state_to_state.weight.tolist()  # (4h, h, 2): tap 0 above, tap 1 beside
    w_img = None if lstm.image_to_state is None else lstm.image_to_state.weight.tolist()  # (4h, C, 1, 1)
    h0, c0 = lstm.h0[:, 0].tolist(), lstm.c0[:, 0].tolist()
    h = [[None] * width for _ in range(height)]
    c = [[None] * width for _ in range(height)]
    cols = range(width) if step == -1 else range(width - 1, -1, -1)
    for r in range(height):
        for col in cols:
            above = h[r - 1][col] if r > 0 else [0.0] * hidden  # zero padding on top
            inside = 0 <= col + step < width
            beside = h[r][col + step] if inside else h0  # learned initial state
            c_beside = c[r][col + step] if inside else c0
            h[r][col], c[r][col] = [0.0] * hidden, [0.0] * hidden
            for u in range(hidden):
                pre = []
                for gate in range(4):
                    q = gate * hidden + u
                    s = bias[q] + w_is[q][0][0][0] * img[r][col]
                    if w_img is not None:  # every channel of the raw pixel, no mask
                        s += sum(w_img[q][k][0][0] * raw[k][r][col] for k in range(len(raw)))
                    s += sum(w_ss[q][v][0] * above[v] + w_ss[q][v][1] * beside[v] for v in range(hidden))
                    pre.append(s)
                h[r][col][u], c[r][col][u] = lstm_cell(pre, c_beside[u])
    return h


def test_diagonal_bilstm_layer_matches_loops():
    hidden, height, width, image_channels = 2, 3, 4, 3
    layer = randomise(DiagonalBiLSTMLayer(1, hidden, 1, image_channels))
    x = torch.randn(1, 1, height, width, dtype=torch.float64)
    image = torch.randn(1, image_channels, height, width, dtype=torch.float64)
    img, raw = x[0, 0].tolist(), image[0].tolist()
    left = torch.tensor(diagonal_loops(layer.left_to_right, img, -1), dtype=torch.float64)  # (H, W, h)
    right = torch.tensor(diagonal_loops(layer.right_to_left, img, +1, raw), dtype=torch.float64)
    states = layer.scan(x, image)[:, :, 0].permute(0, 2, 3, 1)  # (2, H, W, h)
    torch.testing.assert_close(states, torch.stack([left, right]), rtol=1e-12, atol=1e-12)
    expected = left.clone()
    expected[1:] += right[:-1]  # right-to-left states shifted down a row
    torch.testing.assert_close(layer(x, image)[0].permute(1, 2, 0), expected, rtol=1e-12, atol=1e-12)


def test_spatial_lstm_layer_matches_loops():
    # Theis & Bethge's 2D LSTM, pixel by pixel: gates o, f_above, f_left, i, g.
    hidden, height, width = 2, 3, 4
    layer = randomise(SpatialLSTMLayer(1, hidden, 1))
    x = torch.randn(1, 1, height, width, dtype=torch.float64)
    img = x[0, 0].tolist()
    w_is = layer.input_to_state.weight.tolist()  # (5h, 1, 1, 1)
    bias = layer.input_to_state.bias.tolist()
    w_ss = layer.state_to_state.weight.tolist()  # (5h, h, 2): tap 0 above, tap 1 left
    h0, c0 = layer.h0[:, 0].tolist(), layer.c0[:, 0].tolist()
    h = [[None] * width for _ in range(height)]
    c = [[None] * width for _ in range(height)]
    for r in range(height):
        for col in range(width):
            h_above, c_above = (h[r - 1][col], c[r - 1][col]) if r > 0 else (h0, c0)
            h_left, c_left = (h[r][col - 1], c[r][col - 1]) if col > 0 else (h0, c0)
            h[r][col], c[r][col] = [0.0] * hidden, [0.0] * hidden
            for u in range(hidden):
                pre = [
                    bias[q]
                    + w_is[q][0][0][0] * img[r][col]
                    + sum(w_ss[q][v][0] * h_above[v] + w_ss[q][v][1] * h_left[v] for v in range(hidden))
                    for q in range(u, 5 * hidden, hidden)
                ]
                o, f_above, f_left, i = (sigmoid(p) for p in pre[:4])
                c[r][col][u] = f_above * c_above[u] + f_left * c_left[u] + i * math.tanh(pre[4])
                h[r][col][u] = o * math.tanh(c[r][col][u])
    expected = torch.tensor(h, dtype=torch.float64).permute(2, 0, 1)  # (h, H, W)
    torch.testing.assert_close(layer(x)[0], expected, rtol=1e-12, atol=1e-12)


# ---- what the sampler relies on --------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels,levels", DATA)
def test_row_crop_consistency(name, channels, levels):
    net = make(name, channels, levels).eval()
    x = torch.rand(2, channels, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        full = net(x)
        for r in range(5):
            torch.testing.assert_close(net(x[:, :, : r + 1]), full[..., : r + 1, :], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "arch,channels,levels",
    [
        ("row_lstm.RowLSTM", 1, 2),
        ("diagonal_bilstm.DiagonalBiLSTM", 3, 4),
        ("spatial_lstm.SpatialLSTM", 3, 4),
    ],
)
def test_sampling(arch, channels, levels):
    # Valid levels, and (a net with a cached step) every draw fed the naive path's logits.
    torch.manual_seed(0)
    model = tiny_model(channels, levels, height=6, width=6, arch=arch).double()
    naive, samples = sample_both_ways(model, lambda method, g: model.sample(2, generator=g, method=method))
    assert torch.equal(naive, samples)
    assert samples.shape == (2, channels, 6, 6) and samples.dtype == torch.long
    assert samples.min() >= 0 and samples.max() < levels

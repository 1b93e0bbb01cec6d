"""What all architectures share (Table 1's frame): skip connections, the output stack, and the
sizes of the paper presets."""

from __future__ import annotations

import hydra
import pytest
import torch
from support import requires_data
from test_configs import compose_train, one_training_step, paper_presets

from pixel_lightning.models.diagonal_bilstm import DiagonalBiLSTM
from pixel_lightning.models.layers import MaskedConv2d, OutputStack
from pixel_lightning.models.pixelcnn import PixelCNN
from pixel_lightning.models.row_lstm import RowLSTM
from pixel_lightning.models.spatial_lstm import SpatialLSTM

NETS = [PixelCNN, RowLSTM, DiagonalBiLSTM, SpatialLSTM]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("net_class", NETS)
@pytest.mark.parametrize("hidden,layers", [(12, 1), (8, 3)])
def test_skip_connections_add_one_1x1_conv_per_layer(net_class, hidden, layers):
    # Section 3.3: each layer's 2h maps -> a 1x1 mask-B conv -> summed into the output stack's input.
    plain = net_class(3, 4, hidden=hidden, layers=layers, skip=False)
    skipped = net_class(3, 4, hidden=hidden, layers=layers, skip=True)
    per_layer = (2 * hidden) * (2 * hidden) + 2 * hidden  # weights and bias of a 2h -> 2h 1x1 conv
    assert count(skipped) - count(plain) == layers * per_layer
    assert plain.skips is None
    assert len(skipped.skips) == layers
    assert all(isinstance(c, MaskedConv2d) and c.mask_type == "B" and c.kernel_size == (1, 1) for c in skipped.skips)


@pytest.mark.parametrize("net_class", NETS)
def test_every_layers_output_reaches_the_output_stack_through_its_skip(net_class):
    # Section 3.3: layer i's output, through skip conv i, is summed into the output stack's input. So
    # skip conv i reads layer i's output, zeroing any one skip conv changes the logits (a layer whose
    # skip is dropped or overwritten fails), and zeroing all gives back the no-skip net.
    torch.manual_seed(0)
    net = net_class(1, 2, hidden=8, layers=3, skip=True).double()
    x = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    outputs, skip_inputs = {}, {}
    for i, (layer, conv) in enumerate(zip(net.layers, net.skips)):
        layer.register_forward_hook(lambda module, args, out, i=i: outputs.__setitem__(i, out))
        conv.register_forward_pre_hook(lambda module, args, i=i: skip_inputs.__setitem__(i, args[0]))
    with torch.no_grad():
        with_skips = net(x)
        assert all(skip_inputs[i] is outputs[i] for i in range(3)), "a skip conv reads another layer's output"
        for i, conv in enumerate(net.skips):
            kept = {k: v.clone() for k, v in conv.state_dict().items()}
            conv.weight.zero_()
            conv.bias.zero_()
            assert (net(x) - with_skips).abs().max() > 1e-6, f"layer {i}'s output does not reach the output stack"
            conv.load_state_dict(kept)
        plain = net_class(1, 2, hidden=8, layers=3, skip=False).double()
        plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("skips.")})
        for conv in net.skips:
            conv.weight.zero_()
            conv.bias.zero_()
        torch.testing.assert_close(net(x), plain(x), rtol=0, atol=0)


@pytest.mark.parametrize("channels,levels", [(1, 2), (3, 256)])
@pytest.mark.parametrize("layers", [1, 2])
def test_output_stack_layout(channels, levels, layers):
    stack = OutputStack(2 * 16, 32, channels, levels, layers)
    assert [(c.in_channels, c.out_channels) for c in stack.hidden] == [(32, 32)] * layers
    assert stack.logits.out_channels == channels * (1 if levels == 2 else levels)
    logits = stack(torch.randn(2, 32, 4, 5))
    assert logits.shape == ((2, channels, 4, 5) if levels == 2 else (2, levels, channels, 4, 5))
    with pytest.raises(ValueError, match="output_layers"):
        OutputStack(32, 32, channels, levels, 0)


@pytest.mark.parametrize(  # the PixelRNN paper's presets (PixelCNN++ and PixelSNAIL: their own test files)
    "experiment",
    [name for name in paper_presets("mnist") + paper_presets("cifar") if not name.endswith(("_pp", "_pixelsnail"))],
)
def test_paper_presets_have_the_documented_output_stack(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    net = hydra.utils.instantiate(cfg.model.net)
    mnist = experiment.startswith("paper_mnist_")
    maps, logits = (32, 1) if mnist else (1024, 3 * 256)
    # Table 1: ReLU + 1x1 mask-B conv to `maps` feature maps, ReLU + 1x1 mask-B conv to the logits.
    assert [(c.out_channels, c.mask_type) for c in net.output.hidden] == [(maps, "B")]
    assert (net.output.logits.out_channels, net.output.logits.mask_type) == (logits, "B")
    assert cfg.data.batch_size == 16 and cfg.optimizer._target_ == "torch.optim.RMSprop"
    assert (net.skips is not None) == (cfg.model.net._target_.split(".")[-1] != "PixelCNN")
    assert cfg.callbacks.early_stopping.monitor == "val/nll"


@requires_data
def test_paper_diagonal_bilstm_trains_one_step(tmp_path):
    metrics = one_training_step(
        "paper_mnist_diagonal_bilstm", tmp_path, ["model.net.close_blind_spot=false", "model.net.layers=1"]
    )
    assert 0 < metrics["train/loss"] < 1

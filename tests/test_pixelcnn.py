"""PixelCNN and its masks: exact causality, receptive field, channel groups, row cropping."""

import pytest
import torch
from dependency import assert_causal

from pixel_lightning.models.layers import causal_mask, channel_groups
from pixel_lightning.models.pixelcnn import PixelCNN


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("channels,levels", [(1, 2), (3, 2), (3, 4)])
def test_pixelcnn_is_exactly_causal(channels, levels, skip):
    torch.manual_seed(0)
    net = PixelCNN(channels, levels, hidden=12, layers=2, output_hidden=24, skip=skip)
    assert_causal(net, channels, height=5, width=6)


def test_mask_a_hides_centre_and_future_mask_b_keeps_own_group():
    # 1 channel: A has no centre tap, B has it; nothing right of / below the centre in either.
    a = causal_mask(1, 1, (3, 3), 1, "A")[0, 0]
    b = causal_mask(1, 1, (3, 3), 1, "B")[0, 0]
    assert a.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]


def test_rgb_centre_taps_follow_channel_groups():
    # 6 output maps (2 per group R, G, B) reading the 3 image channels at the centre.
    assert channel_groups(6, 3).tolist() == [0, 0, 1, 1, 2, 2]
    centre_a = causal_mask(6, 3, (1, 1), 3, "A")[:, :, 0, 0]
    centre_b = causal_mask(6, 3, (1, 1), 3, "B")[:, :, 0, 0]
    assert centre_a.tolist() == [[0, 0, 0]] * 2 + [[1, 0, 0]] * 2 + [[1, 1, 0]] * 2
    assert centre_b.tolist() == [[1, 0, 0]] * 2 + [[1, 1, 0]] * 2 + [[1, 1, 1]] * 2


def test_masked_weights_stay_inert_after_optimizer_steps():
    # Weight decay and updates touch the raw weights; the mask must still zero them in use.
    torch.manual_seed(0)
    net = PixelCNN(1, 2, hidden=12, layers=1, output_hidden=24)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.5)
    for _ in range(3):
        loss = net(torch.rand(2, 1, 5, 5)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert_causal(net, 1, height=5, width=5)


@pytest.mark.parametrize("channels,levels", [(1, 2), (3, 4)])
def test_rows_up_to_r_do_not_depend_on_later_rows(channels, levels):
    # The sampler runs the net on the first r+1 rows only; that must give the same logits.
    torch.manual_seed(0)
    net = PixelCNN(channels, levels, hidden=12, layers=2, output_hidden=24).double()
    x = torch.rand(2, channels, 6, 5, dtype=torch.float64)
    full = net(x)
    for r in range(6):
        torch.testing.assert_close(net(x[:, :, : r + 1]), full[..., : r + 1, :], rtol=0, atol=1e-12)


def test_too_few_features_for_rgb_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="channel groups"):
        PixelCNN(3, 256, hidden=2, layers=1)

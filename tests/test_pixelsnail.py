"""PixelSNAIL against ground truth: the exact dependency field (every earlier sub-pixel for a softmax,
every earlier pixel for the mixture, with a label, float64 Jacobians), normalisation over every image,
the paper preset's sizes, and a CIFAR-10 and a binarized-MNIST smoke run through train.py and sample.py.
Cached against naive sampling: test_sampling.py and test_conditioning.py (NETS, ARCHS)."""

from __future__ import annotations

import itertools
import json

import hydra
import numpy as np
import pytest
import torch
from dependency import dependency_matrix
from support import requires_data
from test_cli import assert_ok, run
from test_configs import compose_train
from test_gated_pixelcnn import WithLabel
from test_pixelcnn_pp import MIXTURE, earlier_pixels, pixel_dependencies

from pixel_lightning.models import AutoregressiveImageModel
from pixel_lightning.models.pixelsnail import PixelSNAIL

SIZES = {"hidden": 12, "layers": 2, "resnets": 1, "key_channels": 4, "heads": 2}


def snail(channels: int, levels: int, output: dict | None = None, classes: int = 0, **net) -> PixelSNAIL:
    torch.manual_seed(0)
    net = PixelSNAIL(channels, levels, classes=classes, output=output, **SIZES | net)
    if classes:
        with torch.no_grad():
            for embedding in net.label_biases.embeddings:
                torch.nn.init.normal_(embedding.weight)
    return net


@pytest.mark.parametrize("channels,levels,height,width", [(3, 4, 4, 5), (1, 2, 5, 4)], ids=["rgb", "binary"])
def test_every_sub_pixel_depends_on_exactly_every_earlier_one_with_a_label(channels, levels, height, width):
    # The attention reaches every earlier pixel (the convs alone reach a few); within a pixel, G reads
    # R and B reads R and G; nothing reads its own sub-pixel or a later one.
    net = snail(channels, levels, classes=10)
    deps, cross_batch = dependency_matrix(WithLabel(net, torch.tensor([1, 8])), channels, height, width)
    earlier = torch.ones_like(deps).tril(-1)  # generation order: raster, then R, G, B
    assert not cross_batch
    assert torch.equal(deps, earlier), (deps ^ earlier).nonzero()[:5].tolist()


@pytest.mark.parametrize("channels,height,width", [(3, 4, 5), (1, 5, 3)])
def test_mixture_outputs_depend_on_exactly_every_earlier_pixel_with_a_label(channels, height, width):
    net = snail(channels, 256, output=MIXTURE, classes=10)
    deps = pixel_dependencies(WithLabel(net, torch.tensor([1, 8])), channels, height, width)
    assert torch.equal(deps, earlier_pixels(height, width)), (deps ^ earlier_pixels(height, width)).nonzero()[:5]


def model(channels: int, levels: int, height: int, width: int, output: dict | None = None) -> AutoregressiveImageModel:
    torch.manual_seed(0)
    return AutoregressiveImageModel(
        net={"_target_": "pixel_lightning.models.pixelsnail.PixelSNAIL", "channels": channels, "levels": levels}
        | SIZES,
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
        data={"channels": channels, "height": height, "width": width, "levels": levels},
        output=output,
    ).double()


@pytest.mark.parametrize(
    "channels,levels,height,width,output",
    [(1, 2, 2, 2, None), (3, 3, 1, 2, None), (1, 32, 1, 3, MIXTURE), (1, 32, 3, 1, MIXTURE)],
    ids=["binary-2x2", "rgb-softmax-1x2", "mixture-1x3", "mixture-3x1"],
)
def test_probabilities_of_all_images_sum_to_one(channels, levels, height, width, output):
    m = model(channels, levels, height, width, output)
    with torch.no_grad():  # large weights: a leak would not cancel out
        for p in m.net.parameters():
            p.mul_(2.0)
    dims = channels * height * width
    images = torch.tensor(list(itertools.product(range(levels), repeat=dims))).view(-1, height, width, channels)
    with torch.no_grad():
        total = m.log_prob(images.permute(0, 3, 1, 2)).exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-9)


def test_paper_preset_has_the_reference_codes_sizes(tmp_path):
    cfg = compose_train(["experiment=paper_cifar_pixelsnail"], tmp_path)
    net = hydra.utils.instantiate(cfg.model).net
    block = net.blocks[0]
    assert (len(net.blocks), len(block.resnets), net.head.in_channels) == (12, 4, 256)
    assert (block.key_channels, block.value_channels, block.heads, block.resnets[0].dropout.p) == (16, 128, 1, 0.5)
    assert net.distribution.components == 10 and cfg.data.batch_size == 8 and cfg.optimizer.lr == 1e-3


def test_mnist_preset_builds_the_bernoulli_net(tmp_path):
    cfg = compose_train(["experiment=paper_mnist_pixelsnail"], tmp_path)
    module = hydra.utils.instantiate(cfg.model)
    assert (len(module.net.blocks), module.net.head.in_channels, module.net.head.out_channels) == (8, 64, 1)
    assert module.logits(torch.zeros(2, 1, 28, 28, dtype=torch.long)).shape == (2, 1, 28, 28)


def test_unsplittable_heads_are_refused():
    with pytest.raises(ValueError, match="split evenly into heads=3"):
        PixelSNAIL(1, 2, hidden=8, key_channels=4, heads=3)


@pytest.mark.slow
@requires_data
@pytest.mark.parametrize("data,shape", [("cifar10", (3, 32, 32)), ("binarized_mnist", (1, 28, 28))])
def test_smoke_run_trains_and_samples_cached(data, shape, tmp_path):
    tiny = ["model.net.hidden=8", "model.net.layers=1", "model.net.resnets=1", "model.output.components=2",
            "data.batch_size=4"]  # fmt: skip
    budget = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
              "callbacks.sample_grid.num_samples=1", "fid.num_samples=0", "logger=csv"]  # fmt: skip
    env = {"OMP_NUM_THREADS": "1"}
    result = run("train.py", "model=pixelsnail", f"data={data}", "debug=smoke", *tiny, *budget,
                 f"hydra.run.dir={tmp_path / 'train'}", env=env)  # fmt: skip
    assert_ok(result)
    record = json.loads((tmp_path / "train" / "record.json").read_text())
    assert record["model"] == "pixelsnail" and 0 < record["test_bpd"] < 16
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    result = run("sample.py", f"ckpt_path={checkpoint}", "method=cached", "num_samples=2", "save_npy=true",
                 "device=cpu", f"hydra.run.dir={tmp_path / 'sample'}", env=env)  # fmt: skip
    assert_ok(result)
    assert np.load(tmp_path / "sample" / "samples.npy").shape == (2, *shape)

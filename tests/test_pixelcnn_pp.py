"""PixelCNN++ and the per-pixel output in any net: exact causality pixel by pixel (float64
Jacobians), normalisation over every image, Fast PixelCNN++'s cached outputs against the full net's,
cached against naive sampling, checkpoints, and a CIFAR-10 smoke run through train.py, eval.py and
sample.py."""

from __future__ import annotations

import itertools
import json
import math

import hydra
import numpy as np
import pytest
import torch
from support import requires_data, sample_both_ways, tiny_model
from test_cli import assert_ok, run
from test_configs import compose_train

from pixel_lightning.checkpoint import check_fits, model_from_checkpoint
from pixel_lightning.models import AutoregressiveImageModel
from pixel_lightning.models.pixelcnn import PixelCNN
from pixel_lightning.models.pixelcnn_pp import PixelCNNpp

MIXTURE = {"kind": "logistic_mixture", "components": 2}


def pixel_dependencies(net: torch.nn.Module, channels: int, height: int, width: int) -> torch.Tensor:
    """D (HW, HW) in raster order: D[i, j] iff any output of pixel i has a non-zero gradient with
    respect to any channel of input pixel j, for two random float64 images (none across them)."""
    net = net.double().eval()
    x = torch.rand(2, channels, height, width, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(net, x, vectorize=True)  # (2, *params, H, W, 2, C, H, W)
    nonzero = jac.ne(0).reshape(2, -1, height, width, 2, channels, height, width).any(1).any(4)
    assert not nonzero[0, :, :, 1].any() and not nonzero[1, :, :, 0].any(), "an image depends on another"
    return (nonzero[0, :, :, 0] | nonzero[1, :, :, 1]).reshape(height * width, height * width)


def earlier_pixels(height: int, width: int) -> torch.Tensor:
    return torch.ones(height * width, height * width, dtype=torch.bool).tril(-1)


@pytest.mark.parametrize(
    "channels,levels,output,height,width",
    [(3, 256, MIXTURE, 5, 6), (3, 256, MIXTURE, 4, 4), (1, 256, MIXTURE, 7, 5), (1, 2, None, 5, 5), (1, 4, None, 6, 5)],
)
def test_pixelcnn_pp_is_exactly_causal_pixel_by_pixel_with_the_full_field(channels, levels, output, height, width):
    # Odd sizes too: the halved maps round up and the doubled ones are cropped back.
    torch.manual_seed(0)
    net = PixelCNNpp(channels, levels, filters=4, blocks=1, output=output)
    deps = pixel_dependencies(net, channels, height, width)
    assert torch.equal(deps, earlier_pixels(height, width)), (deps ^ earlier_pixels(height, width)).nonzero()[:5]


@pytest.mark.parametrize("skip", [False, True])
def test_pixelcnn_with_the_mixture_reads_earlier_pixels_only(skip):
    # The mixture's parameters come from the first channel group, which sees no channel of its own
    # pixel; without that mask they would read the pixel's R (and G) that they are to predict.
    torch.manual_seed(0)
    net = PixelCNN(3, 256, hidden=12, layers=2, output_hidden=12, skip=skip, output=MIXTURE)
    deps = pixel_dependencies(net, 3, 5, 5)
    assert not torch.triu(deps).any()
    for pixel in range(1, 25):  # the pixel to the left (or at the row's start, the one above) at least
        assert deps[pixel, pixel - 1 if pixel % 5 else pixel - 5]


@pytest.mark.parametrize("arch,net", [("pixelcnn_pp.PixelCNNpp", {"filters": 4, "blocks": 0}),
                                      ("pixelcnn.PixelCNN", {"layers": 1})])  # fmt: skip
@pytest.mark.parametrize("height,width", [(1, 3), (3, 1)])
def test_probabilities_of_all_images_sum_to_one(arch, net, height, width):
    torch.manual_seed(0)
    model = mixture_model(1, 32, height, width, arch, **net)
    images = torch.tensor(list(itertools.product(range(32), repeat=3))).view(-1, 1, height, width)
    assert model.log_prob(images).exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def mixture_model(channels: int, levels: int, height: int, width: int, arch: str, **net) -> AutoregressiveImageModel:
    """A float64 model with the logistic mixture output, its weights made large so that draws
    depend strongly on what was drawn before."""
    config = {"_target_": f"pixel_lightning.models.{arch}", "channels": channels, "levels": levels} | net
    model = AutoregressiveImageModel(
        net=config,
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
        data={"channels": channels, "height": height, "width": width, "levels": levels},
        output=MIXTURE,
    ).double()
    with torch.no_grad():
        for p in model.net.parameters():
            p.mul_(2.0)
    return model


@pytest.mark.parametrize("arch,net", [("pixelcnn.PixelCNN", {"hidden": 6, "layers": 2, "output_hidden": 6}),
                                      ("pixelcnn_pp.PixelCNNpp", {"filters": 4, "blocks": 1})])  # fmt: skip
def test_cached_sampling_and_completion_return_the_levels_of_naive_sampling(arch, net):
    # PixelCNN caches per layer (models/cached.py), PixelCNN++ per layer and resolution (Fast PixelCNN++).
    torch.manual_seed(0)
    model = mixture_model(3, 256, 4, 5, arch, **net)
    naive, cached = sample_both_ways(model, lambda method, g: model.sample(3, generator=g, method=method))
    assert torch.equal(naive, cached)
    assert len({tuple(image.flatten().tolist()) for image in cached}) == 3
    originals = torch.randint(0, 256, (2, 3, 4, 5), generator=torch.Generator().manual_seed(1))
    naive, cached = sample_both_ways(model, lambda method, g: model.complete(originals, 2, 0.8, g, method))
    assert torch.equal(naive, cached) and torch.equal(cached[:, :, :2], originals[:, :, :2])


@pytest.mark.parametrize(
    "channels,levels,output,height,width,blocks",
    [(3, 256, MIXTURE, 9, 11, 1), (3, 256, MIXTURE, 8, 8, 2), (1, 2, None, 8, 5, 0), (1, 4, None, 7, 9, 1)],
)
def test_fast_pixelcnn_pp_gives_the_full_nets_parameters_at_every_pixel(
    channels, levels, output, height, width, blocks
):
    """Fed in raster order as sampling feeds it (each pixel drawn after its call, noise after it, so a
    cache that reads a later pixel fails), each call returns the full net's outputs at its pixel, to
    1e-10 in float64. Sizes with every resolution's positions (9x11 -> 5x6 -> 3x3, rounded up), and
    0 to 2 blocks per resolution; one-channel data with the Bernoulli and the softmax heads."""
    torch.manual_seed(0)
    net = PixelCNNpp(channels, levels, filters=5, blocks=blocks, output=output).double().eval()
    with torch.no_grad():  # large weights: every layer's error would show
        for p in net.parameters():
            p.mul_(2.0)
    image, noise = (
        2 * torch.rand(2, 3, channels, height, width, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        - 1
    )
    inputs = noise.clone()
    sampler = net.cached_sampler(3, height, width)
    with torch.no_grad():
        for row, col in itertools.product(range(height), range(width)):
            expected = net(inputs)[..., row, col]
            for _ in range(channels):  # once per channel, as sampling calls it: the same outputs each time
                torch.testing.assert_close(sampler(inputs, row, col), expected, rtol=0, atol=1e-10)
            inputs[:, :, row, col] = image[:, :, row, col]


def test_cached_sampling_never_runs_the_whole_net(monkeypatch):
    # method=cached (the default) is Fast PixelCNN++, not the naive path: no full pass at all.
    model = mixture_model(3, 256, 4, 5, "pixelcnn_pp.PixelCNNpp", filters=4, blocks=1)
    monkeypatch.setattr(model.net, "forward", lambda *_, **__: pytest.fail("the whole net ran"))
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 3, 4, 5)


@pytest.mark.parametrize(
    "overrides,components",
    [(["model.output=logistic_mixture"], 10), (["model/output=logistic_mixture", "model.output.components=3"], 3)],
)
def test_the_output_setting_on_the_command_line_gives_pixelcnn_the_mixture(overrides, components, tmp_path):
    model = hydra.utils.instantiate(compose_train(["data=cifar10", *overrides], tmp_path).model)
    assert model.output.components == components and model.hparams["output"]["components"] == components
    assert model.logits(torch.zeros(1, 3, 32, 32, dtype=torch.long)).shape == (1, components * 10, 32, 32)


def test_paper_preset_has_the_reference_codes_sizes_and_training(tmp_path):
    cfg = compose_train(["experiment=paper_cifar_pixelcnn_pp"], tmp_path)
    model = hydra.utils.instantiate(cfg.model)
    assert (len(model.net.up_u[0]), model.net.u_input.out_channels, model.output.components) == (5, 160, 10)
    assert model.net.up_u[0][0].dropout.p == 0.5 and cfg.data.batch_size == 96
    assert cfg.optimizer.lr == 1e-3 and list(cfg.optimizer.betas) == [0.95, 0.9995]
    assert cfg.model.scheduler.gamma == pytest.approx(0.999995 ** math.ceil(45_000 / 96), abs=1e-6)


def test_pixelcnn_pp_refuses_a_per_channel_output_for_rgb():
    with pytest.raises(ValueError, match="use model.output=logistic_mixture"):
        PixelCNNpp(3, 256)


def test_checkpoint_keeps_the_output_and_one_without_it_is_categorical(tmp_path):
    model = mixture_model(3, 256, 4, 4, "pixelcnn_pp.PixelCNNpp", filters=4, blocks=0).float()
    checkpoint = {"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}
    assert checkpoint["hyper_parameters"]["output"] == MIXTURE
    loaded = model_from_checkpoint(checkpoint, tmp_path / "x.ckpt", sampling=True)
    images = torch.randint(0, 256, (2, 3, 4, 4))
    torch.testing.assert_close(loaded.log_prob(images), model.eval().log_prob(images))
    # a checkpoint written before the setting existed: a PixelCNN with the softmax
    old = tiny_model(3, 4)
    hparams = {key: value for key, value in old.hparams.items() if key != "output"}
    rebuilt = model_from_checkpoint({"hyper_parameters": hparams, "state_dict": old.state_dict()}, "old.ckpt")
    assert rebuilt.hparams["output"] is None and rebuilt.output.params_per_channel == 4
    check_fits(hparams, {"output": {"kind": "categorical"}}, "old.ckpt", fix="")  # resumes with the default


@requires_data
def test_cifar10_smoke_run_through_train_eval_and_sample(tmp_path):
    tiny = ["model.net.filters=4", "model.net.blocks=0", "model.output.components=2", "data.batch_size=4"]
    budget = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
              "callbacks.sample_grid.num_samples=1", "fid.num_samples=0", "logger=csv"]  # fmt: skip
    env = {"OMP_NUM_THREADS": "1"}
    result = run("train.py", "model=pixelcnn_pp", "data=cifar10", "debug=smoke", *tiny, *budget,
                 f"hydra.run.dir={tmp_path / 'train'}", env=env)  # fmt: skip
    assert_ok(result)
    record = json.loads((tmp_path / "train" / "record.json").read_text())
    assert record["model"] == "pixelcnn_pp" and 0 < record["test_bpd"] < 16
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    result = run("eval.py", f"ckpt_path={checkpoint}", "data.eval_batch_size=4", "trainer.limit_test_batches=1",
                 "fid.num_samples=0", "logger=csv", f"hydra.run.dir={tmp_path / 'eval'}",
                 env=env)  # fmt: skip
    assert_ok(result)
    evaluated = json.loads((tmp_path / "eval" / "record.json").read_text())
    assert evaluated["test_bpd"] == pytest.approx(record["test_bpd"], rel=1e-4)
    result = run("sample.py", f"ckpt_path={checkpoint}", "mode=complete", "completion.num_images=1",
                 "completion.samples_per_image=1", "completion.observed_rows=30", "save_npy=true", "device=cpu",
                 f"hydra.run.dir={tmp_path / 'sample'}", env=env)  # fmt: skip
    assert_ok(result)
    completed = np.load(tmp_path / "sample" / "completes.npy")
    assert completed.shape == (3, 3, 32, 32) and completed.max() <= 255

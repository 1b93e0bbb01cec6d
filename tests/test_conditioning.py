"""Class-conditional models p(x | y) against ground truth: the label reaches every position,
causality is unchanged, each label's distribution is normalised and labels differ; the data
modules' labels are the dataset's (binarized MNIST's order checked against MNIST's images)."""

from __future__ import annotations

import itertools
import json

import hydra
import numpy as np
import pytest
import torch
from dependency import assert_causal
from omegaconf import OmegaConf
from PIL import Image
from support import real_data_dir, requires_data, sample_both_ways, tiny_model
from test_cli import assert_ok, assert_user_error, run
from test_configs import compose_train
from test_data import amat_bytes, grey_images, idx_bytes, write
from test_gated_pixelcnn import WithLabel
from test_pixelcnn_pp import MIXTURE, earlier_pixels, pixel_dependencies

from pixel_lightning.data import BinarizedMNISTDataModule, CIFAR10DataModule, MNISTDataModule
from pixel_lightning.errors import DataError, UserError
from pixel_lightning.evaluation.compare import write_comparison
from pixel_lightning.evaluation.compare.tables import model_table, rankings, run_table
from pixel_lightning.evaluation.feature_net import FeatureNet, to_unit
from pixel_lightning.evaluation.fid import draw_samples, label_accuracy
from pixel_lightning.models import AutoregressiveImageModel
from pixel_lightning.records import blank_record, quality_line, write_record
from pixel_lightning.sample import check_label_settings, complete_grid, sample_labels

PIXELCNN_PP = "pixelcnn_pp.PixelCNNpp"
PIXELSNAIL = "pixelsnail.PixelSNAIL"
ARCHS = [
    "pixelcnn.PixelCNN",
    "row_lstm.RowLSTM",
    "diagonal_bilstm.DiagonalBiLSTM",
    "spatial_lstm.SpatialLSTM",
    "gated_pixelcnn.GatedPixelCNN",
    PIXELCNN_PP,
    PIXELSNAIL,
]


def sizes(arch: str) -> dict:
    """Tiny sizes of the net `arch`."""
    if arch == PIXELCNN_PP:
        return {"filters": 4, "blocks": 1}
    if arch == PIXELSNAIL:
        return {"hidden": 12, "layers": 2, "resnets": 1, "key_channels": 4}
    return {"hidden": 12, "layers": 2, "output_hidden": 24}


def conditional_model(
    arch: str, channels: int = 1, levels: int = 2, height: int = 4, width: int = 4, output: dict | None = None,
    **net,
):  # fmt: skip
    """A float64 class-conditional model (10 classes) with random label embeddings."""
    torch.manual_seed(0)
    model = AutoregressiveImageModel(
        net={"_target_": f"pixel_lightning.models.{arch}", "channels": channels, "levels": levels} | sizes(arch) | net,
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
        data={"channels": channels, "height": height, "width": width, "levels": levels, "classes": 10},
        condition="class",
        output=output,
    ).double()
    with torch.no_grad():
        for embedding in model.net.label_biases.embeddings:
            torch.nn.init.normal_(embedding.weight)
    return model


@pytest.mark.parametrize("arch", ARCHS)
def test_the_label_reaches_the_first_and_the_last_position_through_every_layer(arch):
    model = conditional_model(arch, height=4, width=5)
    images = torch.randint(0, 2, (2, 1, 4, 5), generator=torch.Generator().manual_seed(0))
    label = torch.tensor([3, 6])
    # PixelSNAIL's keys and values of a pixel serve later pixels only, and a query weighs two keys from (0, 2) on.
    first = (0, 2) if arch == PIXELSNAIL else (0, 0)
    for position in (first, (3, 4)):
        model.zero_grad()
        model.logits(images, label)[..., position[0], position[1]].sum().backward()
        for i, embedding in enumerate(model.net.label_biases.embeddings):
            used = embedding.weight.grad[label]  # (2, width): the rows of the two labels
            assert used.ne(0).any(dim=1).all(), f"layer {i}'s label bias does not reach position {position}"


@pytest.mark.parametrize("arch", ARCHS)
def test_conditioning_keeps_exact_causality(arch):
    if arch == PIXELCNN_PP:  # whole pixels (RGB needs the mixture): exactly the earlier pixels, the full field
        model = conditional_model(arch, channels=3, levels=256, output=MIXTURE)
        deps = pixel_dependencies(WithLabel(model.net, torch.tensor([1, 8])), 3, 4, 5)
        assert torch.equal(deps, earlier_pixels(4, 5)), (deps ^ earlier_pixels(4, 5)).nonzero()[:5]
        return
    model = conditional_model(arch, channels=3, levels=4)
    assert_causal(WithLabel(model.net, torch.tensor([1, 8])), 3, height=4, width=5)


@pytest.mark.parametrize("arch", ARCHS)
def test_each_labels_2x2_distribution_sums_to_one_and_labels_differ(arch):
    model = conditional_model(arch, height=2, width=2)
    images = torch.tensor(list(itertools.product(range(2), repeat=4))).view(-1, 1, 2, 2)  # all 16 images
    labels = torch.arange(10).repeat_interleave(len(images))
    with torch.no_grad():
        p = model.log_prob(images.repeat(10, 1, 1, 1), labels).exp().view(10, len(images))  # (label, image)
    torch.testing.assert_close(p.sum(1), torch.ones(10, dtype=p.dtype), rtol=0, atol=1e-9)
    assert (p[0] - p[1]).abs().max() > 1e-6, "labels 0 and 1 give the same distribution"  # float64: exact


@pytest.mark.parametrize("arch", [arch for arch in ARCHS if arch != "spatial_lstm.SpatialLSTM"])
def test_cached_sampling_and_completion_with_labels_return_the_levels_of_naive(arch):
    levels, output = (256, MIXTURE) if arch == PIXELCNN_PP else (4, None)  # PixelCNN++'s RGB needs the mixture
    model = conditional_model(arch, channels=3, levels=levels, height=4, width=5, output=output)
    with torch.no_grad():  # large weights: every draw depends strongly on what came before, and on the label
        for p in model.net.parameters():
            p.mul_(2.0)
    label = torch.tensor([0, 3, 3, 9])
    originals = torch.randint(0, levels, (4, 3, 4, 5), generator=torch.Generator().manual_seed(1))
    for observed in (0, 2):
        naive, cached = sample_both_ways(
            model, lambda method, g: model.complete(originals, observed, generator=g, method=method, label=label)
        )
        assert torch.equal(naive, cached), f"{(naive != cached).sum()} of {naive.numel()} levels differ"
    other = model.complete(originals, 2, generator=torch.Generator().manual_seed(3), label=label.flip(0))
    assert not torch.equal(other, cached)  # the labels matter


def test_pixelcnn_pp_given_a_label_is_the_unconditional_net_with_the_labels_gate_biases():
    # The paper's form, closed: a label adds its embedding to every block's (a, b), so the
    # conditional net given y is the unconditional one with y's embeddings added to the conv_out
    # biases, block by block in the order forward runs them. Its likelihood and its (naive) samples
    # and completions must be those of that net; without y's embeddings the checkpoint keys are the
    # unconditional net's, so its checkpoints load unchanged.
    conditional = conditional_model(PIXELCNN_PP, channels=3, levels=256, output=MIXTURE)
    plain = AutoregressiveImageModel(
        net={"_target_": f"pixel_lightning.models.{PIXELCNN_PP}", "channels": 3, "levels": 256} | sizes(PIXELCNN_PP),
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
        data={"channels": 3, "height": 4, "width": 4, "levels": 256},
        output=MIXTURE,
    ).double()
    weights = conditional.state_dict()
    embeddings = [weights.pop(f"net.label_biases.embeddings.{i}.weight") for i in range(conditional.net.block_count)]
    plain.load_state_dict(weights)  # strict: the same keys
    net = plain.net
    stages = [*zip(net.up_u, net.up_ul), *zip(net.down_u, net.down_ul)]
    in_call_order = [block for u_stage, ul_stage in stages for pair in zip(u_stage, ul_stage) for block in pair]
    assert len(in_call_order) == len(embeddings) == 16  # blocks=1: 2 x 3 up, 2 x (1 + 2 + 2) down
    with torch.no_grad():
        for block, embedding in zip(in_call_order, embeddings):
            block.conv_out.bias += embedding[7]
    sevens = torch.full((2,), 7)
    images = torch.randint(0, 256, (2, 3, 4, 4), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(conditional.log_prob(images, sevens), plain.log_prob(images), rtol=1e-12, atol=0)
    for observed in (0, 2):  # sample and complete
        given_label, plain_draws = (
            model.complete(images, observed, generator=torch.Generator().manual_seed(3), method="naive", **label)
            for model, label in ((conditional, {"label": sevens}), (plain, {}))
        )
        assert torch.equal(given_label, plain_draws)
    twos = conditional.complete(images, 2, generator=torch.Generator().manual_seed(3), label=torch.full((2,), 2))
    assert not torch.equal(twos, given_label)  # the label matters (method=cached, the default)


def test_model_condition_class_on_the_command_line_makes_pixelcnn_pp_conditional(tmp_path):
    cfg = compose_train(["model=pixelcnn_pp", "model.condition=class", "data=cifar10"], tmp_path)
    assert cfg.data.condition == "class"  # the data module then yields (image, label) pairs
    model = hydra.utils.instantiate(cfg.model)
    assert len(model.net.label_biases.embeddings) == model.net.block_count == 16  # blocks=1: 6 up, 10 down
    assert model.log_prob(torch.zeros(2, 3, 32, 32, dtype=torch.long), torch.tensor([0, 9])).shape == (2,)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_label_is_required_exactly_when_conditional(arch):
    model = conditional_model(arch)
    with pytest.raises(ValueError, match="pass label"):
        model.log_prob(torch.zeros(1, 1, 4, 4, dtype=torch.long))
    unconditional = type(model.net)(1, 2, **sizes(arch))
    with pytest.raises(ValueError, match="takes no label"):
        unconditional(torch.zeros(1, 1, 4, 4), label=torch.zeros(1, dtype=torch.long))


def test_a_condition_other_than_class_is_refused():
    with pytest.raises(UserError, match="model.condition must be null"):
        AutoregressiveImageModel(
            net={"_target_": "pixel_lightning.models.pixelcnn.PixelCNN", "channels": 1, "levels": 2},
            optimizer={"_target_": "torch.optim.Adam"},
            data={"channels": 1, "height": 4, "width": 4, "levels": 2},
            condition="label",
        )


# ---------------------------------------------------------------- labelled data


@pytest.fixture
def labelled_mnist(tmp_path, monkeypatch):
    """Tiny MNIST with labels: 12 train (binarized MNIST: 6 train, 3 valid), 4 test."""
    monkeypatch.setattr(MNISTDataModule, "expected_sizes", {"train": 12, "test": 4})
    monkeypatch.setattr(BinarizedMNISTDataModule, "expected_sizes", {"train": 6, "valid": 3, "test": 4})
    # digit-like: about half of each image blank (0), as MNIST's background
    grey = {
        split: images * (grey_images(len(images), 9) > 128)
        for split, images in (("train", grey_images(12, 1)), ("t10k", grey_images(4, 2)))
    }
    labels = {"train": np.arange(12) % 10, "t10k": np.array([7, 2, 1, 0])}
    for split in grey:
        write(tmp_path / f"MNIST/raw/{split}-images-idx3-ubyte", idx_bytes(grey[split][:, 0]))
        write(tmp_path / f"MNIST/raw/{split}-labels-idx1-ubyte", idx_bytes(labels[split]))
    return tmp_path, grey, labels


def write_binarized(root, grey: dict[str, np.ndarray]) -> None:
    """Binarized MNIST files drawn as Bernoulli(grey / 255) from MNIST's images in MNIST's order."""
    rng = np.random.default_rng(0)
    sources = {"train": grey["train"][:6], "valid": grey["train"][6:9], "test": grey["t10k"]}
    for split, images in sources.items():
        binary = (rng.random(images.shape) < images / 255).astype(np.uint8)
        write(root / f"binarized_mnist/binarized_mnist_{split}.amat", amat_bytes(binary))


def test_mnist_items_are_images_with_their_labels(labelled_mnist):
    root, grey, labels = labelled_mnist
    datamodule = MNISTDataModule(root, val_size=4, download=False, condition="class")
    datamodule.setup()
    train = [datamodule.train_dataset[i] for i in range(8)] + [datamodule.val_dataset[i] for i in range(4)]
    by_image = {image.numpy().tobytes(): int(label) for image, label in train}
    assert by_image == {image.tobytes(): int(label) for image, label in zip(grey["train"], labels["train"])}
    assert [int(datamodule.test_dataset[i][1]) for i in range(4)] == labels["t10k"].tolist()
    images, batch_labels = next(iter(datamodule.test_dataloader()))
    assert images.shape == (4, 1, 28, 28) and batch_labels.tolist() == [7, 2, 1, 0]


def test_binarized_mnist_in_mnists_order_gets_mnists_labels(labelled_mnist):
    root, grey, labels = labelled_mnist
    write_binarized(root, grey)
    datamodule = BinarizedMNISTDataModule(root, download=False, condition="class")
    datamodule.setup()
    got = [
        [int(split[i][1]) for i in range(len(split))]
        for split in (datamodule.train_dataset, datamodule.val_dataset, datamodule.test_dataset)
    ]
    assert got == [labels["train"][:6].tolist(), labels["train"][6:9].tolist(), labels["t10k"].tolist()]


def test_binarized_mnist_out_of_mnists_order_is_refused(labelled_mnist):
    root, grey, _ = labelled_mnist
    shuffled = dict(grey, train=grey["train"][::-1])  # the binarized train file then holds other images
    write_binarized(root, shuffled)
    datamodule = BinarizedMNISTDataModule(root, download=False, condition="class")
    with pytest.raises(DataError, match="binarized MNIST train file .* is not in MNIST's order"):
        datamodule.setup()
    BinarizedMNISTDataModule(root, download=False).setup()  # unconditional: labels are not needed


@pytest.mark.slow
@requires_data
def test_the_shared_binarized_mnist_is_checked_against_the_shared_mnist():
    # The shared files' training split is not in MNIST's order (its test split is MNIST's test
    # set sorted by label, data/README.md), so their labels are refused, not guessed.
    with pytest.raises(DataError, match="train file .* is not in MNIST's order"):
        BinarizedMNISTDataModule(real_data_dir(), download=False, condition="class").setup()


@pytest.mark.slow
@requires_data
def test_cifar10_test_labels_are_the_files():
    datamodule = CIFAR10DataModule(real_data_dir(), download=False, condition="class")
    datamodule.setup()
    labels = np.load(real_data_dir() / "cifar10/cifar10_test.npz")["y"]
    assert [int(datamodule.test_dataset[i][1]) for i in range(0, 10000, 997)] == labels[::997].tolist()


# ---------------------------------------------------------------- sampling with labels


def sample_settings(**settings):
    return OmegaConf.create(
        {
            "mode": "sample",
            "label": None,
            "labels": None,
            "num_samples": 3,
            "nrow": None,
            "ckpt_path": "run/last.ckpt",
            **settings,
        }
    )


def test_sample_labels_are_one_class_or_one_row_per_class():
    model = conditional_model("pixelcnn.PixelCNN")
    labels, nrow = sample_labels(sample_settings(label=7), model)
    assert labels.tolist() == [7, 7, 7] and nrow is None
    for settings in (sample_settings(labels="all"), sample_settings()):  # labels=all is a conditional model's default
        labels, nrow = sample_labels(settings, model)
        assert labels.tolist() == [c for c in range(10) for _ in range(3)] and nrow == 3


@pytest.mark.parametrize(
    "settings, problem",
    [
        ({"label": 10}, "label=10 is not a class of this checkpoint's model: its classes are numbered 0 to 9"),
        ({"label": 3, "unconditional": True}, "need a class-conditional checkpoint .* holds an unconditional model"),
        ({"labels": "all", "unconditional": True}, "need a class-conditional checkpoint"),
        ({"label": -1}, "label must be an integer of at least 0"),
        ({"labels": "some"}, "labels must be all"),
        ({"label": 2, "labels": "all"}, "both given"),
        ({"label": 2, "mode": "complete"}, "mode=complete keeps each test image's own label"),
    ],
)
def test_sample_label_settings_are_refused_with_one_paragraph(settings, problem):
    unconditional = settings.pop("unconditional", False)
    model = tiny_model() if unconditional else conditional_model("pixelcnn.PixelCNN")
    cfg = sample_settings(**settings)
    with pytest.raises(UserError, match=problem) as refused:
        check_label_settings(cfg)
        sample_labels(cfg, model)
    assert "\n" not in str(refused.value)


def test_completion_keeps_each_originals_label():
    model = conditional_model("gated_pixelcnn.GatedPixelCNN", height=3, width=3)
    originals = torch.randint(0, 2, (2, 1, 3, 3), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([4, 9])
    grid = complete_grid(model, originals, 1, 2, torch.Generator().manual_seed(1), labels=labels)
    expected = model.complete(
        originals.repeat_interleave(2, 0),
        1,
        generator=torch.Generator().manual_seed(1),
        label=labels.repeat_interleave(2),
    )
    assert torch.equal(grid.view(2, 4, 1, 3, 3)[:, 1:3].flatten(0, 1), expected)


def test_conditional_dcgan_trains_a_step_and_samples_the_asked_classes():
    from pixel_lightning.models import DCGAN

    torch.manual_seed(0)
    gan = DCGAN(
        data={"channels": 1, "height": 8, "width": 8, "levels": 2, "classes": 10},
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
        features=4,
        latent=6,
        condition="class",
    )
    label = torch.tensor([0, 5])
    z = gan.noise(2, torch.Generator().manual_seed(0))
    gan.eval()
    with torch.no_grad():  # the same noise, other classes: other images
        assert not torch.equal(gan.generate(z, label), gan.generate(z, label.flip(0)))
    gan.zero_grad()
    gan.discriminate(gan.generate(z, label), label).sum().backward()
    assert gan.label_to_generator.weight.grad[label].ne(0).any(1).all()
    assert gan.label_to_discriminator.weight.grad[label].ne(0).any(1).all()
    assert gan.sample(2, generator=torch.Generator().manual_seed(0), label=label).shape == (2, 1, 8, 8)


# ---------------------------------------------------------------- does the label work: measured and reported


def test_label_accuracy_is_the_share_of_samples_classified_as_their_label():
    torch.manual_seed(0)
    net = FeatureNet(1).eval()
    images = torch.randint(0, 2, (40, 1, 28, 28))
    predicted = net.classify(to_unit(images, 2)).argmax(1)
    wrong = (predicted + 1) % 10
    half = torch.cat([predicted[:10], wrong[10:20], predicted[20:25], wrong[25:]])  # 15 of 40 right
    logits = net.classify(to_unit(images, 2))
    assert [label_accuracy(logits, labels) for labels in (predicted, wrong, half)] == [1.0, 0.0, 15 / 40]


def test_conditional_samples_are_drawn_in_equal_numbers_per_class_batch_by_batch():
    class Recorder(torch.nn.Module):
        classes, device, asked = 10, torch.device("cpu"), []

        def sample(self, n, temperature, generator, label):
            self.asked.append(label.tolist())
            return label.view(n, 1, 1, 1).expand(n, 1, 2, 2)

    samples, _ = draw_samples(Recorder(), 25, 8, 1.0, 0, labels=torch.arange(25) % 10)
    assert Recorder.asked == [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 0, 1, 2, 3], [4]]
    assert samples[:, 0, 0, 0].tolist() == (torch.arange(25) % 10).tolist()


def test_comparison_marks_conditional_nll_and_ranks_it_apart(tmp_path):
    measured = {"dataset": "mnist", "task": "train", "status": "finished", "train_images_per_s": 1.0}
    runs = {
        "a0": blank_record(model="a", test_nll=90.0, test_bpd=0.17, seed=0, **measured),
        "a1": blank_record(model="a", test_nll=91.0, test_bpd=0.18, seed=1, **measured),
        "b0": blank_record(
            model="b", test_nll=80.0, test_bpd=0.15, condition="class", label_accuracy=0.875, seed=0, **measured
        ),
        "b1": blank_record(
            model="b", test_nll=81.0, test_bpd=0.16, condition="class", label_accuracy=0.625, seed=1, **measured
        ),
        "c0": blank_record(model="c", test_nll=95.0, test_bpd=0.19, seed=0, **measured),
        "c1": blank_record(model="c", test_nll=96.0, test_bpd=0.20, seed=1, **measured),
    }
    for name, record in runs.items():
        write_record(tmp_path / name, record)
    comparison = write_comparison([tmp_path])
    rows, groups = comparison["rows"], comparison["groups"]
    assert "b (\\| y)" in comparison["text"]  # Markdown escapes the bar
    assert {group["model"]: group["condition"] for group in groups} == {"a": None, "b": "class", "c": None}
    columns, cells = model_table(groups, rows)
    accuracy = columns.index("label accuracy (mean ± std)")
    assert {row[0]: row[accuracy] for row in cells} == {"a": "–", "b (| y)": "75.0% ± 17.7%", "c": "–"}
    columns, cells = run_table(rows)
    nll = columns.index("test NLL (nats)")
    assert sorted(row[nll] for row in cells if row[0] == "b") == ["80.00 (| y)", "81.00 (| y)"]
    # the lower conditional NLL is ranked apart, never above p(x) in one list
    (bpd_ranking,) = [line for line in rankings(groups) if line.startswith("- mnist, test bits/dim (")]
    assert "b" not in bpd_ranking.split(":", 1)[1] and "1. a" in bpd_ranking
    assert quality_line(
        runs["b0"]
        | {
            "fid": 1.0,
            "fid_label": "FID (mnist-2level-cnn, test acc 96.0%)",
            "sample_time_per_image_s": 0.5,
            "classifier_score": 2.0,
        }
    ).endswith("; label accuracy: 87.5%")


@pytest.mark.slow
@requires_data
def test_conditional_smoke_run_records_label_accuracy_and_samples_a_class(tmp_path):
    # The "done when", on MNIST binarized by the data module (the shared binarized MNIST is refused).
    env = {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "run"
    result = run(
        "train.py",
        "model=gated_pixelcnn",
        "model.condition=class",
        "debug=smoke",
        "data=mnist",
        "data.binarize=dynamic",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
        env=env,
    )
    assert_ok(result)
    assert "conditional: -log p(x | y)" in result.stdout and "label accuracy:" in result.stdout
    record = json.loads((run_dir / "record.json").read_text())
    assert record["condition"] == "class" and 0 <= record["label_accuracy"] <= 1
    grid = Image.open(run_dir / "samples" / "epoch_000.png")  # one row per class, one image each (smoke)
    assert grid.size == (9 * 28 + 2 * 2, 10 * 9 * 28 + 11 * 2)  # enlarged 9 times: 256 px wide
    result = run(
        "sample.py",
        f"ckpt_path={run_dir}/checkpoints/last.ckpt",
        "label=7",
        "num_samples=3",
        "save_npy=true",
        f"hydra.run.dir={tmp_path / 'sevens'}",
        env=env,
    )
    assert_ok(result)
    assert np.load(tmp_path / "sevens" / "samples.npy").shape == (3, 1, 28, 28)
    refused = run(
        "sample.py",
        f"ckpt_path={run_dir}/checkpoints/last.ckpt",
        "label=10",
        f"hydra.run.dir={tmp_path / 'refused'}",
        env=env,
    )
    assert_user_error(refused, "label=10 is not a class of this checkpoint's model")

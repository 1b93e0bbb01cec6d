"""Every config in conf/ composes, resolves, and builds what it describes."""

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict
from support import REPO, requires_data

import pixel_lightning  # noqa: F401  (registers the resolvers)

CONF = REPO / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(overrides: list[str], output_dir: Path, config_name: str = "train"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)  # every interpolation must resolve
    return cfg


@pytest.mark.parametrize("data", options("data"))
@pytest.mark.parametrize("model", options("model"))
def test_each_model_builds_for_each_dataset(data, model, tmp_path):
    cfg = compose_train([f"data={data}", f"model={model}"], tmp_path)
    module = hydra.utils.instantiate(cfg.model)
    assert module.image_shape == (cfg.data.channels, cfg.data.height, cfg.data.width)
    assert module.levels == cfg.data.levels == (2 if data == "binarized_mnist" else 256)
    assert type(module.net).__module__ == f"pixel_lightning.models.{model}"


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks", "optimizer", "debug", "experiment"])
def test_every_option_of_every_group_composes(group, tmp_path):
    assert options(group), f"conf/{group} is empty"
    for option in options(group):
        cfg = compose_train([f"{group}={option}"], tmp_path)
        assert cfg.trainer._target_ == "pytorch_lightning.Trainer"


def test_experiments_build_their_models(tmp_path):
    for experiment in options("experiment"):
        cfg = compose_train([f"experiment={experiment}"], tmp_path)
        module = hydra.utils.instantiate(cfg.model)
        assert sum(p.numel() for p in module.parameters()) > 0


def test_cpu_trainer_and_callbacks_instantiate(tmp_path):
    cfg = compose_train(["trainer=cpu", "logger=csv"], tmp_path)
    callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values()]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert type(trainer.strategy.checkpoint_io).__name__ == "AtomicCheckpointIO"
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_mnist_bits_and_binarization_set_the_levels(tmp_path):
    assert compose_train(["data=mnist", "data.bits=3"], tmp_path).data.levels == 8
    assert compose_train(["data=mnist", "data.binarize=dynamic"], tmp_path).data.levels == 2
    assert compose_train(["data=cifar10", "data.bits=5"], tmp_path).model.net.levels == 32


def test_sample_config_composes(tmp_path):
    cfg = compose_train(["ckpt_path=x.ckpt"], tmp_path, config_name="sample")
    assert cfg.mode == "sample" and cfg.trust_checkpoint is False


@pytest.mark.parametrize("logger", ["wandb", "csv"])
def test_eval_config_composes_the_training_groups_and_builds_its_record(logger, tmp_path):
    cfg = compose_train(["ckpt_path=x.ckpt", "trainer=cpu", f"logger={logger}", "data.eval_batch_size=8"], tmp_path,
                        config_name="eval")
    assert cfg.trainer.accelerator == "cpu" and cfg.data.eval_batch_size == 8 and cfg.fid.num_samples > 0
    assert cfg.callbacks.model_checkpoint is None and cfg.callbacks.sample_grid is None
    record = hydra.utils.instantiate(cfg.callbacks.run_record)
    assert record.after_test and record.known["task"] == "eval" and record.quality.num_samples == cfg.fid.num_samples


@pytest.mark.parametrize("preset", ["compare_mnist", "compare_cifar10"])
def test_comparison_presets_give_every_model_the_same_budget(preset, tmp_path):
    budgets = {compose_train([f"experiment={preset}", f"model={model}"], tmp_path).trainer.max_time
               for model in options("model")}
    assert len(budgets) == 1 and budgets.pop() is not None


def paper_presets(dataset: str) -> list[str]:
    return [name for name in options("experiment") if name.startswith(f"paper_{dataset}_")]


def one_training_step(experiment: str, output_dir: Path) -> dict[str, float]:
    """Run the real training pipeline on one batch of a preset (no sample grid, no logger)."""
    from pixel_lightning.train import train

    overrides = [f"experiment={experiment}", "~logger", "~callbacks.sample_grid", "~callbacks.progress_bar",
                 "test=false", "+trainer.fast_dev_run=1"]
    return train(compose_train(overrides, output_dir))


@requires_data
@pytest.mark.parametrize("experiment", paper_presets("mnist"))
def test_mnist_paper_presets_start_training(experiment, tmp_path):
    metrics = one_training_step(experiment, tmp_path)
    assert 0 < metrics["train/loss"] < 1  # nats per dimension of a fresh binary model: ~ln 2


@pytest.mark.slow
@requires_data
@pytest.mark.parametrize("experiment", paper_presets("cifar"))
def test_cifar_paper_presets_start_training(experiment, tmp_path):
    metrics = one_training_step(experiment, tmp_path)
    assert 4 < metrics["train/loss"] < 7  # a fresh 256-way softmax: ~ln 256 = 5.5 nats per dimension


@pytest.mark.parametrize("override", ["trainer.max_epochs=abc", "seed=1.5", "trainer.gradient_clip_val=true"])
def test_mistyped_settings_are_user_errors(override, tmp_path):
    from pixel_lightning.errors import UserError
    from pixel_lightning.train import check_settings

    with pytest.raises(UserError, match=override.split("=")[0] + " must be"):
        check_settings(compose_train([override], tmp_path))
    check_settings(compose_train([], tmp_path))  # the defaults pass

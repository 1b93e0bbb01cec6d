"""Every config in conf/ composes, resolves, and builds what it describes."""

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict
from support import REPO, requires_data

import pixel_lightning  # noqa: F401  (registers the resolvers)
from pixel_lightning.safe_config import check_buildable

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
    architecture = getattr(module, "net", module)  # the DCGAN module is its own architecture
    assert type(architecture).__module__ == f"pixel_lightning.models.{model}"
    check_buildable(dict(module.hparams), "The checkpoint of this config", "hyper_parameters")  # its checkpoints load


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
        check_buildable(dict(module.hparams), experiment, "hyper_parameters")  # RMSprop is allowed too


def test_cpu_trainer_and_callbacks_instantiate(tmp_path):
    cfg = compose_train(["trainer=cpu", "logger=csv"], tmp_path)
    callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values()]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert type(trainer.strategy.checkpoint_io).__name__ == "AtomicCheckpointIO"
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_last_ckpt_is_written_at_each_epoch_end_and_every_500_steps_by_default(tmp_path):
    # README, Resume: what a crash can lose. Both ModelCheckpoints write the same last.ckpt (that the
    # step one does so mid-epoch, atomically and resumably, is test_resume.py's kill-and-resume run).
    cfg = compose_train([], tmp_path)
    epochs, steps = (hydra.utils.instantiate(cfg.callbacks[name]) for name in ("model_checkpoint", "step_checkpoint"))
    assert epochs.save_last is True
    assert steps._every_n_train_steps == 500 and steps.filename == "last" and steps.dirpath == epochs.dirpath
    assert epochs.dirpath == str(tmp_path / "checkpoints")


def test_mnist_bits_and_binarization_set_the_levels(tmp_path):
    assert compose_train(["data=mnist", "data.bits=3"], tmp_path).data.levels == 8
    assert compose_train(["data=mnist", "data.binarize=dynamic"], tmp_path).data.levels == 2
    assert compose_train(["data=cifar10", "data.bits=5"], tmp_path).model.net.levels == 32


def test_sample_config_composes(tmp_path):
    cfg = compose_train(["ckpt_path=x.ckpt"], tmp_path, config_name="sample")
    assert cfg.mode == "sample" and cfg.trust_checkpoint is False


@pytest.mark.parametrize("logger", ["wandb", "csv"])
def test_eval_config_composes_the_training_groups_and_builds_its_record(logger, tmp_path):
    cfg = compose_train(
        ["ckpt_path=x.ckpt", "trainer=cpu", f"logger={logger}", "data.eval_batch_size=8"], tmp_path, config_name="eval"
    )
    assert cfg.trainer.accelerator == "cpu" and cfg.data.eval_batch_size == 8 and cfg.fid.num_samples > 0
    assert cfg.callbacks.model_checkpoint is None and cfg.callbacks.sample_grid is None
    record = hydra.utils.instantiate(cfg.callbacks.run_record)
    assert record.after_test and record.known["task"] == "eval" and record.quality.num_samples == cfg.fid.num_samples


def distribution_of(cfg):
    from pixel_lightning.models import AutoregressiveDistribution

    model = OmegaConf.to_container(cfg.model, resolve=True)
    return AutoregressiveDistribution(model["net"], model["data"], model.get("condition"), model.get("output"))


@pytest.mark.parametrize("preset", ["compare_mnist", "compare_cifar10"])
def test_comparison_presets_give_every_model_the_same_budget_and_1000_samples_where_sampling_is_cached(
    preset, tmp_path
):
    configs = {model: compose_train([f"experiment={preset}", f"model={model}"], tmp_path) for model in options("model")}
    budgets = {cfg.trainer.max_time for cfg in configs.values()}
    assert len(budgets) == 1 and budgets.pop() is not None
    samples = {model: cfg.callbacks.run_record.quality.num_samples for model, cfg in configs.items()}
    # a net without a cached sampler (the code says which) samples naively: fewer samples
    naive = [
        model
        for model, cfg in configs.items()
        if OmegaConf.select(cfg, "model.net._target_")
        and getattr(distribution_of(cfg).net, "cached_sampler", lambda *_: None)(1, 2, 2) is None
    ]
    assert naive == ["spatial_lstm"]
    assert all(count == 1000 for model, count in samples.items() if model not in naive)
    assert all(0 < samples[model] < 1000 for model in naive)


def paper_presets(dataset: str) -> list[str]:
    return [name for name in options("experiment") if name.startswith(f"paper_{dataset}_")]


def test_paper_lr_search_composes(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["experiment=paper_mnist_pixelcnn", "hparams_search=paper_lr"],
            return_hydra_config=True,
        )
    assert "choice(" in cfg.hydra.sweeper.params["optimizer.lr"]


def one_training_step(experiment: str, output_dir: Path, extra: list[str] = ()) -> dict[str, float]:
    """Run the real training pipeline on one batch of a preset (no sample grid, no logger)."""
    from pixel_lightning.train import train

    overrides = [
        f"experiment={experiment}",
        "~logger",
        "~callbacks.sample_grid",
        "~callbacks.progress_bar",
        "test=false",
        "+trainer.fast_dev_run=1",
        *extra,
    ]
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
    from pixel_lightning.jobs import check_settings

    with pytest.raises(UserError, match=override.split("=")[0] + " must be"):
        check_settings(compose_train([override], tmp_path))
    check_settings(compose_train([], tmp_path))  # the defaults pass


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_out_of_seed_everythings_range_is_refused_with_the_range(seed, tmp_path):
    import pytorch_lightning as pl

    from pixel_lightning.errors import UserError
    from pixel_lightning.jobs import check_settings

    with pytest.raises(ValueError, match="not in bounds"):  # what the check keeps from the user
        pl.seed_everything(seed)
    with pytest.raises(UserError) as error:
        check_settings(compose_train([f"seed={seed}"], tmp_path))
    assert str(error.value) == (
        f"seed must be an integer from 0 to 4294967295 (or null), but it is {seed}. Fix the override, e.g. seed=0."
    )
    for valid in (0, 2**32 - 1):  # both ends of the range pass
        check_settings(compose_train([f"seed={valid}"], tmp_path))


@pytest.mark.parametrize("data", options("data"))
def test_every_datamodule_argument_can_be_set_without_a_plus(data):
    """Each argument of the DataModule is declared in its config, so `data.<arg>=...` works as the README says."""
    import inspect

    config = OmegaConf.load(CONF / "data" / f"{data}.yaml")
    module = hydra.utils.get_class(config._target_)
    assert set(inspect.signature(module.__init__).parameters) - {"self"} == set(config) - {"_target_"}


def test_limit_batches_can_be_set_without_a_plus(tmp_path):
    overrides = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=0.5", "trainer.limit_test_batches=2"]
    cfg = compose_train(overrides, tmp_path)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
    assert (trainer.limit_train_batches, trainer.limit_val_batches, trainer.limit_test_batches) == (3, 0.5, 2)
    defaults = hydra.utils.instantiate(compose_train([], tmp_path).trainer, logger=False)
    assert (defaults.limit_train_batches, defaults.limit_val_batches, defaults.limit_test_batches) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    "override, message",
    [
        ("num_samples=0", "num_samples must be an integer of at least 1, but it is 0. Fix the override, e.g. num_"),
        ("num_samples=abc", "num_samples must be an integer of at least 1, but it is abc."),
        ("nrow=0", "nrow must be an integer of at least 1 (or null), but it is 0."),
        ("temperature=0", "temperature must be a number above 0, but it is 0."),
        ("temperature=-1.5", "temperature must be a number above 0, but it is -1.5."),
        ("temperature=nan", "temperature must be a number above 0, but it is nan."),
        ("seed=1.5", "seed must be an integer, but it is 1.5."),
        ("save_npy=maybe", "save_npy must be true or false, but it is maybe."),
        ("trust_checkpoint=1", "trust_checkpoint must be true or false, but it is 1."),
        ("completion.num_images=0", "completion.num_images must be an integer of at least 1, but it is 0."),
        ("completion.samples_per_image=-2", "completion.samples_per_image must be an integer of at least 1, but it"),
        ("completion.observed_rows=-1", "completion.observed_rows must be an integer of at least 0 (or null), but"),
        ("mode=fill", "mode must be sample or complete, but it is fill. Fix the override, e.g. mode=complete."),
    ],
)
def test_every_sample_setting_is_checked(override, message, tmp_path):
    from pixel_lightning.errors import UserError
    from pixel_lightning.sample import check_sample_settings

    with pytest.raises(UserError) as error:
        check_sample_settings(compose_train(["ckpt_path=x.ckpt", override], tmp_path, config_name="sample"))
    assert str(error.value).startswith(message)
    check_sample_settings(compose_train(["ckpt_path=x.ckpt"], tmp_path, config_name="sample"))  # the defaults pass


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:0", "7"])
def test_unknown_devices_are_refused_with_the_choices(device):
    from pixel_lightning.errors import UserError
    from pixel_lightning.sample import pick_device

    with pytest.raises(UserError, match=f"device must be auto, cpu, mps, cuda or cuda:<index>, but it is {device}\\."):
        pick_device(device)
    assert pick_device("cpu").type == "cpu"

"""Sweeps and launchers: an Optuna study through train.py (a failed trial does not stop it), a
submitit_local multirun whose jobs run side by side, and the SLURM launcher's settings."""

import json
import math
import re
from datetime import datetime

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, read_write
from support import requires_data, wandb_logged, wandb_records
from test_cli import run
from test_configs import CONF


def wandb_run_group_and_tags(job_dir):
    (run_dir,) = (job_dir / "wandb").glob("offline-run-*")
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == "run":
            return record.run.run_group, set(record.run.tags), run_dir


@requires_data
def test_an_optuna_study_records_a_failed_trial_and_goes_on(tmp_path):
    # RandomSampler(seed=10) draws lr=-1 (refused at start) for trial 0, then lr=0.001
    result = run(
        "train.py",
        "-m",
        "debug=smoke",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=10",
        "optimizer.lr=choice(-1.0,0.001)",
        "model.net.hidden=8",
        "model.net.layers=2",
        "trainer.limit_train_batches=2",
        "test=false",
        "callbacks.sample_grid.num_samples=1",
        f"hydra.sweep.dir={tmp_path}",
        env={"WANDB_MODE": "offline"},
    )
    assert result.returncode == 1 and "1 job(s) failed" in result.stderr, result.stderr[-3000:]
    assert "optimizer.lr must be a number above 0" in (tmp_path / "0" / "failure.txt").read_text()
    assert "Failed experiment" in result.stdout + result.stderr  # told to Optuna as a failed trial
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"optimizer.lr": 0.001}
    assert not (tmp_path / "0" / "wandb").exists()  # the failed trial stopped before its W&B run
    group, tags, run_dir = wandb_run_group_and_tags(tmp_path / "1")
    assert group == f"optuna-{tmp_path.name}" and "pixelcnn" in tags  # the sweep's group, the model's tag
    # the value Optuna got is the job's last validation bits/dim
    assert best["best_value"] == pytest.approx(float(wandb_logged(run_dir)["summary"]["val/bpd"]), rel=1e-6)
    assert math.isfinite(best["best_value"])


@pytest.mark.slow
@requires_data
@pytest.mark.parametrize("model", ["pixelcnn_pp", "dcgan"])
def test_an_optuna_study_of_a_model_outside_the_hidden_and_layers_family_completes_its_trial(model, tmp_path):
    result = run(
        "train.py",
        "-m",
        "debug=smoke",
        "hparams_search=optuna",
        f"model={model}",
        "hydra.sweeper.n_trials=1",
        "logger=csv",
        "test=false",
        "callbacks.sample_grid.num_samples=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    record = json.loads((tmp_path / "0" / "record.json").read_text())
    assert set(best["best_params"]) == set(
        yaml.safe_load((CONF / "hparams_search" / "optuna.yaml").read_text())["search_spaces"][model]
    )  # the model's own space
    if model == "dcgan":  # no likelihood: the study minimises the KID of the final samples
        assert best["best_value"] == pytest.approx(record["kid"])
    assert math.isfinite(best["best_value"])


def optuna_trials(storage: str, study_name: str) -> list:
    import optuna

    return optuna.load_study(study_name=study_name, storage=storage).trials


def test_an_optuna_study_in_sqlite_continues_where_the_last_process_stopped(tmp_path):
    # optuna 2.x (what hydra-optuna-sweeper 1.3 allows) fails on SQLAlchemy 2 with an AssertionError
    # in RDBStorage.get_current_version and leaves a half-made .db: pyproject pins sqlalchemy<2
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    for _ in range(2):  # two processes of one persistent study, each adding a trial
        study = optuna.create_study(study_name="lr", storage=storage, load_if_exists=True)
        study.optimize(lambda trial: trial.suggest_float("lr", 1e-5, 1e-3), n_trials=1)
    assert [trial.number for trial in optuna_trials(storage, "lr")] == [0, 1]


@pytest.mark.slow
@requires_data
def test_a_second_optuna_sweep_with_sqlite_storage_continues_the_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    for sweep in ("first", "second"):
        result = run(
            "train.py",
            "-m",
            "debug=smoke",
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=1",
            f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=persistent",
            "logger=csv",
            "test=false",
            "fid.num_samples=0",
            "callbacks.sample_grid.num_samples=1",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "trainer.num_sanity_val_steps=0",
            "model.net.hidden=8",
            "model.net.layers=2",
            f"hydra.sweep.dir={tmp_path / sweep}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna_trials(storage, "persistent")
    assert [trial.number for trial in trials] == [0, 1]  # the second sweep's trial goes on from the first's
    assert all(trial.state.name == "COMPLETE" and math.isfinite(trial.value) for trial in trials)
    second = yaml.safe_load((tmp_path / "second" / "optimization_results.yaml").read_text())
    assert second["best_value"] == min(trial.value for trial in trials)  # the best of both sweeps


def first_and_last_log_time(job_dir):
    stamps = re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+\]", (job_dir / "train.log").read_text(), re.M)
    return datetime.fromisoformat(stamps[0]), datetime.fromisoformat(stamps[-1])


@requires_data
def test_submitit_local_runs_the_jobs_of_a_multirun_side_by_side(tmp_path):
    result = run(
        "train.py",
        "-m",
        "hydra/launcher=submitit_local",
        "debug=smoke",
        "logger=csv",
        "callbacks.sample_grid.num_samples=1",
        "optimizer.lr=0.001,0.002",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    spans = []
    for job in ("0", "1"):
        assert (tmp_path / job / "checkpoints" / "last.ckpt").is_file()
        assert (tmp_path / job / "samples" / "epoch_000.png").is_file()
        spans.append(first_and_last_log_time(tmp_path / job))
    (start0, end0), (start1, end1) = spans
    assert start1 <= end0 and start0 <= end1, f"the jobs ran one after the other: {spans}"
    assert len(list((tmp_path / ".submitit").glob("*/*_result.pkl"))) == 2  # one submitit process per job


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_a_multirun_with_a_failed_job_exits_1_with_the_summary_under_every_launcher(launcher, tmp_path):
    import torch
    from support import tiny_model

    model = tiny_model()
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, tmp_path / "tiny.ckpt")
    sweep = tmp_path / "sweep"
    result = run(
        "sample.py",
        "-m",
        f"hydra/launcher={launcher}",
        f"ckpt_path={tmp_path / 'tiny.ckpt'}",
        "device=cpu",
        "num_samples=0,1",
        f"hydra.sweep.dir={sweep}",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.endswith(f"error: 1 job(s) failed; their failure.txt says why:\n  {sweep / '0'}\n")
    assert "num_samples must be an integer of at least 1" in (sweep / "0" / "failure.txt").read_text()
    assert (sweep / "1" / "samples.png").is_file()


def test_the_slurm_launcher_asks_one_task_per_device_and_lightning_reads_the_ranks(monkeypatch):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            return_hydra_config=True,
            overrides=[
                "hydra/launcher=slurm",
                "trainer=multinode",
                "trainer.devices=4",
                "trainer.num_nodes=3",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.timeout_min=60",
            ],
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (3, 4, 4)
    assert (launcher.partition, launcher.timeout_min) == ("gpu", 60)

    # SLURM's variables for task 6 of 12 (node 1, local rank 2): Lightning takes its ranks from them
    # and starts no process of its own (CPU stands in for the GPUs here).
    import pytorch_lightning as pl
    from pytorch_lightning.plugins.environments import SLURMEnvironment
    from pytorch_lightning.strategies import DDPStrategy

    for name, value in {
        "SLURM_NTASKS": "12",
        "SLURM_NTASKS_PER_NODE": "4",
        "SLURM_PROCID": "6",
        "SLURM_LOCALID": "2",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NAME": "train",
        "SLURM_NODELIST": "node[1-3]",
        "SLURM_JOB_ID": "1",
    }.items():
        monkeypatch.setenv(name, value)
    trainer = pl.Trainer(accelerator="cpu", devices=4, num_nodes=3, strategy=DDPStrategy(), logger=False)
    environment = trainer.strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.creates_processes_externally
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (6, 2, 1, 12)


def test_the_optuna_search_composes_over_lr_width_and_depth():
    cfg = sweep_config()
    assert cfg.optimized_metric == "val/bpd" and cfg.hydra.sweeper.direction == "minimize"
    assert set(cfg.search_spaces.pixelcnn) == {"optimizer.lr", "model.net.hidden", "model.net.layers"}
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.callbacks.optuna_study._target_ == "pixel_lightning.optuna_search.OptunaStudy"


def sweep_config(*overrides):
    """The multirun's config of train.py with hparams_search=optuna, as the sweeper gets it."""
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hparams_search=optuna", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} resolves
    return cfg


def trial_overrides(cfg, trial):
    """The overrides the Optuna sweeper gives `trial` (hydra_optuna_sweeper's _configure_trials)."""
    from hydra.utils import instantiate
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    params = cfg.hydra.sweeper.params or {}
    distributions, fixed = create_params_from_overrides([f"{key}={value}" for key, value in params.items()])
    for name, distribution in distributions.items():
        trial._suggest(name, distribution)
    if cfg.hydra.sweeper.custom_search_space:
        instantiate({"_target_": cfg.hydra.sweeper.custom_search_space, "_partial_": True})(cfg, trial)
    return [f"{name}={value}" for name, value in (dict(trial.params) | fixed).items()]


@pytest.mark.parametrize("model", sorted(path.stem for path in (CONF / "model").glob("*.yaml")))
def test_every_model_s_optuna_trials_compose_with_the_values_drawn(model):
    import optuna

    cfg = sweep_config(f"model={model}")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    overrides = trial_overrides(cfg, trial)
    assert len(overrides) >= 2  # a learning rate and a size, at least
    job = sweep_config(f"model={model}", *overrides)  # as Hydra composes the trial's job
    for name, value in trial.params.items():
        assert OmegaConf.select(job, name) == value
    assert job.optimized_metric == ("record/kid" if model == "dcgan" else "val/bpd")  # the GAN has no bits/dim


def test_a_searched_setting_the_model_lacks_is_one_paragraph_before_any_trial(capsys):
    from pixel_lightning.optuna_search import OptunaStudy

    OptunaStudy().on_multirun_start(sweep_config("model=pixelcnn_pp"))  # its own space fits
    cfg = sweep_config("model=pixelcnn_pp")
    with read_write(cfg.hydra):  # a space of the user's, in hydra.sweeper.params
        cfg.hydra.sweeper.params = {"model.net.hidden": "choice(16, 32)"}
    with pytest.raises(SystemExit) as exit_status:
        OptunaStudy().on_multirun_start(cfg)
    assert exit_status.value.code == 2
    assert "sets model.net.hidden, which model=pixelcnn_pp does not have" in capsys.readouterr().err
    cfg = sweep_config("model=dcgan")
    with read_write(cfg.hydra):  # as `python train.py -m hparams_search=optuna model=dcgan model.net.layers=2,4`
        cfg.hydra.overrides.task.append("model.net.layers=2,4")
    with pytest.raises(SystemExit):
        OptunaStudy().on_multirun_start(cfg)
    assert "sets model.net.layers, which model=dcgan does not have" in capsys.readouterr().err


TINY_APP = """
import hydra

@hydra.main(version_base="1.3", config_path=".", config_name="tiny")
def main(cfg):
    return cfg.x

main()
"""
TINY_CONFIG = """
defaults:
  - override hydra/sweeper: optuna
  - _self_
x: 0.5
hydra:
  callbacks:
    optuna_study:
      _target_: pixel_lightning.optuna_search.OptunaStudy
  sweeper:
    study_name: resumed
    storage: {storage}
    n_trials: 2
    sampler:
      seed: 1234
    params:
      x: interval(0, 1)
"""


def test_a_study_resumed_from_storage_draws_new_parameters(tmp_path):
    import subprocess
    import sys

    from support import REPO

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    (tmp_path / "tiny.py").write_text(TINY_APP)
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG.format(storage=storage))
    for sweep in ("first", "second"):  # the same command twice, as after an interruption
        result = subprocess.run(
            [sys.executable, str(tmp_path / "tiny.py"), "-m", f"hydra.sweep.dir={tmp_path / sweep}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    assert "Study resumed holds 2 trials: sampler seed 1234 + 2" in result.stderr + result.stdout
    drawn = [trial.params["x"] for trial in optuna_trials(storage, "resumed")]
    assert len(drawn) == 4 and len(set(drawn)) == 4, drawn  # the second run's seed 1236 repeats none


def test_train_py_s_study_resumed_from_storage_gets_its_seed_offset_by_the_stored_trials(tmp_path):
    import optuna

    from pixel_lightning.optuna_search import OptunaStudy

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="s", storage=storage).optimize(
        lambda trial: trial.suggest_float("x", 0, 1), n_trials=3
    )
    cfg = sweep_config(f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=s")  # hydra node read-only
    OptunaStudy().on_multirun_start(cfg)
    assert cfg.hydra.sweeper.sampler.seed == 1234 + 3
    cfg = sweep_config(f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=new")
    OptunaStudy().on_multirun_start(cfg)
    assert cfg.hydra.sweeper.sampler.seed == 1234


@pytest.mark.parametrize(
    "storage",
    ["sqlite:///{tmp_path}/a_file/study.db", "sqlite:////proc/study.db", "not a url", "postgresql://localhost/study"],
)
def test_an_unusable_optuna_storage_is_one_paragraph(tmp_path, storage, capsys):
    from pixel_lightning.optuna_search import stored_trials

    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as exit_status:
        stored_trials(storage.format(tmp_path=tmp_path), "study")
    err = capsys.readouterr().err
    assert exit_status.value.code == 2 and err.startswith("error: Could not open the Optuna storage")
    assert err.count("\n") == 1 and "hydra.sweeper.storage=null" in err


def test_train_py_with_an_unusable_optuna_storage_stops_in_one_paragraph(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = run(
        "train.py",
        "-m",
        "hparams_search=optuna",
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/a_file/x.db",
        "hydra.sweeper.study_name=s",
        "logger=csv",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 2 and "error: Could not open the Optuna storage" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "sweep" / "0").exists()


def test_the_job_returns_the_optimized_metric():
    from omegaconf import OmegaConf

    from pixel_lightning.train import optimized_value

    cfg = OmegaConf.create({"optimized_metric": "val/bpd"})
    assert optimized_value(cfg, {"val/bpd": 0.5, "val/nll": 9.0}) == 0.5
    assert optimized_value(cfg, None) is None  # a failed job: Optuna records a failed trial
    assert optimized_value(cfg, {"val/nll": 9.0}) is None
    assert optimized_value(OmegaConf.create({"optimized_metric": None}), {"val/bpd": 0.5}) is None

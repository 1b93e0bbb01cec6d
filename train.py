"""Train a model (autoregressive, or the DCGAN baseline): `python train.py model=row_lstm data=cifar10 ...`."""

import hydra
from omegaconf import DictConfig

import pixel_lightning  # noqa: F401  (registers the config resolvers)
from pixel_lightning.cli import exit_if_jobs_failed, run_job
from pixel_lightning.train import optimized_value, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return optimized_value(cfg, run_job(train, cfg))


if __name__ == "__main__":
    main()
    exit_if_jobs_failed()

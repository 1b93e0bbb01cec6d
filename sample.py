"""Sample from a trained model: `python sample.py ckpt_path=<file.ckpt> num_samples=16`."""

import hydra
from omegaconf import DictConfig

import pixel_lightning  # noqa: F401  (registers the config resolvers)
from pixel_lightning.cli import exit_if_jobs_failed, run_job
from pixel_lightning.sample import sample


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    run_job(sample, cfg)


if __name__ == "__main__":
    main()
    exit_if_jobs_failed()

"""The nets of the suite, built from conf/model/<model>.yaml on conf/data/<data>.yaml, and what every
timing shares: synthetic batches, the training loss, the device and its threads."""

from __future__ import annotations

import argparse
import os
import resource
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere: this checkout's package, not an installed one


def configs(model: str, data: str, args: argparse.Namespace) -> tuple[dict, dict, dict | None]:
    """The resolved net config of conf/model/<model>.yaml on conf/data/<data>.yaml, the data config,
    and the model's output setting (conf/model/output/, picked by the model's defaults list)."""
    from omegaconf import OmegaConf

    import pixel_lightning  # noqa: F401  (registers the config resolvers)

    paths = {"data_dir": os.environ.get("PIXEL_DATA_DIR", "data")}
    root = OmegaConf.create({"paths": paths})
    root.data = OmegaConf.load(REPO / "conf" / "data" / f"{data}.yaml")
    root.model = OmegaConf.load(REPO / "conf" / "model" / f"{model}.yaml")
    net = OmegaConf.to_container(root.model.net, resolve=True)
    # --hidden / --layers size the nets that have those settings (PixelCNN++ has filters and blocks)
    net.update({k: v for k, v in (("hidden", args.hidden), ("layers", args.layers)) if v is not None and k in net})
    output = root.model.get("output")  # the model's own output settings, if any
    for choice in root.model.get("defaults", []):  # `- output: <name>` picks conf/model/output/<name>.yaml
        if isinstance(choice, Mapping) and "output" in choice:
            output = OmegaConf.merge(OmegaConf.load(REPO / "conf" / "model" / "output" / f"{choice.output}.yaml"),
                                     output or {})  # fmt: skip
    output = OmegaConf.to_container(output) if output is not None else None
    return net, OmegaConf.to_container(root.data, resolve=True), output


def build(model: str, data: str, args: argparse.Namespace):
    from pixel_lightning.models import AutoregressiveImageModel

    net, data_cfg, output = configs(model, data, args)
    if args.image_size:  # the batches are synthetic: any size the net takes
        data_cfg.update(height=args.image_size, width=args.image_size)
    torch.manual_seed(0)
    return AutoregressiveImageModel(net, {"_target_": "torch.optim.Adam", "lr": 1e-3}, data_cfg, output=output)


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def random_batches(module, count: int, batch_size: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, *module.image_shape)
    return [torch.randint(0, module.levels, shape, generator=generator) for _ in range(count)]


def loss_of(module, batch: torch.Tensor) -> torch.Tensor:
    return -module.log_prob(batch).mean() / module.dims  # the training loss, nats per dimension


def setup(args: argparse.Namespace) -> torch.device:
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    return device

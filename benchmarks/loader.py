"""Images/s of a DataModule's training loader alone, on the real data (PIXEL_DATA_DIR): to show that it
is never the bottleneck."""

from __future__ import annotations

import argparse
import time

from benchmarks.models import configs, setup


def loader_speed(job: tuple[str, argparse.Namespace]) -> dict:
    """Images/s of the DataModule's training loader alone, on the real data."""
    import hydra

    data_name, args = job
    setup(args)
    _, data_cfg, _ = configs("pixelcnn", data_name, args)  # any model: only the data config is read
    datamodule = hydra.utils.instantiate(dict(data_cfg, batch_size=args.batch_size, download=False))
    datamodule.prepare_data()
    datamodule.setup("fit")
    count, start = 0, time.perf_counter()
    for i, batch in enumerate(datamodule.train_dataloader()):
        count += len(batch)
        if i + 1 == args.loader_batches:
            break
    return {"loader_images_per_s": round(count / (time.perf_counter() - start), 1)}

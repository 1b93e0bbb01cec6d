"""Training throughput and peak memory of PixelCNN, Row LSTM, Diagonal BiLSTM and the Spatial LSTM baseline.

Every model gets the same hidden size h and number of layers, on binarized-MNIST shapes
(1x28x28, 2 levels) and CIFAR-10 shapes (3x32x32, 256 levels), with random data. A training step
is the real training path: AutoregressiveImageModel.log_prob, backward, Adam step.

Prints one JSON line per (model, data). Each pair runs in a fresh process so that its peak memory
is its own. Throughput comes from the median step. Peak memory: on CUDA
`torch.cuda.max_memory_allocated`; on CPU the growth of the process's max RSS (`getrusage`) over
the steps, i.e. activations, gradients and optimizer state but not the weights, libraries or data
(`memory` names which one was used).

    python benchmarks/throughput.py                                  # CPU-sized defaults
    python benchmarks/throughput.py --device cuda --hidden 64 --layers 7 --batch-size 64 --steps 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import time

import torch

from pixel_lightning.models import AutoregressiveImageModel

MODELS = {
    "pixelcnn": "pixel_lightning.models.pixelcnn.PixelCNN",
    "row_lstm": "pixel_lightning.models.row_lstm.RowLSTM",
    "diagonal_bilstm": "pixel_lightning.models.diagonal_bilstm.DiagonalBiLSTM",
    "spatial_lstm": "pixel_lightning.models.spatial_lstm.SpatialLSTM",
}
DATA = {
    "binarized_mnist": {"channels": 1, "height": 28, "width": 28, "levels": 2},
    "cifar10": {"channels": 3, "height": 32, "width": 32, "levels": 256},
}


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def measure(job: tuple[str, str, argparse.Namespace]) -> dict:
    model_name, data_name, args = job
    torch.manual_seed(0)
    device, data = torch.device(args.device), DATA[data_name]
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    net = {"_target_": MODELS[model_name], "channels": data["channels"], "levels": data["levels"]}
    net.update(hidden=args.hidden, layers=args.layers)
    model = AutoregressiveImageModel(net, {"_target_": "torch.optim.Adam", "lr": 1e-3}, data).to(device)
    optimizer = model.configure_optimizers()
    shape = (args.batch_size, data["channels"], data["height"], data["width"])
    batch = torch.randint(0, data["levels"], shape, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = -model.log_prob(batch).mean() / model.dims
        loss.backward()
        optimizer.step()

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = max_rss_mb()
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else max_rss_mb() - rss_before
    return {
        "model": model_name,
        "data": data_name,
        "hidden": args.hidden,
        "layers": args.layers,
        "params": sum(p.numel() for p in model.parameters()),
        "batch_size": args.batch_size,
        # The median step: robust to other processes briefly taking the (shared) CPU cores.
        "train_images_per_s": round(args.batch_size / statistics.median(times), 2),
        "peak_memory_mb": round(peak, 1),
        "memory": "cuda_max_allocated" if cuda else "cpu_max_rss_growth",
        "device": device.type,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=16, help="h: every model carries 2h feature maps")
    parser.add_argument("--layers", type=int, default=2, help="residual blocks / LSTM layers")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    # One thread by default: on a CPU shared with other jobs, OpenMP threads waiting on each other
    # slow the many small ops of the recurrent models down erratically.
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (ignored on CUDA)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--data", nargs="+", choices=list(DATA), default=list(DATA))
    args = parser.parse_args()
    jobs = [(model, data, args) for data in args.data for model in args.models]
    # One fresh process per job (spawn: no CUDA state inherited), so peak memory is per job.
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for result in pool.imap(measure, jobs):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""The comparison under hostile or careless inputs: a full disk keeps the earlier files, several
datasets are ranked apart, unusable targets and curves are refused (a multirun's before its first
job), a FIFO or a forged name cannot hang or rewrite comparison.md, and the side-by-side samples
fit a page's width, one labelled row per model."""

import os
import resource
import signal
import subprocess
import sys

import pytest
import torch
from PIL import Image
from support import REPO
from test_cli import run
from test_compare import curve, make_run

from pixel_lightning.errors import UserError
from pixel_lightning.evaluation.compare import OUTPUTS, MultirunComparison, main, read_records
from pixel_lightning.evaluation.compare.aggregate import check_target
from pixel_lightning.evaluation.compare.plots import PAGE_WIDTH, side_by_side
from pixel_lightning.images import make_grid, save_png
from pixel_lightning.records import blank_record, write_record


def limit_file_size(limit):
    def apply():  # in the child: a write past `limit` bytes fails with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_comparison_that_fails_mid_write_leaves_the_earlier_files_intact(tmp_path):
    make_run(tmp_path, "row_lstm", test_bpd=0.2, train_time_s=10.0)
    main([str(tmp_path)])
    before = {name: (tmp_path / name).read_bytes() for name in OUTPUTS}
    for seed in range(20):  # a longer comparison.md than the limit below
        make_run(tmp_path, f"pixelcnn_{seed}", model="pixelcnn", seed=seed, test_bpd=0.3, train_time_s=10.0)
    result = subprocess.run(
        [sys.executable, "-m", "pixel_lightning.compare", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size(2000),
        check=False,
    )
    assert result.returncode == 2 and "Could not write the comparison" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert {name: (tmp_path / name).read_bytes() for name in OUTPUTS} == before
    assert not list(tmp_path.glob(".*tmp*"))  # no half-written temporary file left


def two_datasets(folder):
    """Models a and b on two datasets, two seeds each; b is better on mnist, a on cifar10."""
    for dataset, bpds in (("mnist", {"a": 1.2, "b": 1.0}), ("cifar10", {"a": 3.0, "b": 3.4})):
        for model, bpd in bpds.items():
            for seed in (0, 1):
                make_run(
                    folder,
                    f"{dataset}_{model}_{seed}",
                    model=model,
                    dataset=dataset,
                    seed=seed,
                    test_bpd=bpd + 0.01 * seed,
                    curve=curve((10.0, 100, bpd + 1), (20.0, 200, bpd + 0.01 * seed)),
                )


def test_runs_on_several_datasets_are_ranked_and_timed_per_dataset(tmp_path):
    two_datasets(tmp_path)
    main([str(tmp_path)])
    text = (tmp_path / "comparison.md").read_text()
    ranking = [line for line in text.splitlines() if "test bits/dim (lower is better)" in line]
    assert ranking == [
        "- cifar10, test bits/dim (lower is better): 1. a 3.0050 ± 0.0071 (n=2); 2. b 3.4050 ± 0.0071 (n=2)",
        "- mnist, test bits/dim (lower is better): 1. b 1.0050 ± 0.0071 (n=2); 2. a 1.2050 ± 0.0071 (n=2)",
    ]
    assert "- cifar10: bits/dim 3.4100, KID –" in text and "- mnist: bits/dim 1.2100, KID –" in text  # own targets
    times = text.split("## Time to quality")[1].split("## The source table")[0]
    assert "| model | dataset | settings | n | time to target bits/dim (s) |" in times
    # each dataset's worst seed reaches its own target at its last point: 20 s
    assert times.count("| 20 ± 0 |") == 2 and "### cifar10" in text and "### mnist" in text


def test_one_target_is_refused_across_datasets_and_one_per_dataset_is_used(tmp_path, capsys):
    two_datasets(tmp_path)
    with pytest.raises(SystemExit) as exit_status:
        main([str(tmp_path), "--target-bpd", "1.5"])
    err = capsys.readouterr().err
    assert exit_status.value.code == 2 and "compare.target_bpd=1.5 is one target for runs on 2 datasets" in err
    main([str(tmp_path), "--target-bpd", "mnist=1.5", "--target-bpd", "cifar10=3.5"])
    text = (tmp_path / "comparison.md").read_text()
    assert "- cifar10: bits/dim 3.5000" in text and "- mnist: bits/dim 1.5000" in text


@pytest.mark.parametrize("value", ["abc", float("nan"), float("inf"), -1.0, True])
def test_an_unusable_target_is_refused(value):
    with pytest.raises(UserError, match=r"compare.target_bpd=\S+ is not a usable bits/dim target"):
        check_target("compare.target_bpd", value)
    assert check_target("compare.target_kid", {"mnist": -0.001}) == {"mnist": -0.001}  # KID's estimate may be < 0


def test_nan_on_the_command_line_is_one_paragraph(tmp_path, capsys):
    make_run(tmp_path, "a", test_bpd=0.2)
    with pytest.raises(SystemExit) as exit_status:
        main([str(tmp_path), "--target-kid", "nan"])
    err = capsys.readouterr().err
    assert exit_status.value.code == 2 and "compare.target_kid=nan is not a usable KID target" in err


def test_a_multirun_with_an_unusable_target_stops_before_its_first_job(tmp_path):
    result = run(
        "train.py",
        "-m",
        "compare.target_bpd=abc",
        "model=pixelcnn,row_lstm",
        "logger=csv",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: compare.target_bpd=abc is not a usable bits/dim target" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "0").exists()


def test_a_comparison_that_cannot_be_written_ends_the_multirun_with_exit_2(tmp_path, capsys):
    from hydra._internal.callbacks import Callbacks
    from omegaconf import OmegaConf

    two_datasets(tmp_path)
    config = OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(tmp_path)},
                "callbacks": {
                    "comparison": {"_target_": "pixel_lightning.evaluation.compare.MultirunComparison", "wandb": False}
                },
            },
            "compare": {"target_bpd": 1.5},
        }
    )  # one bits/dim for two datasets
    with pytest.raises(SystemExit) as exit_status:
        Callbacks(config).on_multirun_end(config=config)  # Hydra makes a callback's exception a warning
    err = capsys.readouterr().err
    assert exit_status.value.code == 2 and "one target for runs on 2 datasets" in err
    assert f"python -m pixel_lightning.compare {tmp_path}" in err and not (tmp_path / "comparison.md").exists()
    assert isinstance(Callbacks(config).callbacks[0], MultirunComparison)


def test_a_fifo_named_record_json_is_skipped_not_waited_on(tmp_path, capsys):
    make_run(tmp_path, "good", test_bpd=0.2)
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "record.json")

    def hung(*_):
        raise TimeoutError("read_records waits on the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)  # a blocking open would hang the test: fail it instead
    signal.alarm(20)
    try:
        assert [record["model"] for record in read_records(tmp_path)] == ["good"]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "record.json: not a regular file" in capsys.readouterr().err


def test_names_cannot_forge_sections_rows_or_mathtext(tmp_path):
    forged = "x\n\n## Runs\n\n| forged | row |\r\n<script>"
    make_run(tmp_path, "a", 0, model=forged, test_bpd=0.2, curve=curve((1.0, 10, 0.3), (2.0, 20, 0.2)))
    make_run(tmp_path, "b", 0, model="$\\frac{$", test_bpd=0.3, curve=curve((1.0, 10, 0.4), (2.0, 20, 0.3)))
    main([str(tmp_path)])  # matplotlib would fail on "$\frac{$" as mathtext
    lines = (tmp_path / "comparison.md").read_text().splitlines()
    assert [line for line in lines if line.startswith("#")] == [
        "# Comparison on binarized_mnist",
        "## Models (mean ± std over seeds, n finished runs)",
        "## Rankings",
        "## Time to quality",
        "## The source table, measured",
        "### binarized_mnist",
        "## Runs",
    ]
    assert not any(line.startswith("| forged") or "<script>" in line for line in lines)
    assert any(line.startswith("| x\\n\\n## Runs\\n\\n\\| forged \\| row \\|\\r\\n&lt;script&gt; |") for line in lines)


def grids(folder, model, seeds, level_of_seed, images=16):
    """One run per seed of `model`, its grid `images` MNIST-sized images of one level."""
    for seed in seeds:
        run_dir = folder / f"{model}_{seed}"
        save_png(make_grid(torch.full((images, 1, 28, 28), level_of_seed(seed)), 2), run_dir / "samples" / "s.png")
        write_record(
            run_dir,
            blank_record(
                model=model,
                dataset="binarized_mnist",
                task="train",
                status="finished",
                seed=seed,
                sample_grid="samples/s.png",
            ),
        )


def test_the_side_by_side_samples_are_one_labelled_row_per_model_within_a_page_width(tmp_path):
    models = ["pixelcnn", "row_lstm", "diagonal_bilstm", "gated_pixelcnn", "pixelcnn_pp", "spatial_lstm", "dcgan"]
    for model in models:  # 7 models x 3 seeds of 4 x 4 grids, 122 pixels a side: 3 times, 366 pixels, fit
        grids(tmp_path, model, (0, 1, 2), lambda seed: seed % 2)
    rows = sorted(read_records(tmp_path), key=lambda row: (models.index(row["model"]), row["seed"]))
    with open(tmp_path / "picture.png", "wb") as stream:
        side_by_side(rows, stream)
    picture = Image.open(tmp_path / "picture.png").convert("RGB")
    band = 24 + 18 + 366  # label, seed caption, grid
    assert picture.width <= PAGE_WIDTH and picture.height == 8 + 7 * (band + 16)
    for i, model in enumerate(models):  # each model's row: its label, then seeds 0, 1, 2 side by side
        top = 8 + i * (band + 16) + 24 + 18
        for seed in range(3):
            grid = Image.open(tmp_path / f"{model}_{seed}" / "samples" / "s.png").convert("RGB")
            left = 8 + seed * (366 + 8)
            shown = picture.crop((left, top, left + 366, top + 366))
            assert shown.tobytes() == grid.resize((366, 366), Image.NEAREST).tobytes()  # whole 3 x 3 pixels


def test_a_row_too_wide_even_at_one_pixel_per_pixel_is_shrunk_to_the_page(tmp_path):
    grids(tmp_path, "pixelcnn", range(6), lambda seed: 1, images=64)  # six 242-pixel grids: 1492 pixels
    with open(tmp_path / "picture.png", "wb") as stream:
        side_by_side(read_records(tmp_path), stream)
    assert PAGE_WIDTH - 16 <= Image.open(tmp_path / "picture.png").width <= PAGE_WIDTH

"""The package as users get it: the wheel (its files, its metadata, and its commands run from an empty
folder of a fresh venv), the extras (a feature whose extra is missing is one paragraph naming the pip
command), user config folders through hydra.searchpath with the optional `local` group, and the
paper presets' gradient clipping."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from support import REPO, real_data_dir

from pixel_lightning import __version__
from pixel_lightning.cli import user_error_message
from pixel_lightning.commands import config_dir

# Every paper_* preset -> the gradient_clip_val of its paper's recipe: none of them clips. The PixelRNN
# paper's training details (section 5.2), which the Gated PixelCNN presets reuse, give no clipping; the
# reference codes of PixelCNN++ (openai/pixel-cnn) and PixelSNAIL (neocxi/pixelsnail-public) apply Adam to
# the raw gradients, and so does pytorch-generative's Trainer, whose MNIST PixelSNAIL the MNIST preset follows.
PAPER_CLIP = {
    "paper_training": None,
    "paper_mnist_pixelcnn": None,
    "paper_mnist_row_lstm": None,
    "paper_mnist_diagonal_bilstm": None,
    "paper_cifar_pixelcnn": None,
    "paper_cifar_row_lstm": None,
    "paper_cifar_diagonal_bilstm": None,
    "paper_cifar_gated_pixelcnn": None,
    "paper_cifar_pixelcnn_pp": None,
    "paper_cifar_pixelsnail": None,
    "paper_mnist_pixelsnail": None,
    "paper_imagenet32_row_lstm": None,
    "paper_imagenet64_row_lstm": None,
}


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_the_paper_presets_clip_gradients_as_their_papers_do():
    presets = sorted(path.stem for path in (REPO / "conf" / "experiment").glob("paper_*.yaml"))
    assert presets == sorted(PAPER_CLIP), "a new paper preset: add what its paper's recipe clips to PAPER_CLIP"
    for preset, clip in PAPER_CLIP.items():
        assert compose_train(f"experiment={preset}").trainer.gradient_clip_val == clip, preset
    assert compose_train().trainer.gradient_clip_val == 1.0  # the default recipe (ours) clips


def test_a_users_config_folder_adds_experiments_and_this_machines_local_settings(tmp_path):
    """The docs' snippet: hydra.searchpath adds a folder of the user's configs; its local/default.yaml
    (like a git-ignored conf/local/default.yaml in a clone) applies to every run, after the presets."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\noptimizer:\n  lr: 0.0123\n")
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text("# @package _global_\npaths:\n  log_dir: /scratch/runs\n")
    cfg = compose_train(f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine")
    assert cfg.optimizer.lr == 0.0123 and cfg.paths.log_dir == "/scratch/runs"
    assert compose_train().paths.log_dir == "logs"  # no local settings: the group is optional
    assert compose_train("local=example").paths.data_dir == "/data/pixel-lightning"  # the shipped example composes


def run_python(code: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def without(*modules: str) -> str:
    """Python code that makes `modules` unimportable, as if their extra were not installed (Hydra's plugin
    scan also skips a module that sys.modules holds as None)."""
    return "import sys\n" + "".join(f"sys.modules[{module!r}] = None\n" for module in modules)


def assert_install_hint(result: subprocess.CompletedProcess, extra: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]  # (a library's warnings may come before it)
    assert last.startswith("error: ") and f'pip install "pixel-lightning[{extra}]"' in last, result.stderr


def test_the_optuna_sweeper_without_its_extra_names_the_pip_command(tmp_path):
    code = without("hydra_plugins.hydra_optuna_sweeper") + (
        "sys.argv = ['pixel-train', '-m', 'hparams_search=optuna', 'debug=smoke', f'paths.log_dir={sys.argv[1]}']\n"
        "from pixel_lightning.commands.train import run\nrun()\n"
    )
    assert_install_hint(run_python(code, str(tmp_path)), "sweep")


def test_the_slurm_launcher_without_its_extra_names_the_pip_command(tmp_path):
    code = without("hydra_plugins.hydra_submitit_launcher") + (
        "sys.argv = ['pixel-train', '-m', 'hydra/launcher=slurm', f'paths.log_dir={sys.argv[1]}']\n"
        "from pixel_lightning.commands.train import run\nrun()\n"
    )
    assert_install_hint(run_python(code, str(tmp_path)), "slurm")


def test_pixel_prepare_without_litdata_names_the_pip_command(tmp_path):
    code = (
        without("litdata")
        + "sys.argv = ['pixel-prepare', 'mnist', 'out']\n"
        + ("from pixel_lightning.commands import prepare\nprepare()\n")
    )
    assert_install_hint(run_python(code, cwd=tmp_path), "stream")
    assert list(tmp_path.iterdir()) == []


def test_a_streamed_data_module_without_litdata_is_one_paragraph_naming_the_pip_command(monkeypatch):
    """As train.py builds the DataModule of data.streaming=true: Hydra's error, as the job reports it."""
    import pixel_lightning.data

    monkeypatch.setitem(sys.modules, "litdata", None)
    monkeypatch.delitem(sys.modules, "pixel_lightning.data.streaming", raising=False)
    monkeypatch.delattr(pixel_lightning.data, "streaming", raising=False)  # where Hydra looks first
    with pytest.raises(Exception) as caught:
        instantiate({"_target_": "pixel_lightning.data.streaming.StreamingImageDataModule", "root": "chunks"})
    message = user_error_message(caught.value)
    assert message is not None and 'pip install "pixel-lightning[stream]"' in message, message
    assert "Streamed data" in message


def test_the_sample_quality_of_in_memory_data_needs_no_litdata(monkeypatch):
    """Scoring a binarized-MNIST run names its classifier without importing the streamed DataModule
    (a core install has no litdata)."""
    from pixel_lightning.data import BinarizedMNISTDataModule
    from pixel_lightning.data.labelled import family

    monkeypatch.setitem(sys.modules, "litdata", None)
    monkeypatch.delitem(sys.modules, "pixel_lightning.data.streaming", raising=False)
    assert family(BinarizedMNISTDataModule(data_dir="unused")) == "mnist"


# --- the wheel ------------------------------------------------------------------------------------


def source_files() -> list[str]:
    """The files of a clone: tracked, and new ones that git does not ignore."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(name for name in listing.split("\0") if name and (REPO / name).is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built (as pip builds it, in an isolated environment) from a copy of the clone's files,
    so that the build leaves nothing in the repository."""
    root = tmp_path_factory.mktemp("wheel")
    for name in source_files():
        (root / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / "src" / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(root / "src")],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (path,) = (root / "dist").glob("pixel_lightning-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_carries_the_package_its_configs_and_its_commands(wheel):
    files = set(zipfile.ZipFile(wheel).namelist())
    sources = source_files()
    package = {name for name in sources if name.startswith("pixel_lightning/")}
    configs = {
        "pixel_lightning/" + name for name in sources if name.startswith("conf/") and not name.startswith("conf/local/")
    }
    assert package <= files and "pixel_lightning/py.typed" in files
    assert configs and configs <= files
    assert not any(name.startswith(("conf/", "pixel_lightning/conf/local/", "tests/")) for name in files)
    info = f"pixel_lightning-{__version__}.dist-info"
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert re.search(rf"^Version: {re.escape(__version__)}$", metadata, re.M)  # the one version, pixel_lightning's
    assert re.search(r"^License-Expression: MIT$", metadata, re.M) and f"{info}/licenses/LICENSE" in files
    scripts = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    for command in ("pixel-train", "pixel-sample", "pixel-eval", "pixel-compare", "pixel-prepare"):
        assert re.search(rf"^{command} = pixel_lightning\.commands", scripts, re.M), command


def listing(folder: Path) -> dict[str, int]:
    """Every file under `folder` (bytecode caches aside) with its modification time."""
    return {
        str(path.relative_to(folder)): path.stat().st_mtime_ns
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.mark.slow
def test_the_installed_commands_train_sample_and_compare_from_an_empty_folder(wheel, tmp_path):
    """pip install <wheel> (the core dependencies, no extras) into a fresh venv; then, from an empty folder
    outside the repository, pixel-train debug=smoke, pixel-sample on its checkpoint and pixel-compare
    work and write their outputs only under that folder (the home folder gets the caches of matplotlib and
    wandb, theirs)."""
    data = real_data_dir()
    if data is None:
        pytest.skip("PIXEL_DATA_DIR is not set: point it at a folder with the datasets (e.g. ../shared/data)")
    venv, work, home = tmp_path / "venv", tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "torch==2.13.0", str(wheel)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    print(f"venv and install: {time.monotonic() - started:.0f} s")
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "OMP_NUM_THREADS": "1",
        "PIXEL_DATA_DIR": str(data),
        "WANDB_MODE": "offline",
    }
    before = {folder: listing(folder) for folder in (venv, REPO / "conf", REPO / "pixel_lightning")}

    def command(*args: str) -> subprocess.CompletedProcess:
        started = time.monotonic()
        result = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        print(f"{' '.join(args)}: {time.monotonic() - started:.0f} s")
        return result

    command("pixel-train", "debug=smoke")
    (run,) = (work / "logs" / "train" / "runs").iterdir()
    assert (run / "record.json").is_file() and (run / "train.log").is_file()
    command("pixel-sample", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "num_samples=4")
    (sampled,) = (work / "logs" / "sample" / "runs").iterdir()
    assert (sampled / "samples.png").is_file()
    command("pixel-compare", str(run.parent))
    assert (run.parent / "comparison.md").is_file()

    assert {folder: listing(folder) for folder in before} == before  # the installed package and the clone
    assert sorted(path.name for path in work.iterdir()) == ["logs"]
    tools = (".cache/matplotlib/", ".config/matplotlib/", ".cache/wandb/", ".config/wandb/", ".local/share/wandb/")
    elsewhere = [
        path for path in home.rglob("*") if path.is_file() and not path.relative_to(home).as_posix().startswith(tools)
    ]
    assert elsewhere == []

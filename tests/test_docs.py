"""The documentation says what the code does: every option and command is documented, the README's
quickstart runs, and every number in the docs that comes from a config is the config's."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml
from support import REPO, real_data_dir, requires_data

DOCUMENTED_GROUPS = ("model", "data", "experiment", "trainer", "logger", "hparams_search")
README = REPO / "README.md"


def docs_text() -> str:
    """The README and every hand-written page of docs/ (the generated reference is not hand-written: it
    would list every option whatever the pages say)."""
    pages = [p for p in sorted((REPO / "docs").rglob("*.md")) if p.name != "config.md" and "hooks" not in p.parts]
    return "\n".join(p.read_text(encoding="utf-8") for p in [README, *pages])


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def readme_block(language: str, after: str) -> str:
    """The first ```language block of the README after the heading `after`."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(after) :]
    return re.search(rf"```{language}\n(.*?)```", section, re.S)[1]


#: The quickstart's way of naming the newest run folder, and what the checks put in its place.
NEWEST_RUN = "$(ls -d logs/train/runs/*/ | tail -1)"


def quickstart_lines() -> list[str]:
    return [line for line in readme_block("bash", "## Quickstart").splitlines() if line.strip()]


def quickstart() -> list[list[str]]:
    """The README quickstart's commands, each split as the shell would (comments dropped), the newest
    run folder written as `RUN/`."""
    return [shlex.split(line.replace(NEWEST_RUN, "RUN/"), comments=True) for line in quickstart_lines()]


def load_hook(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "docs" / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("group", DOCUMENTED_GROUPS)
def test_every_option_of_the_main_groups_is_documented(group):
    text = docs_text()
    missing = [option for option in options(group) if f"{group}={option}" not in text]
    assert options(group) and not missing, f"no page shows {', '.join(f'{group}={o}' for o in missing)}"


def test_every_console_command_is_documented():
    # [project.scripts] of pyproject.toml (read by hand: tomllib is not in Python 3.10)
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?:^\[|\Z)", (REPO / "pyproject.toml").read_text(), re.M | re.S)
    scripts = re.findall(r"^([\w-]+)\s*=", section[1], re.M) if section else []
    text = docs_text()
    assert [name for name in scripts if name not in text] == []


def test_the_generated_reference_names_every_group_option_and_key():
    reference = load_hook("config_reference").render()
    for path in (REPO / "conf").rglob("*.yaml"):
        group = path.parent.relative_to(REPO / "conf").as_posix()
        if group != ".":
            assert f"`{group}={path.stem}`" in reference
    assert "| `model.net.hidden` | `16` | h; residual blocks carry 2h feature maps |" in reference  # pixelcnn.yaml
    assert "| `completion.samples_per_image` | `3` | completions drawn per image |" in reference  # sample.yaml


def test_the_config_reference_reads_comments_by_their_full_key():
    hook = load_hook("config_reference")
    text = "a:\n  b: 1  # the b\n  c: '#x'   # not '#x'\nd: 2\n"
    assert hook.comments(text) == {"a.b": "the b", "a.c": "not '#x'"}


def test_the_code_layout_lists_every_module():
    layout = load_hook("code_layout").render()
    for path in [*(REPO / "pixel_lightning").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")]:
        if "__pycache__" not in path.parts:
            assert f"`{path.relative_to(REPO).as_posix()}`" in layout


def test_the_readme_counts_the_models_of_conf():
    count = int(re.search(r"^(\d+) models, each a `model=` option", README.read_text(), re.M)[1])
    assert count == len(options("model"))


def model_table() -> dict[str, dict[str, str]]:
    """The README's model table: `model=` name -> its row, by column title."""
    section = README.read_text().split("## Models")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    titles = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [dict(zip(titles, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]
    return {row["`model=`"].strip("`"): row for row in rows}


def test_the_readme_model_table_lists_every_model_of_conf():
    assert sorted(model_table()) == options("model")


def test_the_readme_says_which_models_have_cached_sampling_as_the_code_does():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pixel_lightning.models import AutoregressiveDistribution

    claimed, found = {}, {}
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        for name, row in model_table().items():
            claimed[name] = row["cached sampling"]
            model = OmegaConf.to_container(compose("train", overrides=[f"model={name}"]).model, resolve=True)
            if "net" not in model:  # the DCGAN: a whole image per pass, no pixel order to cache
                found[name] = "n/a (one pass)"
                continue
            distribution = AutoregressiveDistribution(model["net"], model["data"], output=model.get("output"))
            make_sampler = getattr(distribution.net, "cached_sampler", None)
            height, width = model["data"]["height"], model["data"]["width"]
            found[name] = "no" if make_sampler is None or make_sampler(1, height, width) is None else "yes"
    assert claimed == found


def zoo_cards() -> dict[str, dict]:
    """The model card (config.json) of each shipped zoo model, by name."""
    from pixel_lightning import pretrained

    return {name: pretrained.read_model_source(name)["card"] for name in pretrained.zoo_names()}


def test_the_readme_ours_column_is_each_zoo_cards_test_figure():
    """A zoo model's row shows its card's whole-test-split NLL and training time, and links to its card;
    the others say so."""
    shipped = {}
    for name, card in zoo_cards().items():
        architecture = card["hyper_parameters"]["net"]["_target_"].split(".")[-2]  # ...models.<module>.<Class>
        record = card["figures"]["record"]
        # core-hours: the card's own figure for a run on more threads, else its wall time on one thread
        shipped[architecture] = (
            name,
            record["test_nll"],
            card["figures"].get("core_hours", record["train_time_s"] / 3600),
        )
    for model, row in model_table().items():
        ours = row["ours (zoo)"]
        if model in shipped:
            name, nll, core_hours = shipped[model]
            assert f"{nll:.2f} nats" in ours and f"docs/zoo.md#{name}" in ours, (model, ours)
            assert f"{core_hours:.1f} core-hours" in ours, (model, ours)
        else:
            assert ours == "not trained yet", (model, ours)


def test_the_zoo_page_table_shows_each_cards_figures():
    """docs/zoo.md's table of models: each shipped model's row has its card's whole-split test NLL and
    bits/dim and its first-500 figure; the names it lists are those shipped."""
    section = (REPO / "docs" / "zoo.md").read_text().split("## The models")[1].split("\n#")[0]
    rows = {line.split("|")[1].strip().strip("`"): line for line in section.splitlines() if line.startswith("| `")}
    cards = zoo_cards()
    assert sorted(rows) == sorted(cards)
    for name, row in rows.items():
        figures = cards[name]["figures"]
        record = figures["record"]
        assert f"**{record['test_nll']:.2f} nats** ({record['test_bpd']:.4f} bits/dim)" in row, row
        assert f"{figures['first_500_test_nll']:.2f} nats" in row, row


def compare_sweep(preset: str) -> tuple[int, int, float]:
    """(models, seeds, hours of training per run) of a comparison preset."""
    config = yaml.safe_load((REPO / "conf" / "experiment" / f"{preset}.yaml").read_text())
    params = config["hydra"]["sweeper"]["params"]
    days, hours, minutes, seconds = (int(part) for part in config["trainer"]["max_time"].split(":"))
    hours += days * 24 + minutes / 60 + seconds / 3600
    return len(params["model"].split(",")), len(params["seed"].split(",")), hours


@pytest.mark.parametrize("preset", ["compare_mnist", "compare_cifar10"])
def test_the_comparison_presets_state_their_own_size(preset):
    text = (REPO / "conf" / "experiment" / f"{preset}.yaml").read_text()
    models, seeds, hours = compare_sweep(preset)
    counts = re.findall(r"(\d+) models x (\d+) seeds", text)
    assert counts and all((int(m), int(s)) == (models, seeds) for m, s in counts), counts
    for total in re.findall(r"([\d.]+) GPU-hours", text):
        assert float(total) == pytest.approx(models * seeds * hours), total
    for total in re.findall(r"x 3 seeds train for (\d+) minutes", text):
        assert int(total) == round(models * seeds * hours * 60), total


def test_the_readme_install_command_is_the_one_ci_runs():
    install = quickstart_lines()[0].split("#")[0].strip()
    assert install.startswith("pip install ")
    assert f"pip install --quiet {install[len('pip install ') :]}" in (REPO / ".ci" / "run").read_text()


def test_the_readme_python_example_is_the_public_api():
    import pixel_lightning

    code = readme_block("python", "## In Python")
    assert "from pixel_lightning import load_model" in code
    assert callable(pixel_lightning.load_model)


def test_each_quickstart_training_command_composes():
    for command in quickstart()[1:]:
        if command[:2] == ["python", "train.py"] or command[:2] == ["python", "sample.py"]:
            result = subprocess.run(
                [sys.executable, *command[1:], "--cfg", "job"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
                env=os.environ | {"OMP_NUM_THREADS": "1"},
            )
            assert result.returncode == 0, result.stderr[-3000:]
    assert [c[1] for c in quickstart()[1:]] == ["train.py", "train.py", "sample.py"]


@pytest.mark.slow
@requires_data
def test_the_quickstart_runs_from_smoke_training_to_a_sample_grid(tmp_path):
    """`python train.py debug=smoke`, then the quickstart's sampling command on its checkpoint, with
    its own logs/ folder."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PIXEL_DATA_DIR": str(real_data_dir())}
    train = quickstart()[1]
    assert train == ["python", "train.py", "debug=smoke"]
    logs = tmp_path / "logs"
    result = subprocess.run(
        [sys.executable, "train.py", *train[2:], f"paths.log_dir={logs}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = quickstart_lines()[3].split("#")[0].replace("logs/", f"{logs}/")  # run by the shell, as written
    assert line.startswith("python sample.py ")
    result = subprocess.run(
        f"{shlex.quote(sys.executable)} {line[len('python ') :]} paths.log_dir={logs}",
        shell=True,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(logs.glob("sample/runs/*/samples.png"))


def test_the_readme_python_example_runs_on_the_zoo_model():
    """The README's five lines, as written: load the shipped zoo model, sample, complete, log_prob."""
    code = readme_block("python", "## In Python")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert tuple(namespace["images"].shape) == (16, 1, 28, 28)
    assert tuple(namespace["nats"].shape) == (16,) and bool((namespace["nats"] > 0).all())
    assert bool((namespace["completed"][:, :, :14] == namespace["images"][:, :, :14]).all())

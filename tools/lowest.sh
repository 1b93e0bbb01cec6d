#!/usr/bin/env bash
# Test the lowest versions that pyproject.toml allows: a fresh venv gets the core and dev dependencies
# (every extra) with each direct requirement at its lowest allowed version (uv's --resolution
# lowest-direct; their own dependencies at the newest that fit), prints those versions, then runs
# tests that exercise each of them.
#   bash tools/lowest.sh                          # the tests below
#   bash tools/lowest.sh tests/test_pipelines.py  # other pytest arguments instead
# torch comes first, from pip at its lowest allowed version (torch==2.13.0), so that pip's own
# settings (an index or a folder of wheels for the CPU build, say) apply to it; uv then keeps it.
# Set PIXEL_DATA_DIR for the tests that train on real data (they skip without it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-lowest
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet uv torch==2.13.0
# Every direct requirement pinned to its lower bound, so that a resolver that backtracks to a newer
# version (to fit the newest version of something else) fails here instead of testing that one.
"$VENV/bin/python" - > "$VENV/lowest.txt" <<'PY'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for requirement in [*project["dependencies"], *sum(project["optional-dependencies"].values(), [])]:
    match = re.match(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?.*>=\s*([^,;\s]+)", requirement)
    if match and match.group(1) != "pixel-lightning":
        print(f"{match.group(1)}=={match.group(3)}")
PY
# litdata names boto3 with no lower bound; the newest python-dateutil (4.x) fits no modern botocore, so
# without a floor the resolver backtracks to boto3 0.0.3 (2014), which does not import on Python 3.
echo "boto3>=1.28" >> "$VENV/lowest.txt"
"$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --resolution lowest-direct -c "$VENV/lowest.txt" -e ".[dev]"

echo "Lowest direct requirements as resolved:"
"$VENV/bin/python" - <<'PY'
import re
from importlib.metadata import requires, version

names = {re.match(r"[A-Za-z0-9_.-]+", r).group() for r in requires("pixel-lightning") if "pixel-lightning" not in r}
for name in sorted(names, key=str.lower):
    print(f"  {name}=={version(name)}")
PY

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=offline
if [ "$#" -eq 0 ]; then
    # hydra-core: configs; pytorch-lightning, wandb, pillow, rich: the smoke runs of train/sample/eval;
    # torchmetrics: FID on 1-channel features; matplotlib: the comparison's plots; optuna, sqlalchemy,
    # submitit: sweeps; litdata: streaming; tensorboard, mlflow: loggers; the extras' messages: packaging.
    set -- tests/test_configs.py tests/test_cli.py tests/test_fid.py tests/test_compare.py tests/test_sweeps.py \
        tests/test_streaming.py tests/test_loggers.py tests/test_packaging.py
    # mkdocs-material, mkdocstrings: the documentation, built as CI builds it
    NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --site-dir "$VENV/site"
fi
"$VENV/bin/python" -m pytest -q "$@"

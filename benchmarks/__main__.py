"""`python -m benchmarks`: the benchmark suite (benchmarks/cli.py)."""

from benchmarks.cli import main

main()

"""The benchmark suite: training, Lightning's overhead, sampling and the data loader, per architecture
(`python -m benchmarks` or `python benchmarks/run.py`; the options and fields in benchmarks/cli.py).

- models.py: the nets of conf/model/ on conf/data/, synthetic batches, the training loss;
- train_speed.py: training images/s and peak memory, eager and compiled;
- overhead.py: Lightning's (and train.py's whole pipeline's) step against a plain loop, step for step;
- sampling.py: naive against cached sampling side by side, and one image's cached latency;
- loader.py: the DataModule's training loader alone;
- summary.py: the Markdown tables; cli.py: the options and the runs, one fresh process per job.
"""

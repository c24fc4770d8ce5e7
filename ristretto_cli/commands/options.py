"""Options shared by several commands."""
from __future__ import annotations

import click

model_option = click.option("--model", "-m", required=True, type=click.Path(dir_okay=False),
                            help="Network prototxt (any Caffe version).")
weights_option = click.option("--weights", "-w", default=None,
                              help="Caffemodel(s) to copy weights from by layer name; 'a,b' for several.")
gpu_option = click.option("--gpu", type=int, default=None,
                          help="CUDA device id (needs CuPy); omit or -1 for the CPU.")
iterations_option = click.option("--iterations", "-i", type=click.IntRange(min=1), default=50, show_default=True,
                                 help="Number of batches.")
phase_option = click.option("--phase", type=click.Choice(["TEST", "TRAIN"], case_sensitive=False), default="TEST",
                            show_default=True, help="Net phase (include/exclude rules, layer behaviour).")
seed_option = click.option("--seed", type=int, default=None, help="Random seed (fillers, dropout, crops).")

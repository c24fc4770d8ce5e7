"""`ristretto finetune` (alias `train`, Caffe's verb): train or fine-tune a net with a Caffe solver."""
from __future__ import annotations

import os

import click

from . import ui
from .options import gpu_option, level_option, split_stages, stage_option
from ..errors import RistrettoError
from ..solvers.signals import EFFECTS
from ..solvers.solver import Solver, solver_device


def _summary(solver: Solver, result, solver_path: str) -> list[str]:
    lines = []
    if result.stopped_by:
        lines.append(f"Optimization stopped early ({result.stopped_by}) at iteration {result.iterations}.")
    else:
        lines.append(f"Optimization done: {result.iterations} iterations.")
    if result.score_name is not None:
        best = (f"best {result.best_score:.6g} (iteration {result.best_iteration})"
                if result.best_score is not None else "best n/a")
        last = (f"last {result.last_score:.6g} (iteration {result.last_iteration})"
                if result.last_score is not None else "last n/a")
        lines.append(f"Test score {result.score_name}: {best}, {last}.")
    if result.final_weights:
        lines.append(f"Final weights: {result.final_weights}")
        if result.stopped_by:
            lines.append(f"Resume with: ristretto finetune --solver {solver_path} --snapshot {result.final_state}")
    else:
        lines.append("Final weights not saved (snapshot_after_train: false).")
    return lines


@click.command("finetune")
@click.option("--solver", "solver_path", default=None, metavar="SOLVER.prototxt",
              help="Caffe solver definition (net, lr policy, iterations, snapshots).")
@click.option("--weights", "-w", default=None,
              help="Caffemodel(s) to start from, copied by layer name; 'a,b' for several.")
@click.option("--snapshot", default=None, metavar="X.solverstate",
              help="Resume training from this solver state (not together with --weights).")
@gpu_option
@click.option("--trim-activations", is_flag=True,
              help="Also trim activations of Ristretto layers in the TRAIN phase (off by default).")
@click.option("--snapshot-prefix", default=None, help="Override the solver's snapshot_prefix.")
@level_option
@stage_option
@click.option("--sigint-effect", type=click.Choice(EFFECTS), default="stop", show_default=True,
              help="On Ctrl-C: stop (with a snapshot), snapshot and go on, or ignore.")
@click.option("--sighup-effect", type=click.Choice(EFFECTS), default="snapshot", show_default=True,
              help="On SIGHUP: stop, snapshot or ignore.")
def finetune(solver_path, weights, snapshot, gpu, trim_activations, snapshot_prefix, level, stages,
             sigint_effect, sighup_effect):
    """Train a net with a Caffe solver; fine-tune a (quantized) net from --weights or resume a
    --snapshot. Snapshots are Caffe's .caffemodel + .solverstate (plus a .rngstate.json that
    makes a resume exact)."""
    if not solver_path:
        raise RistrettoError("finetune needs --solver SOLVER.prototxt (the net and the training schedule)")
    if weights and snapshot:
        raise RistrettoError("give --snapshot to resume training or --weights to fine-tune, not both")
    if not os.path.isfile(solver_path):
        raise RistrettoError(f"{solver_path}: no such file" if not os.path.exists(solver_path)
                             else f"{solver_path}: is not a file")
    if snapshot and not os.path.isfile(snapshot):
        raise RistrettoError(f"{snapshot}: no such solver state file")
    for w in (weights or "").split(","):
        if w and not os.path.isfile(w):
            raise RistrettoError(f"{w}: no such weights file (--weights)")
    from ..caffe.prototxt import read_solver

    param = read_solver(solver_path)
    if gpu is None and click.get_current_context().get_parameter_source("gpu") == click.core.ParameterSource.COMMANDLINE:
        gpu = -1                                              # --gpu -1: the CPU, whatever the solver says
    device, notice = solver_device(param, gpu, solver_path)   # Caffe's rule: --gpu, else solver_mode
    if notice:
        ui.log(notice)
    with ui.progress_callback("finetune") as on_progress:
        solver = Solver(param, source=solver_path, gpu=device, level=level,
                        stages=split_stages(stages), snapshot_prefix=snapshot_prefix, log=ui.log,
                        on_progress=on_progress)
        with solver:
            result = _train(solver, trim_activations, snapshot, weights, sigint_effect, sighup_effect)
    for line in _summary(solver, result, solver_path):
        click.echo(line)


def _train(solver: Solver, trim_activations, snapshot, weights, sigint_effect, sighup_effect):
    if trim_activations:
        n = solver.set_trim_activations(True)
        ui.log(f"--trim-activations: trimming activations in {n} layer(s) during training" if n else
               "--trim-activations: the train net has no Ristretto layer; nothing to trim")
    solver.start_from(weights, snapshot)
    return solver.solve(sigint_effect=sigint_effect, sighup_effect=sighup_effect)


train_alias = click.Command("train", params=finetune.params, callback=finetune.callback,
                            help="Alias of `finetune` (Caffe's verb).")
COMMANDS = [finetune, train_alias]

"""The built-in demo: the whole Ristretto flow on real data that ships with a package.

scikit-learn's 1,797 handwritten digits (8x8, UCI) become two LMDBs; a small
LeNet-style net is trained in float, `quantize` searches dynamic fixed point word
widths, the quantized net is fine-tuned with full-precision shadow weights, and
`benchmark` scores float, quantized and fine-tuned nets on the held-out digits.

What it may import: the library (``data``, ``net``, ``quantize``, ``solvers``,
``errors``), never ``commands``: ``ristretto demo`` passes it its log and progress
callbacks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import RistrettoError

logger = logging.getLogger(__name__)

TEST_DIGITS = 450  # held out, scored in 9 batches of 50


@dataclass
class DemoResult:
    workdir: Path
    float_accuracy: float
    quantized_accuracy: float
    finetuned_accuracy: float
    chosen: dict
    memory: dict
    quantized_model: Path
    finetuned_weights: Path


def _template(name: str, **subst) -> str:
    text = resources.files(__package__).joinpath(name).read_text()
    for key, value in subst.items():
        text = text.replace(f"@{key}@", str(value))
    return text


def write_digit_lmdbs(workdir: Path, seed: int = 0) -> tuple[Path, Path]:
    """Shuffle the digits with ``seed`` and write train / test LMDBs of uint8 1x8x8 Datums."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise RistrettoError("the demo needs scikit-learn for its digits data: pip install scikit-learn") from exc
    from ..data.lmdb_io import LMDBWriter, make_datum

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    order = np.random.default_rng(seed).permutation(len(images))
    splits = {"train": order[TEST_DIGITS:], "test": order[:TEST_DIGITS]}
    paths = []
    for split, idx in splits.items():
        path = workdir / f"digits_{split}_lmdb"
        if not path.exists():
            with LMDBWriter(path) as w:
                for k, i in enumerate(idx):
                    w.put(f"{k:08d}", make_datum(images[i], int(digits.target[i])).SerializeToString())
        paths.append(path)
    return paths[0], paths[1]


def _accuracy(model: Path, weights: Path) -> float:
    from ..net.scoring import score
    from ..net.loading import load_net

    net = load_net(str(model), str(weights), "TEST")
    try:
        return score(net, TEST_DIGITS // 50).means["accuracy"]
    finally:
        net.close()


def run_demo(workdir: str | Path = "runs/demo", train_iters: int = 1500, finetune_iters: int = 500,
             error_margin: float = 1.0, trimming_mode: str = "dynamic_fixed_point",
             log: Callable[[str], None] | None = None, on_progress: Callable | None = None,
             on_quantized: Callable | None = None, activation_range: str = "original") -> DemoResult:
    """Train, quantize, fine-tune and score (see the module docstring). Prints nothing.

    ``activation_range``: the quantize search's (``original`` is the original's rule, whose
    0..1 input pixels get no sign bit; ``signed`` / ``unsigned`` are ours).

    ``log(line)``: the steps and the solvers' training log (default: this module's logger,
    INFO). ``on_progress(task, done, total, info)``: progress of the tasks "finetune"
    (both trainings) and "quantize". ``on_quantized(outcome)``: called with the
    :class:`~ristretto_cli.quantize.procedure.QuantizeOutcome` as soon as the search ends.
    """
    from ..quantize.procedure import quantize
    from ..solvers.solver import Solver

    log = log or logger.info

    def progress(task):
        if on_progress is None:
            return None
        return lambda done, total, info=None: on_progress(task, done, total, info)

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    train_db, test_db = write_digit_lmdbs(workdir)
    model = workdir / "digits_train_test.prototxt"
    model.write_text(_template("digits_train_test.prototxt", TRAIN_LMDB=train_db, TEST_LMDB=test_db))

    log(f"[1/4] training the float net for {train_iters} iterations on {1797 - TEST_DIGITS} digits")
    solver_file = workdir / "float_solver.prototxt"
    solver_file.write_text(_template("digits_solver.prototxt", NET=model, PREFIX=workdir / "float",
                                     MAX_ITER=train_iters, BASE_LR=0.01))
    with Solver.from_file(str(solver_file), log=log, on_progress=progress("finetune")) as solver:
        float_weights = Path(solver.solve().final_weights)
    float_acc = _accuracy(model, float_weights)

    log(f"[2/4] quantize: searching {trimming_mode} word widths within {error_margin}% of {float_acc:.4f}")
    quantized = workdir / "digits_quantized.prototxt"
    outcome = quantize(str(model), str(float_weights), str(quantized), trimming_mode,
                       iterations=TEST_DIGITS // 50, error_margin=error_margin, activation_range=activation_range,
                       report=str(workdir / "quantize_report.json"), on_progress=progress("quantize"))
    if on_quantized is not None:
        on_quantized(outcome)
    quant_acc = _accuracy(quantized, float_weights)

    log(f"[3/4] fine-tuning the quantized net for {finetune_iters} iterations (shadow weights in float)")
    ft_solver = workdir / "finetune_solver.prototxt"
    ft_solver.write_text(_template("digits_solver.prototxt", NET=quantized, PREFIX=workdir / "finetuned",
                                   MAX_ITER=finetune_iters, BASE_LR=0.001))
    with Solver.from_file(str(ft_solver), log=log, on_progress=progress("finetune")) as solver:
        solver.load_weights(str(float_weights))
        ft_weights = Path(solver.solve().final_weights)

    log("[4/4] benchmark: float, quantized, quantized + fine-tuned on the held-out digits")
    ft_acc = _accuracy(quantized, ft_weights)
    return DemoResult(workdir, float_acc, quant_acc, ft_acc, dict(outcome.result.chosen),
                      outcome.report.get("parameter_memory", {}), quantized, ft_weights)

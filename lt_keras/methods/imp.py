"""lt-imp: IMP (Frankle & Carbin 2019) with Zhou et al.'s ablations, as a run directory that resumes.

``search`` is the pipeline for any model builder: each round is written to
``round_<k>/`` (mask, metrics, ticket, and ``next.npz``: the next mask, the
rewind weights and theta_final) only once complete; a killed round resumes at
its last evaluation from ``round_<k>.backup/``; a resumed run is
bit-identical to an uninterrupted one. ``Imp`` is the method over a
registered model (``lt-imp``). The round engine itself is ``lt_keras.imp``.
"""
import os
import shutil
import time

import numpy as np
from absl import logging

from lt_keras._keras import keras
from lt_keras.convert import mask_model
from lt_keras.imp import ImpConfig, RoundState, TrainedRound, write_round_ticket, check_schedule, imp_rounds, kernels
from lt_keras.io_utils import atomic_write_json, load_weights, read_json, save_weights
from lt_keras.layers import masked_layers
from lt_keras.mask import Mask
from lt_keras.methods.base import Method, RunSpec
from lt_keras.models import build_model
from lt_keras.precision import SearchPrecision
from lt_keras.pruning import random_mask_like
from lt_keras.report import plot_rounds, round_table
from lt_keras.seeds import rng_for, seed_globals
from lt_keras.training import TrainConfig, fit, format_duration


class Imp(Method):
    """IMP rounds of ``spec.model`` (``ImpConfig``): round_<k>/ per round, report.png, summary.json."""

    binary = "lt-imp"
    Config = ImpConfig
    config_key = "imp"
    searches = True

    def execute(self, run_dir, spec: RunSpec, data) -> dict:
        imp = self.config
        results = search(run_dir, lambda: build_model(spec.model, data.input_shape, data.num_classes, mask0=imp.mask0),
                         data, imp, spec.train, precision=spec.precision)
        plot_rounds(results, os.path.join(run_dir, "report.png"), title=f"{spec.model} on {data.spec.name}: IMP, "
                    f"criterion {imp.criterion}, rewind {imp.rewind}")
        return {"rounds": results}

    def report(self, summary, run_dir) -> str:
        return (f"{round_table(summary['rounds'])}\n\nRun directory: {run_dir} (report.png, summary.json, "
                "round_<k>/ticket)")


def search(run_dir, build, data, imp: ImpConfig, train: TrainConfig, verbose=None,
           precision: SearchPrecision = SearchPrecision(), callbacks=()) -> list:
    """Run (or resume) IMP in ``run_dir``: lt-imp as one call; returns the list of per-round metrics.

    ``build()`` must return a fresh masked model with deterministic initial
    weights. ``precision`` turns the trained model into its fake-quantized
    twin; tickets are fp32. Each round is saved to ``round_<k>/`` (mask,
    metrics, ticket, and ``next.npz``: the next mask, the rewind weights and
    theta_final) only once complete; a killed round resumes at its last
    evaluation from ``round_<k>.backup/``. A resumed run is bit-identical to
    an uninterrupted one. ``callbacks`` (Keras callbacks: a logger, a
    profiler) join every training of the search, the controls' included.
    """
    base, user_callbacks = build, list(callbacks)

    def build():
        return precision.to_search(_with_mask0(base(), imp.mask0))

    data.check_batch_size(train.batch_size)
    keras.utils.set_random_seed(train.seed)  # theta_0 as lt-train draws it for the same --seed
    model = build()
    check_schedule(model, imp)
    os.makedirs(run_dir, exist_ok=True)
    init_path = os.path.join(run_dir, "init_weights.npz")
    if os.path.exists(init_path):
        init_weights = load_weights(init_path)
    else:
        init_weights = model.get_weights()
        save_weights(init_path, init_weights)
    model.set_weights(init_weights)
    state, results = RoundState(0, Mask.ones_like(model), init_weights), []
    while state.k <= imp.total_rounds and os.path.exists(_round_file(run_dir, state.k, "metrics.json")):
        results.append(read_json(_round_file(run_dir, state.k, "metrics.json")))
        state = _load_round_state(run_dir, state.k, len(init_weights))
        shutil.rmtree(_backup_dir(run_dir, state.k - 1), ignore_errors=True)  # a kill right after the round
        logging.info("round %d is complete; skipping.", state.k - 1)
    if state.k > imp.total_rounds:
        return results
    untrained, first_round, started = {}, state.k, time.perf_counter()

    def before_train(k, model, mask):
        if verbose != 0:
            eta = ""
            if k > first_round:  # from the rounds this process ran (each round has fewer weights, not fewer steps)
                per_round = (time.perf_counter() - started) / (k - first_round)
                eta = f", ETA {format_duration(per_round * (imp.total_rounds + 1 - k))}"
            print(f"=== round {k} of {imp.total_rounds}: {100 * mask.density():.1f}% of weights{eta}", flush=True)
        tmp = _round_file(run_dir, k) + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        untrained[k] = _evaluate(_compiled(model), data)
        write_round_ticket(os.path.join(tmp, "ticket"), model, mask, imp, k, precision)

    def train_round(k, model, callbacks):
        seed_globals(train.seed, k, "train")
        return fit(model, data, train, callbacks=[*callbacks, *user_callbacks], verbose=verbose,
                   backup_dir=os.path.join(_backup_dir(run_dir, k), "round"))

    def after_round(done: TrainedRound):
        k, mask, result, tmp = done.k, done.mask, done.trained, _round_file(run_dir, done.k) + ".partial"
        metrics = {
            "round": k, "density": mask.density(), "layer_density": mask.layer_densities(),
            "early_stop_step": result.early_stop_step,
            "early_stop_val_accuracy": result.early_stop_val_accuracy,
            "early_stop_test_accuracy": result.early_stop_test_accuracy,
            "final_val_accuracy": result.final_val_accuracy, "final_test_accuracy": result.final_test_accuracy,
            "untrained_test_accuracy": untrained[k], "wall_time_s": result.wall_time_s,
            "search_precision": precision.describe(),
            "controls": {c: _control(c, model, build, data, train, mask, done.next.rewind_weights, k, verbose,
                                     os.path.join(_backup_dir(run_dir, k), c), user_callbacks)
                         for c in (imp.controls if k > 0 else ())},
        }
        mask.save(os.path.join(tmp, "mask.npz"))
        nxt = done.next
        np.savez(os.path.join(tmp, "next.npz"), **{f"mask:{key}": v for key, v in nxt.mask.items()},
                 **{f"rewind{i}": w for i, w in enumerate(nxt.rewind_weights)},
                 **{f"final:{key}": v for key, v in nxt.final_kernels.items()},
                 **{f"chain:{key}": v for key, v in (nxt.chain_kernels or {}).items()})
        atomic_write_json(os.path.join(tmp, "metrics.json"), metrics)
        shutil.rmtree(_round_file(run_dir, k), ignore_errors=True)
        os.replace(tmp, _round_file(run_dir, k))  # the round exists only once complete
        shutil.rmtree(_backup_dir(run_dir, k), ignore_errors=True)
        results.append(metrics)

    imp_rounds(model, imp, train.seed, train_round, state, kernels(model),
               fresh_draw=lambda k: kernels(_seeded_build(build, train.seed, k, "mask1_draw")),
               before_train=before_train, after_round=after_round,
               snapshot_path=lambda k: os.path.join(_backup_dir(run_dir, k), "rewind_weights.npz"),
               steps_per_epoch=train.steps_per_epoch(data.num_train))
    return results


def _round_file(run_dir, k, name=None):
    folder = os.path.join(run_dir, f"round_{k}")
    return folder if name is None else os.path.join(folder, name)


def _backup_dir(run_dir, k):
    """Round ``k``'s trainings in progress (Keras ``BackupAndRestore`` state per training, the late-rewind
    snapshot): a killed round resumes at its last evaluation; removed once the round is complete."""
    return _round_file(run_dir, k) + ".backup"


def _load_round_state(run_dir, k, num_weights) -> RoundState:
    """The state round ``k + 1`` starts from, as round ``k`` saved it."""
    with np.load(_round_file(run_dir, k, "next.npz")) as f:
        def prefixed(prefix):
            return {key[len(prefix):]: f[key] for key in f.files if key.startswith(prefix)}

        return RoundState(k + 1, Mask(prefixed("mask:")), [f[f"rewind{i}"] for i in range(num_weights)],
                          prefixed("final:"), prefixed("chain:") or None)


def _evaluate(model, data):
    return float(model.evaluate(data.eval_dataset("test"), verbose=0, return_dict=True)["accuracy"])


def _with_mask0(model, mask0):
    """``model``, converted only where a builder did not give its masked layers ``mask0`` (a registered model
    is built with it: ``build_model(..., mask0=...)``)."""
    if all(layer.mask0 == mask0 for layer in masked_layers(model)):
        return model
    return mask_model(model, mask0=mask0)


def _seeded_build(build, seed, k, purpose):
    seed_globals(seed, k, purpose)
    return build()


def _compiled(model):
    if model.optimizer is None:
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def _control(name, model, build, data, train, mask, rewind_weights, k, verbose, backup_dir=None, callbacks=()):
    """Train a baseline with the ticket's per-layer densities (Frankle & Carbin's controls).

    random_reinit: the ticket's mask over a fresh initialization; random_prune:
    random positions with the same per-layer counts, over the ticket's rewind
    weights. Both train on the ticket's data order, in the search's own
    ``model`` (its compiled step is reused; the next round sets every weight).
    """
    if name == "random_reinit":
        used, weights = mask, _seeded_build(build, train.seed, k, name).get_weights()
    else:
        used, weights = random_mask_like(mask, rng_for(train.seed, k, name)), rewind_weights
    model.set_weights(weights)
    used.apply_to(model)
    seed_globals(train.seed, k, "train")
    result = fit(model, data, train, callbacks=callbacks, verbose=verbose, backup_dir=backup_dir)
    return {"density": used.density(), "layer_density": used.layer_densities(),
            "early_stop_step": result.early_stop_step,
            "early_stop_test_accuracy": result.early_stop_test_accuracy,
            "final_test_accuracy": result.final_test_accuracy}



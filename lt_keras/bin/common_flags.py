"""Flags shared by every binary: the same name and meaning everywhere.

Binaries call ``define_common_flags()`` at import (never the library itself),
then turn the parsed values into frozen configs with the helpers below.
"""
import contextlib
import dataclasses
import errno
import json
import os
import sys

from absl import flags

from lt_keras.data import DEFAULT_DATASET, DataConfig, dataset_names
from lt_keras.errors import LtKerasError
from lt_keras.models import model_names
from lt_keras.training import LR_SCHEDULES, OPTIMIZERS, TrainConfig

FLAGS = flags.FLAGS
DEFAULT_EPOCHS = 10


def define_common_flags(default_model="lenet_300_100"):
    if "dataset" in FLAGS:  # Already defined in this process (e.g. two binaries imported by tests).
        return
    # Data.
    flags.DEFINE_enum("dataset", DEFAULT_DATASET, dataset_names(),
                      f"Dataset. {DEFAULT_DATASET} is embedded (offline); the others come from "
                      "--data_dir or TFDS.")
    flags.DEFINE_string("data_dir", None, "Folder with the dataset's official files (IDX for MNIST-style "
                        "sets; the CIFAR python batch folder). Overrides TFDS.")
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory (TFDS's default if unset).")
    flags.DEFINE_integer("validation_size", None, "Validation examples, taken from the end of the training "
                         "set (default: 5000 for full sets, 500 for mnist_5k).", lower_bound=1)
    flags.DEFINE_integer("max_train_examples", None, "Use only the first N training examples (quick runs).",
                         lower_bound=1)
    # Model and run.
    flags.DEFINE_enum("model", default_model, model_names(), "Registered model.")
    flags.DEFINE_string("output_dir", None, "Run directory (created; re-running resumes or skips).")
    flags.DEFINE_integer("seed", 0, "Seed for initialization, shuffling and masks.")
    # Length and evaluation.
    flags.DEFINE_integer("batch_size", 60, "Training batch size.", lower_bound=1)
    flags.DEFINE_integer("train_steps", None, "Training iterations (or use --epochs).", lower_bound=1)
    flags.DEFINE_float("epochs", None, f"Training epochs (or use --train_steps; default {DEFAULT_EPOCHS}).",
                       lower_bound=0)
    flags.DEFINE_integer("eval_every", None, "Evaluate every N iterations (default: once per epoch).",
                         lower_bound=1)
    flags.DEFINE_bool("jit_compile", None, "Compile training steps with XLA (unset: on a GPU, and on a CPU "
                      "for nets without convolutions, whose XLA CPU kernels are slower).")
    # Optimization.
    flags.DEFINE_enum("optimizer", "adam", list(OPTIMIZERS), "Optimizer.")
    flags.DEFINE_float("learning_rate", 1.2e-3, "Peak learning rate.", lower_bound=0)
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0)
    flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay.", lower_bound=0)
    flags.DEFINE_enum("lr_schedule", "constant", list(LR_SCHEDULES), "Learning-rate schedule after warmup.")
    flags.DEFINE_list("lr_decay_steps", [], "Iterations at which the step schedule multiplies the rate by "
                      "--lr_decay_factor.")
    flags.DEFINE_float("lr_decay_factor", 0.1, "Step-schedule factor.", lower_bound=0)
    flags.DEFINE_integer("warmup_steps", 0, "Linear learning-rate warmup iterations.", lower_bound=0)
    flags.register_multi_flags_validator(
        ["train_steps", "epochs"],
        lambda v: v["train_steps"] is None or v["epochs"] is None,
        "--train_steps and --epochs both set the training length; give only one.",
    )


def _int_list(name, values):
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise LtKerasError(f"--{name}: expected a comma-separated list of integers, got {values}.") from None


def data_config() -> DataConfig:
    return DataConfig(
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        tfds_data_dir=FLAGS.tfds_data_dir,
        validation_size=FLAGS.validation_size,
        max_train_examples=FLAGS.max_train_examples,
    )


def define_precision_flags():
    """--precision and bit widths: the search binaries (lt-imp, lt-supermask, lt-early-bird)."""
    if "precision" in FLAGS:
        return
    flags.DEFINE_enum("precision", "fp32", ["fp32", "int8"], "Search precision: int8 fake-quantizes weights, "
                      "activations and gradients (TFMOT); tickets are written and retrained at fp32.")
    flags.DEFINE_integer("weight_bits", 8, "int8 search: weight bits of masked layers.")
    flags.DEFINE_integer("activation_bits", 8, "int8 search: activation bits of masked layers.")
    flags.DEFINE_integer("gradient_bits", 8, "int8 search: bits of backward errors and weight gradients.")


def search_precision():
    from lt_keras.precision import SearchPrecision

    return SearchPrecision(FLAGS.precision, FLAGS.weight_bits, FLAGS.activation_bits, FLAGS.gradient_bits)


def train_config() -> TrainConfig:
    epochs = FLAGS.epochs
    if FLAGS.train_steps is None and epochs is None:
        epochs = DEFAULT_EPOCHS
    return TrainConfig(
        optimizer=FLAGS.optimizer,
        learning_rate=FLAGS.learning_rate,
        momentum=FLAGS.momentum,
        weight_decay=FLAGS.weight_decay,
        lr_schedule=FLAGS.lr_schedule,
        lr_decay_steps=_int_list("lr_decay_steps", FLAGS.lr_decay_steps),
        lr_decay_factor=FLAGS.lr_decay_factor,
        warmup_steps=FLAGS.warmup_steps,
        batch_size=FLAGS.batch_size,
        train_steps=FLAGS.train_steps,
        epochs=epochs,
        eval_every=FLAGS.eval_every,
        jit_compile=FLAGS.jit_compile,
        seed=FLAGS.seed,
    ).validate()


def config_dict(**parts) -> dict:
    """JSON-ready dict of frozen dataclass configs, exactly as it reads back from config.json."""
    plain = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in parts.items()}
    return json.loads(json.dumps(plain))


def open_run(output_dir, binary_module, **config_parts):
    """Open (or re-open) the run directory for this config: ``(run, summary)``, summary None unless complete."""
    from absl import logging

    from lt_keras.runs import RunDir

    run = RunDir(output_dir)
    _OPENED.append(run)
    run.open(config_dict(**config_parts), operative_flagfile(binary_module))
    if run.is_complete():
        logging.info("%s is complete; nothing to train.", run.path)
        return run, run.read_summary()
    return run, None


def operative_flagfile(binary_module: str) -> str:
    """The flags of the lt_keras modules, one per line: a flagfile that re-runs this run."""
    lines = [f"# Operative flags of {binary_module}; re-run with --flagfile=<this file>."]
    for module, module_flags in sorted(FLAGS.flags_by_module_dict().items()):
        if "lt_keras" not in module and module != binary_module and module != sys.argv[0]:
            continue
        for flag in sorted(module_flags, key=lambda f: f.name):
            if flag.value is not None:
                lines.append(flag.serialize())
    return "\n".join(lines) + "\n"


_OPENED = []  # run directories this process opened, for ``user_errors``
_DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                errno.EACCES: "permission denied", errno.EROFS: "the file system is read-only",
                errno.EPERM: "permission denied"}


@contextlib.contextmanager
def user_errors(binary):
    """Turn what a user can act on into one line and a non-zero exit, never a traceback.

    ``LtKerasError`` (bad input, a diverged run, a refused mask), a full or
    read-only disk, and Ctrl-C. A run directory this process created and in
    which nothing was done yet is removed again, so the corrected command is
    not refused as "a different configuration".
    """
    try:
        yield
    except LtKerasError as e:
        _abandon_fresh_runs()
        sys.exit(f"{binary}: error: {e}")
    except KeyboardInterrupt:
        _abandon_fresh_runs()
        sys.stderr.write(f"{binary}: interrupted; re-run the same command to resume from the last saved point.\n")
        sys.stderr.flush()
        # Every result is already on disk (atomic writes); TensorFlow's teardown would take seconds more.
        os._exit(130)
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        _abandon_fresh_runs()
        where = f" writing {e.filename}" if e.filename else ""
        sys.exit(f"{binary}: error: {_DISK_ERRORS[e.errno]}{where}; completed work is kept, free space or fix "
                 "permissions and re-run the same command to resume.")


def _abandon_fresh_runs():
    for run in _OPENED:
        run.abandon()

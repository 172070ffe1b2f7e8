"""Flags shared by every binary: the same name and meaning everywhere.

Each binary defines its flags in ``define_flags()`` (called by its entry
point, so importing a binary defines nothing), most of them generated from
the config dataclasses (``config_flags``), then turns the parsed values into
frozen configs with the helpers below.
"""
import contextlib
import dataclasses
import errno
import json
import logging
import os
import signal
import sys

from absl import flags

from lt_keras.bin import config_flags
from lt_keras.data import DataConfig
from lt_keras.errors import ConfigError, LtKerasError
from lt_keras.models import model_names
from lt_keras.training import TrainConfig

FLAGS = flags.FLAGS


HELP_FLAGS = {"-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml"}


_LIBRARIES = tuple(os.sep + name + os.sep for name in ("tensorflow", "tf_keras", "tensorflow_datasets"))


def _library_info_filter(record):
    """Keep a log record unless it is an INFO (or DEBUG) line of TensorFlow's own modules."""
    return record.levelno >= logging.WARNING or not any(part in record.pathname for part in _LIBRARIES)


def run_binary(define_flags, main):
    """Define a binary's flags, make them the main module's key flags (so ``--help`` and ``--helpshort``
    list them, not only ``--helpfull`` among absl's own), and run ``main``."""
    from absl import app
    from absl import logging as absl_logging

    # TensorFlow's own INFO lines (a checkpoint's "Sharding callback duration" at every evaluation, through
    # absl) would come between the progress lines; its warnings and errors still show, and so do ours.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    absl_logging.get_absl_logger().addFilter(_library_info_filter)
    before = set(FLAGS)
    define_flags(FLAGS)
    for name in sorted(set(FLAGS) - before):
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
    try:
        app.run(main)
    except SystemExit as stop:  # absl exits 1 after printing help; asking for help is no error
        if stop.code == 1 and set(sys.argv[1:]) & HELP_FLAGS:
            raise SystemExit(0) from None
        raise


def define_common_flags(default_model="lenet_300_100", flag_values=FLAGS):
    """--model, --output_dir, and the data and training flags (generated from DataConfig and TrainConfig)."""
    flags.DEFINE_enum("model", default_model, model_names(), "Registered model.", flag_values=flag_values)
    flags.DEFINE_string("output_dir", None, "Run directory (created; re-running resumes or skips).",
                        flag_values=flag_values)
    config_flags.define(DataConfig, flag_values)
    config_flags.define(TrainConfig, flag_values)
    flags.register_multi_flags_validator(
        ["train_steps", "epochs"],
        lambda v: v["train_steps"] is None or v["epochs"] is None,
        "--train_steps and --epochs both set the training length; give only one.",
        flag_values=flag_values,
    )


def define_precision_flags(flag_values=FLAGS):
    """--precision and bit widths (from SearchPrecision): the search binaries."""
    from lt_keras.precision import SearchPrecision

    config_flags.define(SearchPrecision, flag_values)


def data_config() -> DataConfig:
    return config_flags.build(DataConfig)


def search_precision():
    from lt_keras.precision import SearchPrecision

    return config_flags.build(SearchPrecision)


def train_config() -> TrainConfig:
    return config_flags.build(TrainConfig)


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


class Terminated(BaseException):
    """SIGTERM (a scheduler's stop) or SIGHUP (a closed terminal), raised in the main thread like Ctrl-C."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def _disk_full(error):
    """A TensorFlow write error that is a full disk (checkpoints, SavedModels): TensorFlow raises its own type."""
    from lt_keras._keras import tf

    return isinstance(error, (tf.errors.ResourceExhaustedError, tf.errors.UnknownError, tf.errors.InternalError)) \
        and "no space left on device" in str(error).lower()


@contextlib.contextmanager
def user_errors(binary):
    """Turn what a user can act on into one line and a non-zero exit, never a traceback.

    ``LtKerasError`` (bad input, a diverged run, a refused mask), a full or
    read-only disk, Ctrl-C, SIGTERM and SIGHUP (exit 128 + the signal). A run
    directory this process created and in which nothing was done yet is
    removed again, so the corrected command is not refused as "a different
    configuration".
    """
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_terminated)
    try:
        yield
    except LtKerasError as e:
        _abandon_fresh_runs()
        # A config field's error names its flag.
        sys.exit(f"{binary}: error: " + (f"--{e.field}: {e.message}" if isinstance(e, ConfigError) else str(e)))
    except (KeyboardInterrupt, Terminated) as e:
        _abandon_fresh_runs()
        signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        sys.stderr.write(f"{binary}: {what}; re-run the same command to resume from the last saved point.\n")
        sys.stderr.flush()
        # Every result is already on disk (atomic writes); TensorFlow's teardown would take seconds more.
        os._exit(128 + signum)
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        _abandon_fresh_runs()
        where = f" writing {e.filename}" if e.filename else ""
        sys.exit(f"{binary}: error: {_DISK_ERRORS[e.errno]}{where}; completed work is kept, free space or fix "
                 "permissions and re-run the same command to resume.")
    except Exception as e:  # noqa: BLE001 (only TensorFlow's disk-full errors are handled; the rest re-raise)
        if not _disk_full(e):
            raise
        _abandon_fresh_runs()
        sys.exit(f"{binary}: error: the disk is full ({type(e).__name__}); completed work is kept, free space "
                 "and re-run the same command to resume.")


def model_from_ticket(ticket_dir):
    """lt-retrain and lt-export take the model from the ticket: a --model naming another is refused, and an
    absent one is set to the ticket's (so flags.txt records the model that runs)."""
    from lt_keras.ticket import ticket_model_name

    name = ticket_model_name(ticket_dir)
    if FLAGS["model"].present and FLAGS.model != name:
        raise ConfigError("model", f"the ticket holds a {name!r} model, not {FLAGS.model!r}; drop --model.")
    if name in model_names():
        FLAGS.model = name


def _abandon_fresh_runs():
    for run in _OPENED:
        run.abandon()

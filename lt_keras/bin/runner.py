"""What every binary is: a method of ``lt_keras.methods`` behind absl flags.

``binary(Method)`` gives a binary's entry point: define the method's flags
(from its configs), build the configs from the parsed flags, run the method
and print its report, with what a user can act on (bad input, a full disk,
a signal) as one line and a non-zero exit. Importing a binary defines no
flags; its entry point does.
"""
import contextlib
import errno
import logging
import os
import signal
import sys

from absl import flags

from lt_keras._keras import tf
from lt_keras.errors import ConfigError, LtKerasError
from lt_keras.runs import abandon_fresh_runs

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
        abandon_fresh_runs()
        # A config field's error names its flag.
        sys.exit(f"{binary}: error: " + (f"--{e.field}: {e.message}" if isinstance(e, ConfigError) else str(e)))
    except (KeyboardInterrupt, Terminated) as e:
        abandon_fresh_runs()
        signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        sys.stderr.write(f"{binary}: {what}; re-run the same command to resume from the last saved point.\n")
        sys.stderr.flush()
        # Every result is already on disk (atomic writes); TensorFlow's teardown would take seconds more.
        os._exit(128 + signum)
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        abandon_fresh_runs()
        where = f" writing {e.filename}" if e.filename else ""
        sys.exit(f"{binary}: error: {_DISK_ERRORS[e.errno]}{where}; completed work is kept, free space or fix "
                 "permissions and re-run the same command to resume.")
    except Exception as e:  # noqa: BLE001 (only TensorFlow's disk-full errors are handled; the rest re-raise)
        if not _disk_full(e):
            raise
        abandon_fresh_runs()
        sys.exit(f"{binary}: error: the disk is full ({type(e).__name__}); completed work is kept, free space "
                 "and re-run the same command to resume.")


def binary(method_class):
    """The entry point of the binary for ``method_class`` (a ``lt_keras.methods.Method``)."""

    def main(argv):
        from absl import app

        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        with user_errors(method_class.binary):
            method, run_dir, spec = method_class.from_flags(FLAGS)
            summary = method.run(run_dir, spec)
        print(method.report(summary, run_dir))

    return lambda: run_binary(method_class.define_flags, main)

"""Run directories: everything needed to understand, re-run and resume a run.

A run directory holds the operative flagfile (``flags.txt``, re-runnable with
``--flagfile``), ``config.json``, ``versions.json`` and, once finished,
``summary.json``. Re-using a directory with a different configuration is an
error that leaves the directory untouched; re-using it with the same
configuration resumes (or, if finished, does nothing).

One process writes a run directory at a time: ``open`` takes an exclusive
OS lock on ``.lock`` for the life of the process (the kernel drops it on any
exit, ``kill -9`` included, so a dead holder never blocks a resume), and a
second run on the same folder stops at once, naming the holder's PID.
"""
import fcntl
import os
import shutil
import sys

from lt_keras.duration import canonical
from lt_keras.errors import RunDirError
from lt_keras.io_utils import atomic_write_json, atomic_write_text, read_json
from lt_keras.versions import library_versions

# Settings that change how fast a run goes, not what it computes: a run resumes under other values.
_EXECUTION_ONLY = ("jit_compile", "steps_per_execution")


# Settings added after runs were made, with the value that computes what those runs computed: a run directory
# whose config.json lacks one resumes under that value (and only under it).
ADDED_LATER = {"weight_decay_mode": "decoupled", "augment": "none", "prune_count": "round", "momentum_form": "keras",
               "adam_epsilon": 1e-7, "normalization": "dataset", "prune_rule": "count", "initial_mask": False,
               "sparsity_pattern": "unstructured"}


def _moved(config):
    """Early-Bird's ``lr_decay_epochs`` became the training schedule's decay points, in epochs (which it forced
    to the step schedule): an older run directory reads as the same run written the new way."""
    old = config.get("early_bird")
    if not (isinstance(old, dict) and "lr_decay_epochs" in old and isinstance(config.get("train"), dict)):
        return config
    epochs = old["lr_decay_epochs"]
    config = dict(config, early_bird={k: v for k, v in old.items() if k != "lr_decay_epochs"})
    if epochs:
        config["train"] = dict(config["train"], lr_schedule="step",
                               lr_decay_steps=[canonical(f"{e:g}ep", "lr_decay_epochs") for e in epochs])
    return config


def run_identity(config, top=True):
    """What makes two configs the same run: execution-only keys dropped, data folders resolved, settings added
    later dropped where they hold the value older runs computed with, moved settings read where they are now."""
    if isinstance(config, dict):
        config = _moved(config) if top else config
        return {k: (os.path.realpath(v) if k == "data_dir" and isinstance(v, str) else run_identity(v, False))
                for k, v in config.items()
                if k not in _EXECUTION_ONLY and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    if isinstance(config, (list, tuple)):
        return [run_identity(v, False) for v in config]
    return config


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


_HELD_LOCKS = {}  # path -> open lock file: held until the process exits, whatever happens to RunDir objects
_OPENED = []  # run directories this process locked, for ``abandon_fresh_runs``


def take_lock(path, busy, what_to_do):
    """Hold an exclusive OS lock on the file ``path`` for the life of the process (``kill -9`` frees it), signed
    with our PID; raise ``RunDirError`` ("<busy> (process N); <what_to_do>.") if another process holds it."""
    try:
        handle = open(path, "a+")
    except OSError as e:
        raise RunDirError(f"cannot create {path}: {e.strerror}.") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        current = os.stat(path)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        if not (holder.isdigit() and _alive(int(holder))):  # the holder has not signed yet: a previous PID
            holder = "starting up, not yet signed"
        raise RunDirError(f"{busy} (process {holder}); {what_to_do}.") from None
    if current.st_ino != os.fstat(handle.fileno()).st_ino:  # released and removed (release_lock) meanwhile
        handle.close()
        return take_lock(path, busy, what_to_do)
    return handle


def release_lock(handle, path):
    """Remove a lock file taken with ``take_lock`` and let it go (a process that opened it just before sees the
    file gone and takes a new one)."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    handle.close()


def sign_lock(handle):
    """Write our PID into a held lock file: what a refused second writer names."""
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()


class RunDir:
    CONFIG, FLAGS, VERSIONS, SUMMARY, LOCK = "config.json", "flags.txt", "versions.json", "summary.json", ".lock"
    METADATA = (CONFIG, FLAGS, VERSIONS, LOCK)

    def __init__(self, path):
        if not path:
            raise RunDirError("a run directory is required.")
        self.path = os.path.abspath(os.fspath(path))
        self.fresh = False  # created by this opener: removed again if the run is refused before any work

    def lock(self):
        """Take the run directory's writer lock (creating the folder), or raise naming the holder.

        The lock belongs to the process: opening the same folder again in it succeeds.
        """
        if self.path in _HELD_LOCKS:
            return self
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunDirError(f"{self.path} exists and is not a directory.")
        existed = os.path.isdir(self.path) and bool(os.listdir(self.path))
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create {self.path}: {e.strerror}.") from None
        handle = take_lock(self.file(self.LOCK), f"{self.path} is in use by another run",
                           "wait for it to finish or choose another output_dir")
        _HELD_LOCKS[self.path], self.fresh = handle, not existed
        _OPENED.append(self)
        return self

    def _sign_lock(self):
        sign_lock(_HELD_LOCKS[self.path])

    def abandon(self):
        """Remove a directory this process created if it holds nothing but run metadata (a refused command)."""
        if not self.fresh or not os.path.isdir(self.path):
            return False
        if set(os.listdir(self.path)) - set(self.METADATA):
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        _HELD_LOCKS.pop(self.path).close()
        return True

    def file(self, name):
        return os.path.join(self.path, name)

    def exists(self, name):
        return os.path.exists(self.file(name))

    def open(self, config: dict, flagfile: str):
        """Lock the directory, then create it or check that an existing one holds this same config."""
        self.lock()
        if self.exists(self.CONFIG):
            saved, now = run_identity(read_json(self.file(self.CONFIG))), run_identity(config)
            if saved != now:
                diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
                raise RunDirError(
                    f"{self.path} holds a run with a different configuration "
                    f"(differs in {diff}); choose a new output_dir or repeat the original "
                    f"settings (a binary's: --flagfile={self.file(self.FLAGS)})."
                )
        else:
            atomic_write_json(self.file(self.CONFIG), config)
        self._sign_lock()  # only now: a refused opener leaves the folder byte for byte as it was
        atomic_write_text(self.file(self.FLAGS), flagfile)
        atomic_write_json(self.file(self.VERSIONS), {**library_versions(), "argv": sys.argv})
        return self

    def is_complete(self):
        return self.exists(self.SUMMARY)

    def read_summary(self):
        return read_json(self.file(self.SUMMARY))

    def write_summary(self, summary: dict):
        atomic_write_json(self.file(self.SUMMARY), summary)


def abandon_fresh_runs():
    """``abandon`` every run directory this process locked (a refused command leaves no folder behind)."""
    for run in _OPENED:
        run.abandon()

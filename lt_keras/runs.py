"""Run directories: everything needed to understand, re-run and resume a run.

A run directory holds the operative flagfile (``flags.txt``, re-runnable with
``--flagfile``), ``config.json``, ``versions.json`` and, once finished,
``summary.json``. Re-using a directory with a different configuration is an
error that leaves the directory untouched; re-using it with the same
configuration resumes (or, if finished, does nothing).
"""
import importlib.metadata
import os
import platform
import sys

from lt_keras.errors import RunDirError
from lt_keras.io_utils import atomic_save_model, atomic_write_json, atomic_write_text, read_json

PACKAGES = ("lt_keras", "tensorflow", "tf_keras", "tensorflow-model-optimization", "tensorflow-datasets", "numpy", "absl-py")


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# Settings that change how fast a run goes, not what it computes: a run resumes under other values.
_EXECUTION_ONLY = ("jit_compile",)


def _identity(config):
    """What makes two configs the same run: execution-only keys dropped, data folders resolved."""
    if isinstance(config, dict):
        return {k: (os.path.realpath(v) if k == "data_dir" and isinstance(v, str) else _identity(v))
                for k, v in config.items() if k not in _EXECUTION_ONLY}
    if isinstance(config, (list, tuple)):
        return [_identity(v) for v in config]
    return config


class RunDir:
    CONFIG, FLAGS, VERSIONS, SUMMARY = "config.json", "flags.txt", "versions.json", "summary.json"

    def __init__(self, path):
        if not path:
            raise RunDirError("--output_dir: a run directory is required.")
        self.path = os.path.abspath(os.fspath(path))

    def file(self, name):
        return os.path.join(self.path, name)

    def exists(self, name):
        return os.path.exists(self.file(name))

    def open(self, config: dict, flagfile: str):
        """Create the directory, or check that an existing one holds this same config."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunDirError(f"--output_dir: {self.path} exists and is not a directory.")
        if self.exists(self.CONFIG):
            saved, now = _identity(read_json(self.file(self.CONFIG))), _identity(config)
            if saved != now:
                diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
                raise RunDirError(
                    f"--output_dir: {self.path} holds a run with a different configuration "
                    f"(differs in {diff}); choose a new --output_dir or repeat the original "
                    f"flags (--flagfile={self.file(self.FLAGS)})."
                )
        else:
            os.makedirs(self.path, exist_ok=True)
            atomic_write_json(self.file(self.CONFIG), config)
        atomic_write_text(self.file(self.FLAGS), flagfile)
        atomic_write_json(self.file(self.VERSIONS), {**library_versions(), "argv": sys.argv})
        return self

    def is_complete(self):
        return self.exists(self.SUMMARY)

    def read_summary(self):
        return read_json(self.file(self.SUMMARY))

    def write_summary(self, summary: dict):
        atomic_write_json(self.file(self.SUMMARY), summary)

    def save_model(self, model, name="model.keras"):
        return atomic_save_model(model, self.file(name))

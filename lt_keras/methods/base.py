"""The one shape every method has: a frozen config, ``run(run_dir, spec) -> summary``, and a report.

What every method shares lives here, once: the run directory (its lock,
``config.json``, the operative ``flags.txt`` written from the configs,
``versions.json``), skipping a finished run, loading the data, the device
strategy and its chief, and ``summary.json``. A method adds only its own
work (``execute``) and how it reads (``report``). Resume within a run is the
method's (each writes its stages atomically and keeps ``backup`` folders
until complete); every random stream derives from ``spec.train.seed``.
Follows open_lth's one Runner shape and flax's ``train_and_evaluate(config,
workdir)``.
"""
import contextlib
import dataclasses
import json
import os
import shutil
import tempfile

from absl import flags, logging

from lt_keras._keras import tf
from lt_keras.data import DataConfig
from lt_keras.distribute import Devices, is_chief
from lt_keras.errors import ConfigError, LtKerasError
from lt_keras.models import model_names
from lt_keras.options import build, define, flag_lines, option
from lt_keras.precision import SearchPrecision
from lt_keras.runs import RunDir
from lt_keras.ticket import ticket_model_name
from lt_keras.training import TrainConfig


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What a method runs on: a registered model, the data, the training schedule, the search precision
    (``precision`` is read by the searches only) and the devices (``tf.distribute``; not lt-export's)."""

    model: str = option(None, "Registered model (lt-retrain and lt-export: the ticket's; default: the method's).",
                        choices=model_names)
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    precision: SearchPrecision = SearchPrecision()
    devices: Devices = Devices()


_PRECISION_FLAGS = tuple(f.name for f in dataclasses.fields(SearchPrecision))
_DEVICE_FLAGS = tuple(f.name for f in dataclasses.fields(Devices))


def config_dict(**parts) -> dict:
    """JSON-ready dict of frozen dataclass configs, exactly as it reads back from config.json."""
    plain = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in parts.items()}
    return json.loads(json.dumps(plain))


class Method:
    """A method of lt_keras (``lt_keras.methods.METHODS``); subclasses set the class attributes and ``execute``.

    ``run(run_dir, spec)`` opens (or re-opens) ``run_dir``: a finished run
    returns its summary and trains nothing; a different configuration in the
    same folder is refused; otherwise the data is loaded, ``execute`` does
    the work and ``summary.json`` is written last.
    """

    binary = None  # the console script, "lt-imp"
    Config = None  # the method's frozen config dataclass
    config_key = None  # its entry in config.json
    default_model = "lenet_300_100"  # None: the model comes from the ticket (``config.ticket_dir``)
    searches = False  # runs at ``spec.precision`` (the searches); the others are fp32
    distributes = True  # runs on ``spec.devices``' strategy
    run_dir_flag = "output_dir"

    def __init__(self, config=None):
        config = self.Config() if config is None else config
        if not isinstance(config, self.Config):
            raise LtKerasError(f"{type(self).__name__} takes a {self.Config.__name__}, not {type(config).__name__}.")
        self.config = config

    # --- the protocol ------------------------------------------------------------------------------------------

    def run(self, run_dir, spec: RunSpec = None) -> dict:
        """Run (or resume, or read back) this method in ``run_dir``; returns its summary."""
        spec = self.resolve(spec if spec is not None else RunSpec())
        with self.placement(run_dir) as scratch:
            run = RunDir(scratch or run_dir)
            run.open(self.config_entry(spec), self.flagfile(run_dir, spec))
            if run.is_complete():
                logging.info("%s is complete; nothing to train.", run.path)
                return run.read_summary()
            data = self.load_data(spec)
            with self.device_scope():
                summary = {**self.execute(run.path, spec, data), **self.common_keys(spec, data)}
            run.write_summary(summary)
            self.after_summary(run.path)
        return summary

    def execute(self, run_dir, spec: RunSpec, data) -> dict:
        """The method's own work in an opened run directory; returns the summary."""
        raise NotImplementedError

    def report(self, summary: dict, run_dir) -> str:
        """What the binary prints for a summary."""
        raise NotImplementedError

    def load_data(self, spec: RunSpec):
        data = spec.data.load()
        logging.info("data: %s from %s, %s", data.spec.name, data.source, data.sizes())
        return data

    def common_keys(self, spec: RunSpec, data) -> dict:
        """What every summary.json holds: the model, the data, and for a search its precision."""
        keys = {"model": spec.model, "dataset": data.spec.name, "data_source": data.source}
        if self.searches:
            keys["search_precision"] = spec.precision.describe()
        if self.distributes:
            keys.update(strategy=spec.devices.strategy, replicas=self.strategy.num_replicas_in_sync)
        return keys

    # --- hooks with shared defaults -------------------------------------------------------------------------

    def resolve(self, spec: RunSpec) -> RunSpec:
        """The spec with its devices made and its model settled: the method's default, or the ticket's (a
        contradiction is refused)."""
        self.strategy = self._make_strategy(spec.devices)
        ticket_dir = getattr(self.config, "ticket_dir", None)
        if ticket_dir is None:
            return spec if spec.model else dataclasses.replace(spec, model=self.default_model)
        name = ticket_model_name(ticket_dir)
        if spec.model and spec.model != name:
            raise ConfigError("model", f"the ticket holds a {name!r} model, not {spec.model!r}; drop --model.")
        return dataclasses.replace(spec, model=name if name in model_names() else None)

    def _make_strategy(self, devices: Devices):
        """The strategy, made first: before any other op (multi-worker needs it so, and logical CPUs can only be
        split before TensorFlow starts); None for a method that runs on one device."""
        if self.distributes:
            return devices.make()
        if not devices.is_default:
            raise ConfigError("strategy", f"{self.binary} runs on one device; drop --strategy/--cpu_devices.")
        return None

    def device_scope(self):
        """The strategy's scope around the method: the model and everything it holds live on every replica."""
        if self.strategy is None or self.strategy is tf.distribute.get_strategy():  # the default: no scope
            return contextlib.nullcontext()
        return self.strategy.scope()

    def config_entry(self, spec: RunSpec) -> dict:
        """config.json: what makes two runs the same run (the devices only when not the default: other devices
        sum gradients in another order, so a run resumes only on the devices it started on)."""
        parts = {"model": spec.model, "data": spec.data, "train": spec.train}
        if self.config_key:
            parts[self.config_key] = self.config
        if self.searches and spec.precision.precision != "fp32":
            parts["precision"] = spec.precision.describe()
        if not spec.devices.is_default:
            parts["devices"] = spec.devices
        return config_dict(**parts)

    @contextlib.contextmanager
    def placement(self, run_dir):
        """Where the run writes: None (its run directory), or a scratch folder a non-chief worker writes to and
        that goes when it is done (what Keras recommends for multi-worker runs).

        The scratch folder starts as a copy of the chief's run directory, so a restarted non-chief resumes from
        the rounds and checkpoints the chief resumes from (the workers need one shared file system, as Keras's
        ``BackupAndRestore`` does). The copy is taken before the first collective op, and the chief writes
        nothing a resume reads before every worker has joined it.
        """
        if is_chief():
            yield None
            return
        scratch = tempfile.mkdtemp(prefix=f"{self.binary}_worker_")
        try:
            if os.path.isdir(run_dir):
                try:
                    shutil.copytree(run_dir, scratch, dirs_exist_ok=True, ignore=shutil.ignore_patterns(RunDir.LOCK))
                except shutil.Error:  # a file the chief replaced meanwhile (its metadata, written atomically)
                    pass
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def after_summary(self, run_dir):
        """Called once summary.json is written (a method's last cleanup)."""

    # --- flags -------------------------------------------------------------------------------------------------

    @classmethod
    def define_flags(cls, flag_values):
        """The method's flags: the spec's (the precision ones for searches), the run directory, its config's."""
        define(RunSpec, flag_values, skip=(() if cls.searches else _PRECISION_FLAGS)
               + (() if cls.distributes else _DEVICE_FLAGS))
        flag_values.set_default("model", cls.default_model)
        flags.DEFINE_string(cls.run_dir_flag, None, "Run directory (created; re-running resumes or skips)."
                            if cls.run_dir_flag == "output_dir" else "New (or empty) folder for the SavedModel.",
                            flag_values=flag_values)
        define(cls.Config, flag_values)
        flags.register_multi_flags_validator(
            ["train_steps", "epochs"], lambda v: v["train_steps"] is None or v["epochs"] is None,
            "--train_steps and --epochs both set the training length; give only one.", flag_values=flag_values)

    @classmethod
    def from_flags(cls, flag_values):
        """``(method, run_dir, spec)`` from parsed flags."""
        return cls(build(cls.Config, flag_values)), flag_values[cls.run_dir_flag].value, build(RunSpec, flag_values)

    def flagfile(self, run_dir, spec: RunSpec) -> str:
        """The operative flags of this run, one per line: a flagfile that re-runs it with ``self.binary``."""
        known = flags.FlagValues()
        self.define_flags(known)
        lines = flag_lines(spec, only=known) + flag_lines(self.config, only=known)
        lines.append(f"--{self.run_dir_flag}={os.path.abspath(run_dir)}")
        return "\n".join([f"# Operative flags of {self.binary}; re-run with --flagfile=<this file>.",
                          *sorted(lines)]) + "\n"

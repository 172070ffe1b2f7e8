"""The methods floor: every method of lt_keras as one protocol (``base.Method``).

Each method is a frozen config dataclass, ``run(run_dir, spec) -> summary``
and ``report(summary, run_dir)``; ``base.Method`` owns what they share. The
algorithms they call (``lt_keras.imp``, ``supermask``, ``early_bird``,
``pruning``, ``criteria``, ``actions``, ``ticket``...) know nothing of run
directories. Each binary in ``lt_keras/bin`` is this table's entry behind
flags.

    from lt_keras.methods import Imp, RunSpec
    summary = Imp(ImpConfig(rounds=2)).run("runs/imp", RunSpec(model="lenet_300_100"))
"""
from lt_keras.methods.base import Method, RunSpec
from lt_keras.methods.early_bird import EarlyBird
from lt_keras.methods.export import Export, ExportConfig
from lt_keras.methods.imp import Imp
from lt_keras.methods.retrain import Retrain, RetrainConfig
from lt_keras.methods.supermask import Supermask, SupermaskConfig
from lt_keras.methods.train import Train, TrainRunConfig

METHODS = {m.binary: m for m in (Train, Imp, Supermask, EarlyBird, Retrain, Export)}

__all__ = ["METHODS", "EarlyBird", "Export", "ExportConfig", "Imp", "Method", "Retrain", "RetrainConfig", "RunSpec",
           "Supermask", "SupermaskConfig", "Train", "TrainRunConfig"]

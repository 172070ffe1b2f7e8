"""Build, compile and fit a model from a config, with the papers' bookkeeping.

Training runs through Keras ``model.fit``: one Keras "epoch" is one evaluation
interval of ``eval_every`` steps, so the console shows Keras progress bars and
the validation set is evaluated every ``eval_every`` iterations, as Frankle &
Carbin do. After each interval the test set is evaluated too, so the result
holds the early-stopping iteration (minimum validation loss) with the test
accuracy there, and the test accuracy at the end.
"""
import dataclasses
import math
import os
import sys
import time

import numpy as np
from absl import logging

from lt_keras._keras import keras, tf
from lt_keras.distribute import replicas_on_cpus
from lt_keras.duration import EXAMPLES, Duration, canonical, iterations
from lt_keras.errors import ConfigError, DivergedError, LtKerasError
from lt_keras.io_utils import atomic_save_model, atomic_write_json, read_json, save_weights
from lt_keras.layers import masked_layers, walk_layers
from lt_keras.models import build_model
from lt_keras.options import option

OPTIMIZERS = ("adam", "sgd")
WEIGHT_DECAY_MODES = ("decoupled", "coupled")
AUGMENTATIONS = ("none", "crop_flip")
LR_SCHEDULES = ("constant", "step", "cosine")
MOMENTUM_FORMS = ("keras", "pytorch")
DEFAULT_EPOCHS = 10.0
# Steps per call with --steps_per_execution=auto at most: chosen by tools/bench_steps.py (see its docstring).
AUTO_STEPS_CAP = 50


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    optimizer: str = option("adam", "Optimizer.", choices=OPTIMIZERS)
    learning_rate: float = option(1.2e-3, "Peak learning rate.", lower_bound=0)
    momentum: float = option(0.9, "SGD momentum.", lower_bound=0)
    momentum_form: str = option("keras", "keras: v = mu v - lr g, w += v (the rate inside the velocity); pytorch: "
                                "v = mu v + g, w -= lr v (PyTorch's SGD and TF1's MomentumOptimizer: the Early-Bird, "
                                "edge-popup and open_lth code). Equal at a constant rate; they differ after the "
                                "rate changes.", choices=MOMENTUM_FORMS)
    adam_epsilon: float = option(1e-7, "Adam's epsilon: 1e-7 is Keras's; TF1's AdamOptimizer and PyTorch (the papers' "
                                 "code) use 1e-8.", lower_bound=0)
    weight_decay: float = option(0.0, "Weight decay (see --weight_decay_mode).", lower_bound=0)
    weight_decay_mode: str = option("decoupled", "decoupled: w -= lr * wd * w beside the update (Keras, AdamW / "
                                    "SGDW); coupled: wd * w added to the gradient before momentum or Adam's "
                                    "moments (PyTorch's weight_decay, the Early-Bird and edge-popup code).",
                                    choices=WEIGHT_DECAY_MODES)
    augment: str = option("none", "Training-data augmentation: crop_flip pads 4 black pixels, crops back to the "
                          "image size at random and flips horizontally at random, per example (seeded; never "
                          "on evaluation data).", choices=AUGMENTATIONS)
    lr_schedule: str = option("constant", "Learning-rate schedule after warmup.", choices=LR_SCHEDULES)
    lr_decay_steps: tuple = option((), "Points at which the step schedule multiplies the rate by --lr_decay_factor: "
                                   f"iterations or epochs ({EXAMPLES}).", duration=True)
    lr_decay_factor: float = option(0.1, "Step-schedule factor.", lower_bound=0)
    warmup_steps: int = option(0, "Linear learning-rate warmup (before any schedule): iterations or epochs (e.g. 5ep).",
                               duration=True)
    batch_size: int = option(60, "Training batch size: the global batch, split across the replicas under "
                             "--strategy.", lower_bound=1)
    train_steps: int = option(None, "Training iterations (exactly one of --train_steps and --epochs).",
                              lower_bound=1)
    epochs: float = option(None, f"Training epochs ({DEFAULT_EPOCHS} when neither this nor --train_steps is "
                           "given).", lower_bound=0)
    eval_every: int = option(None, "Evaluate at this interval: iterations or epochs (default: 1ep).", duration=True)
    jit_compile: bool = option(None, "Compile training steps with XLA (unset: on a GPU, and on a CPU for nets "
                               "without convolutions, whose XLA CPU kernels are slower).")
    seed: int = option(0, "Seed for initialization, shuffling and masks (0 to 2**32 - 1).", lower_bound=0)
    steps_per_execution: str = option("auto", "Training steps compiled into one call: a number, or auto (the "
                                      f"largest count up to {AUTO_STEPS_CAP} that divides the evaluation interval "
                                      "and lands on every step a callback needs, e.g. late rewinding's step:K).")

    def __post_init__(self):
        def bad(field, message):
            raise ConfigError(field, message)

        if self.train_steps is None and self.epochs is None:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS)
        if not 0 <= self.seed < 2 ** 32:
            bad("seed", f"must be between 0 and 2**32 - 1, got {self.seed}")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"{self.optimizer!r} is not one of {list(OPTIMIZERS)}")
        if self.momentum_form not in MOMENTUM_FORMS:
            bad("momentum_form", f"{self.momentum_form!r} is not one of {list(MOMENTUM_FORMS)}")
        if not self.adam_epsilon > 0:
            bad("adam_epsilon", f"must be positive, got {self.adam_epsilon}")
        if self.lr_schedule not in LR_SCHEDULES:
            bad("lr_schedule", f"{self.lr_schedule!r} is not one of {list(LR_SCHEDULES)}")
        if not self.learning_rate > 0:
            bad("learning_rate", f"must be positive, got {self.learning_rate}")
        if self.weight_decay < 0:
            bad("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.weight_decay_mode not in WEIGHT_DECAY_MODES:
            bad("weight_decay_mode", f"{self.weight_decay_mode!r} is not one of {list(WEIGHT_DECAY_MODES)}")
        if self.augment not in AUGMENTATIONS:
            bad("augment", f"{self.augment!r} is not one of {list(AUGMENTATIONS)}")
        if self.batch_size < 1:
            bad("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.train_steps is not None and self.epochs is not None:
            bad("train_steps", "set only one of train_steps and epochs")
        if self.train_steps is not None and self.train_steps < 1:
            bad("train_steps", f"must be >= 1, got {self.train_steps}")
        if self.epochs is not None and not self.epochs > 0:
            bad("epochs", f"must be positive, got {self.epochs}")
        # Times are kept canonical (an int of iterations, or "30ep"), so equal settings compare equal.
        object.__setattr__(self, "warmup_steps", canonical(self.warmup_steps, "warmup_steps"))
        object.__setattr__(self, "eval_every", canonical(self.eval_every, "eval_every"))
        object.__setattr__(self, "lr_decay_steps", tuple(canonical(p, "lr_decay_steps") for p in self.lr_decay_steps))
        if self.eval_every is not None and Duration.parse(self.eval_every, "eval_every") == Duration():
            bad("eval_every", "must be more than 0 iterations")
        if self.lr_decay_steps and self.lr_schedule != "step":
            bad("lr_decay_steps", f"decay points need lr_schedule=step (it is {self.lr_schedule!r}); they would be "
                "ignored")
        units = {isinstance(p, int) for p in self.lr_decay_steps}
        if len(units) == 1 and list(self.lr_decay_steps) != sorted(set(self.lr_decay_steps), key=_order):
            bad("lr_decay_steps", f"must be increasing, got {list(self.lr_decay_steps)}")
        count = str(self.steps_per_execution)
        if count != "auto" and not (count.isdigit() and int(count) >= 1):
            bad("steps_per_execution", f"must be auto or a number >= 1, got {self.steps_per_execution!r}")
        object.__setattr__(self, "steps_per_execution", count)

    def steps_per_epoch(self, num_train):
        return max(1, num_train // self.batch_size)

    def total_steps(self, num_train):
        if self.train_steps is not None:
            return int(self.train_steps)
        return max(1, int(round(self.epochs * self.steps_per_epoch(num_train))))

    def eval_interval(self, num_train):
        return iterations(self.eval_every, "eval_every", self.steps_per_epoch(num_train)) or \
            self.steps_per_epoch(num_train)

    def resolved(self, num_train) -> "TrainConfig":
        """This config with every time in iterations, for ``num_train`` training examples."""
        spe = self.steps_per_epoch(num_train)
        decay = tuple(iterations(p, "lr_decay_steps", spe) for p in self.lr_decay_steps)
        if list(decay) != sorted(set(decay)):
            raise ConfigError("lr_decay_steps", f"must be increasing, got {list(self.lr_decay_steps)} = iterations "
                              f"{list(decay)} at {spe} a epoch.")
        return dataclasses.replace(self, lr_decay_steps=decay, eval_every=self.eval_interval(num_train),
                                   warmup_steps=iterations(self.warmup_steps, "warmup_steps", spe))


def _order(point):
    duration = Duration.parse(point, "lr_decay_steps")
    return duration.epochs, duration.iterations


@keras.utils.register_keras_serializable(package="lt_keras")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to ``base``, then constant, step decay or cosine decay.

    Frankle & Carbin (section 4) need warmup for IMP on deep networks at the
    papers' learning rates; Early-Bird uses step decay.
    """

    def __init__(self, base, warmup_steps=0, kind="constant", decay_steps=(), decay_factor=0.1, total_steps=1):
        self.base = float(base)
        self.warmup_steps = int(warmup_steps)
        self.kind = kind
        self.decay_steps = tuple(int(s) for s in decay_steps)
        self.decay_factor = float(decay_factor)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = tf.constant(self.base, tf.float32)
        if self.kind == "step":
            for boundary in self.decay_steps:
                lr = tf.where(step >= boundary, lr * self.decay_factor, lr)
        elif self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            lr = lr * 0.5 * (1.0 + tf.cos(math.pi * progress))
        if self.warmup_steps > 0:
            lr = lr * tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return lr

    def get_config(self):
        return {
            "base": self.base,
            "warmup_steps": self.warmup_steps,
            "kind": self.kind,
            "decay_steps": list(self.decay_steps),
            "decay_factor": self.decay_factor,
            "total_steps": self.total_steps,
        }


def _coupled_weight_decay(optimizer_class):
    """``optimizer_class`` with PyTorch's coupled ``weight_decay``: ``wd * w`` is added to every gradient
    before the update (so it goes through momentum and Adam's moments), for every trainable variable as
    ``optimizer(model.parameters(), weight_decay=...)`` does. Written here because Keras optimizers decay
    only decoupled (``w -= lr * wd * w``), and an L2 loss term would change the reported loss."""

    class Coupled(optimizer_class):
        def __init__(self, *args, coupled_weight_decay=0.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.coupled_weight_decay = float(coupled_weight_decay)

        def apply_gradients(self, grads_and_vars, *args, **kwargs):
            # Replicas' gradients are summed after this: each adds its share of the decay.
            share = self.coupled_weight_decay / tf.distribute.get_strategy().num_replicas_in_sync
            grads_and_vars = [(g if g is None else tf.convert_to_tensor(g) + tf.cast(share, v.dtype) * v, v)
                              for g, v in grads_and_vars]
            return super().apply_gradients(grads_and_vars, *args, **kwargs)

        def get_config(self):
            return {**super().get_config(), "coupled_weight_decay": self.coupled_weight_decay}

    Coupled.__name__ = Coupled.__qualname__ = f"Coupled{optimizer_class.__name__}"
    return keras.utils.register_keras_serializable(package="lt_keras")(Coupled)


@keras.utils.register_keras_serializable(package="lt_keras")
class TorchSGD(keras.optimizers.SGD):
    """SGD with momentum in PyTorch's form: ``v = mu * v + g; w -= lr * v`` (TF1's MomentumOptimizer too).

    Keras keeps the rate inside the velocity (``v = mu * v - lr * g; w += v``);
    the two agree at a constant rate and differ in the steps after a decay,
    where the PyTorch form applies the new rate to the whole velocity. Written
    here because Keras has no switch for it; the Early-Bird, edge-popup and
    open_lth recipes were tuned with this form.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.nesterov:
            raise LtKerasError("TorchSGD: Nesterov momentum is not supported.")

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)
        lr = tf.cast(self.learning_rate, variable.dtype)
        if not self.momentum:  # no velocity: both forms are w -= lr * g
            variable.assign_sub(lr * gradient)
            return
        velocity = self.momentums[self._index_dict[self._var_key(variable)]]
        velocity.assign(velocity * tf.cast(self.momentum, variable.dtype) + gradient)
        variable.assign_sub(lr * velocity)


CoupledSGD = _coupled_weight_decay(keras.optimizers.SGD)
CoupledTorchSGD = _coupled_weight_decay(TorchSGD)
CoupledAdam = _coupled_weight_decay(keras.optimizers.Adam)


def make_optimizer(config: TrainConfig, total_steps: int):
    """The optimizer and schedule of ``config``; times given in epochs need ``config.resolved(num_train)`` first."""
    lr = config.learning_rate
    if config.warmup_steps or config.lr_schedule != "constant":
        lr = WarmupSchedule(lr, iterations(config.warmup_steps, "warmup_steps"), config.lr_schedule,
                            [iterations(p, "lr_decay_steps") for p in config.lr_decay_steps],
                            config.lr_decay_factor, total_steps)
    wd = config.weight_decay or None
    coupled = config.weight_decay_mode == "coupled" and wd
    if config.optimizer == "adam":
        if coupled:
            return CoupledAdam(lr, epsilon=config.adam_epsilon, coupled_weight_decay=wd)
        return keras.optimizers.Adam(lr, epsilon=config.adam_epsilon, weight_decay=wd)
    torch_form = config.momentum_form == "pytorch"
    if coupled:
        return (CoupledTorchSGD if torch_form else CoupledSGD)(lr, momentum=config.momentum, coupled_weight_decay=wd)
    return (TorchSGD if torch_form else keras.optimizers.SGD)(lr, momentum=config.momentum, weight_decay=wd)


def use_xla(model, requested=None) -> bool:
    """Whether to compile ``model``'s steps with XLA: ``requested`` if given, else where XLA is faster.

    XLA speeds up every model on a GPU and dense nets on a CPU, but XLA's CPU
    convolutions run ~3x slower than TensorFlow's oneDNN kernels (VGG-11-BN:
    93 vs 30 ms/step; tools/bench.py's Conv-4 figure), so by default conv nets
    on a CPU-only machine train without it. Replicas on CPU devices (logical
    CPUs, CPU workers) never use it: XLA cannot compile a step whose replicas'
    variables live on several devices.
    """
    if replicas_on_cpus(tf.distribute.get_strategy()):
        if requested:
            logging.warning("XLA is off: %d replicas on CPU devices cannot share one XLA program.",
                            tf.distribute.get_strategy().num_replicas_in_sync)
        return False
    if requested is not None:
        return bool(requested)
    if tf.config.list_logical_devices("GPU"):
        return True
    return not any(isinstance(layer, keras.layers.Conv2D) for layer in walk_layers(model))


def resolve_steps_per_execution(setting, interval, exact_steps=()):
    """Training steps per call for ``setting`` (auto or a number), given the evaluation interval and the steps
    where a callback must see the model (``exact_steps``, e.g. late rewinding's step K).

    Keras calls the batch hooks only after each call's last step, and starts
    a new call at every epoch (evaluation); auto picks the largest count up to
    ``AUTO_STEPS_CAP`` that divides the interval and every exact step's offset
    in its interval. A number that would skip an exact step is refused.
    """
    offsets = sorted({int(s) % interval for s in exact_steps} - {0})
    if str(setting) == "auto":
        return max(n for n in range(1, AUTO_STEPS_CAP + 1)
                   if interval % n == 0 and all(o % n == 0 for o in offsets))
    count = int(setting)
    skipped = [s for s in exact_steps if (int(s) % interval) % count]
    if skipped:
        raise ConfigError("steps_per_execution", f"{count} steps per call never stop at step {skipped[0]}, where a "
                          "callback must run (late rewinding's step:K); use auto or a count dividing "
                          f"{skipped[0] % interval}.")
    return count


def compile_model(model, config: TrainConfig, total_steps: int, steps_per_execution=1):
    """Compile with ``config``'s optimizer and schedule, XLA where faster, ``steps_per_execution`` steps a call."""
    jit = use_xla(model, config.jit_compile)
    if config.jit_compile is None:
        logging.info("XLA %s for %s (--jit_compile unset: %s).", "on" if jit else "off", model.name,
                     "GPU or no convolutions" if jit else "convolutions on a CPU run faster without it")
    model.compile(
        optimizer=make_optimizer(config, total_steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit,
        steps_per_execution=steps_per_execution,
    )
    return model


@dataclasses.dataclass
class TrainResult:
    history: list  # one dict per evaluation: step, loss, accuracy, val_*, test_*
    total_steps: int
    early_stop_step: int
    early_stop_val_loss: float
    early_stop_val_accuracy: float
    early_stop_test_accuracy: float
    final_val_accuracy: float
    final_test_accuracy: float
    wall_time_s: float
    ms_per_step: float

    def to_dict(self):
        return dataclasses.asdict(self)


class _EvalRecorder(keras.callbacks.Callback):
    """Evaluates the test set after each interval and records every metric by step."""

    def __init__(self, test_ds, interval, total_steps, state_path=None):
        super().__init__()
        self.test_ds = test_ds
        self.interval = interval
        self.total_steps = total_steps
        self.state_path = state_path  # records survive a kill next to Keras's BackupAndRestore state
        self._logged = []
        if state_path and os.path.exists(state_path):
            self._logged = [(r["step"], {k: v for k, v in r.items() if k != "step"}) for r in read_json(state_path)]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        test = self.model.evaluate(self.test_ds, verbose=0, return_dict=True)
        logs.update({f"test_{k}": v for k, v in test.items()})
        step = min((epoch + 1) * self.interval, self.total_steps)
        # Keep the logs dict itself: callbacks after this one (e.g. a mask-density logger) add to it;
        # ``_BeforeCheckpoint`` persists it once they all have.
        self._logged = [(s, l) for s, l in self._logged if s < step] + [(step, logs)]

    def _persist(self):
        if self.state_path and self._logged:
            os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
            atomic_write_json(self.state_path, self.records)

    @property
    def records(self):
        return [{"step": step, **{k: float(v) for k, v in logs.items()}} for step, logs in self._logged]


MAX_MASK_SCORE = 1e6  # Zhou et al.'s lr 100 moves scores by at most ~1e2 a step, and their slope vanishes past 40


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training with ``DivergedError`` when it diverges, before anything is saved as a result.

    The running mean training loss must be finite and below ``max_loss``
    (default 100 x the loss of a uniform guess, ln(classes): no run that is
    learning gets there): checked every ``check_every`` batches, or at the end
    of the first call past them with several steps per call (a NaN stays in
    the running mean, so it is caught within that many steps; reading it
    more often would stall an accelerator's pipeline) and at each evaluation,
    where every weight must also be finite and every mask score within
    ``MAX_MASK_SCORE`` (a supermask at a runaway rate stays finite and
    scores at chance). It runs before
    ``BackupAndRestore``, so a diverged state is never backed up.
    """

    def __init__(self, interval, total_steps, max_loss=None, check_every=20):
        super().__init__()
        self.interval, self.total_steps, self.max_loss = interval, total_steps, max_loss
        self.check_every, self._epoch, self._checked = check_every, 0, 0
        self._supports_tf_logs = True  # per-batch logs stay tensors; only the checked ones are read

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._checked = epoch, 0

    def on_train_batch_end(self, batch, logs=None):
        # With several steps per call Keras reports only each call's last batch: check once check_every passed.
        if batch + 1 - self._checked >= self.check_every and logs and "loss" in logs:
            self._checked = batch + 1
            self._check(float(logs["loss"]), self._epoch * self.interval + batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        step = min((epoch + 1) * self.interval, self.total_steps)
        self._check(float((logs or {}).get("loss", 0.0)), step)
        if not all(np.isfinite(w).all() for w in self.model.get_weights()):
            self._stop(step, "weights are not finite")
        scores = [l.kernel_scores for l in masked_layers(self.model) if getattr(l, "kernel_scores", None) is not None]
        largest = max((float(tf.reduce_max(tf.abs(s))) for s in scores), default=0.0)
        if largest > MAX_MASK_SCORE:  # finite, but a learning rate that throws scores this far trains nothing
            self._stop(step, f"mask scores reached {largest:.3g}, past {MAX_MASK_SCORE:.0e}; a Bernoulli mask "
                             "saturates by |score| = 40")

    def _check(self, loss, step):
        bound = self.max_loss or 100.0 * max(1.0, math.log(max(2, int(self.model.output_shape[-1]))))
        if not math.isfinite(loss):
            self._stop(step, f"the training loss is {loss}")
        elif loss > bound:
            self._stop(step, f"the training loss {loss:.3g} is over {bound:.3g}, 100x that of a uniform guess")

    def _stop(self, step, why):
        self.model.stop_training = True
        raise DivergedError(f"training diverged by step {step} ({why}); nothing from it is kept as a result. "
                            "Lower learning_rate, add warmup_steps, or check the data.")


def fit(model, data, config: TrainConfig, output_dir=None, callbacks=(), verbose=None, compile=True,
        backup_dir=None) -> TrainResult:
    """Train ``model`` on ``data`` for the configured length; return the bookkeeping.

    ``callbacks`` are the user's own Keras callbacks, run alongside ours.
    ``verbose`` defaults to progress bars on a terminal and one line per
    evaluation otherwise (logs, CI). With ``backup_dir``, Keras's
    ``BackupAndRestore`` saves weights, optimizer and position at every
    evaluation, and a killed run continues from the last one; its
    ``wall_time_s`` adds the seconds the saved evaluations took before.
    """
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    num_train = data.num_train
    config = config.resolved(num_train)  # every time in iterations from here on
    total = config.total_steps(num_train)
    interval = min(config.eval_interval(num_train), total)
    exact_steps = [s for cb in callbacks for s in getattr(cb, "exact_steps", ())]
    per_call = resolve_steps_per_execution(config.steps_per_execution, interval, exact_steps)
    if compile:
        _compile_or_reset(model, config, total, per_call)
    for layer in masked_layers(model):  # weights set by any means: the pruned entries are stored as zeros
        layer.store_zeros()
    recorder = _EvalRecorder(data.eval_dataset("test"), interval, total,
                             os.path.join(backup_dir, "records.json") if backup_dir else None)
    all_callbacks = [recorder, DivergenceGuard(interval, total), *callbacks]
    done = _backed_up_steps(backup_dir, interval)
    before = _saved_seconds(backup_dir) if done else 0.0  # training seconds up to the checkpoint resumed from
    if backup_dir:  # last, so a saved position always has its evaluation recorded
        all_callbacks.append(_BeforeCheckpoint(recorder, backup_dir, interval, total,
                                               seconds=lambda: before + time.perf_counter() - start))
        all_callbacks.append(keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False))
    if output_dir:
        all_callbacks.append(
            keras.callbacks.TensorBoard(log_dir=f"{output_dir}/tensorboard", update_freq="epoch", profile_batch=0)
        )
    if verbose:
        all_callbacks.append(StepProgress(interval, total))
    # A run a callback stopped (Early-Bird, EarlyStopping) and then killed: restore it where it stopped.
    stopped = bool(done) and _stopped_step(backup_dir) == done
    if stopped:
        logging.info("this fit stopped at step %d (a callback asked to); restoring it there", done)

    def batches(start):  # the one seeded batch order, from step ``start`` on: a resumed fit sees what it would have
        return data.train_dataset(config.batch_size, seed=config.seed, augment=config.augment).skip(start)

    val_ds = data.eval_dataset("validation")
    full, remainder = divmod(total, interval)
    logging.info("training %s for %d steps (%d per evaluation, %d per call), batch %d", model.name, total, interval,
                 per_call, config.batch_size)
    start = time.perf_counter()
    model.fit(batches(min(done, full * interval)), epochs=done // interval if stopped else full,
              steps_per_epoch=interval, validation_data=val_ds, callbacks=all_callbacks, verbose=verbose)
    if remainder and not (stopped or model.stop_training):
        model.fit(batches(full * interval), initial_epoch=full, epochs=full + 1, steps_per_epoch=remainder,
                  validation_data=val_ds, callbacks=all_callbacks, verbose=verbose)
    wall = before + time.perf_counter() - start
    return summarize(recorder.records, total, wall)


class StepProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, headed by training steps and an ETA instead of "Epoch i/N".

    ``fit`` runs one Keras epoch per evaluation interval, so Keras's own
    header would count intervals as epochs.
    """

    def __init__(self, interval, total_steps):
        super().__init__(count_mode="steps")
        self.interval, self.total_steps = interval, total_steps
        self._start = None  # (time, step) of the first interval this process trains

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_progbar()
        self._maybe_init_progbar()
        if not self.verbose:
            return
        first = epoch * self.interval
        if self._start is None:
            self._start = (time.perf_counter(), first)
        started, first_step = self._start
        eta = ""
        if first > first_step:
            rate = (time.perf_counter() - started) / (first - first_step)
            eta = f", ETA {format_duration(rate * (self.total_steps - first))}"
        print(f"steps {first + 1}-{min(first + self.interval, self.total_steps)} of {self.total_steps}{eta}",
              flush=True)


def format_duration(seconds) -> str:
    """``"2 h 05 min"``, ``"3 min 20 s"`` or ``"12 s"``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def reset_optimizer(model):
    """Zero the optimizer's slots and step counter: the state a freshly made optimizer starts from."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return
    variables = optimizer.variables() if callable(optimizer.variables) else optimizer.variables
    for variable in variables:
        variable.assign(np.zeros(variable.shape, variable.dtype.as_numpy_dtype))


def _compile_or_reset(model, config, total, per_call):
    """Compile ``model`` for this fit, or, when ``fit`` compiled it for the same settings and variables before
    (IMP's rounds and controls train one model again and again), zero its optimizer instead: the same start
    as a new optimizer, without tracing and XLA-compiling the step again (~1 s a fit on a CPU)."""
    signature = (config, total, per_call, tuple(id(v) for v in model.trainable_weights))
    if model.optimizer is not None and getattr(model, "_lt_compiled_for", None) == signature:
        reset_optimizer(model)
        return
    compile_model(model, config, total, per_call)
    object.__setattr__(model, "_lt_compiled_for", signature)  # plain attribute: not tracked by Keras


class _BeforeCheckpoint(keras.callbacks.Callback):
    """Runs after every other callback and just before ``BackupAndRestore``: persists the epoch's records (with
    what every callback added), the training seconds so far and, when a callback stopped training, the step
    where it did."""

    def __init__(self, recorder, backup_dir, interval, total_steps, seconds):
        super().__init__()
        self.recorder, self.backup_dir, self.interval, self.total_steps = recorder, backup_dir, interval, total_steps
        self.seconds = seconds

    def on_epoch_end(self, epoch, logs=None):
        self.recorder._persist()
        os.makedirs(self.backup_dir, exist_ok=True)
        atomic_write_json(os.path.join(self.backup_dir, "seconds.json"), {"seconds": self.seconds()})
        if self.model.stop_training:
            atomic_write_json(os.path.join(self.backup_dir, "stopped.json"),
                              {"step": min((epoch + 1) * self.interval, self.total_steps)})


def _saved_seconds(backup_dir):
    path = os.path.join(backup_dir, "seconds.json")
    return float(read_json(path)["seconds"]) if os.path.exists(path) else 0.0


def _stopped_step(backup_dir):
    path = os.path.join(backup_dir, "stopped.json")
    return read_json(path)["step"] if os.path.exists(path) else None


def saved_evaluations(backup_dir):
    """How many evaluations (Keras epochs) the checkpoint in ``backup_dir`` holds: where a resumed fit starts."""
    return _backed_up_steps(backup_dir, 1)


def _backed_up_steps(backup_dir, interval):
    """Steps a ``BackupAndRestore`` checkpoint in ``backup_dir`` has trained (0 without one).

    Keras restores weights, optimizer and epoch, but restarts the dataset;
    reading the saved epoch first lets ``fit`` skip the batches already seen.
    """
    chief = os.path.join(backup_dir, "chief") if backup_dir else None
    checkpoint = tf.train.latest_checkpoint(chief) if chief and os.path.isdir(chief) else None
    if checkpoint is None:
        return 0
    epoch = int(tf.train.load_variable(checkpoint, "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    return (epoch + 1) * interval if epoch >= 0 else 0


def summarize(records, total_steps, wall_time_s) -> TrainResult:
    if not records:
        raise LtKerasError("training produced no evaluations.")
    best = int(np.argmin([r["val_loss"] for r in records]))
    return TrainResult(
        history=records,
        total_steps=total_steps,
        early_stop_step=records[best]["step"],
        early_stop_val_loss=records[best]["val_loss"],
        early_stop_val_accuracy=records[best]["val_accuracy"],
        early_stop_test_accuracy=records[best]["test_accuracy"],
        final_val_accuracy=records[-1]["val_accuracy"],
        final_test_accuracy=records[-1]["test_accuracy"],
        wall_time_s=wall_time_s,
        ms_per_step=1000.0 * wall_time_s / total_steps,
    )


def build_and_train(model_name, data, config: TrainConfig, output_dir=None, callbacks=(), verbose=None,
                    backup_dir=None):
    """Seed, build the registered model for ``data``, compile and fit it.

    With ``output_dir`` it also keeps what mask criteria and users read
    later: init_weights.npz (theta_0), model.keras and history.json. With
    ``backup_dir`` a killed call resumes at its last evaluation (see ``fit``).
    """
    data.check_batch_size(config.batch_size)
    keras.utils.set_random_seed(config.seed)
    model = build_model(model_name, data.input_shape, data.num_classes)
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        save_weights(os.path.join(output_dir, "init_weights.npz"), model.get_weights())
    result = fit(model, data, config, output_dir=output_dir, callbacks=callbacks, verbose=verbose,
                 backup_dir=backup_dir)
    if output_dir is not None:
        atomic_save_model(model, os.path.join(output_dir, "model.keras"))
        atomic_write_json(os.path.join(output_dir, "history.json"), result.history)
    return model, result

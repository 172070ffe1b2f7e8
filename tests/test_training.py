"""Training: config validation, schedules, early-stop bookkeeping, fit with masks."""
import json
import os
import time

import numpy as np
import pytest

from lt_keras import ConfigError, Mask, masked_layers
from lt_keras.data import DataConfig
from lt_keras.training import TrainConfig, WarmupSchedule, build_and_train, summarize


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"train_steps": 0}, "train_steps"),
        ({"epochs": 1}, "train_steps"),  # both set
        ({"eval_every": 0}, "eval_every"),
        ({"lr_decay_steps": (5, 3)}, "lr_decay_steps"),
    ],
)
def test_config_errors_name_the_field(kwargs, flag):
    with pytest.raises(ConfigError, match=f"^{flag}: ") as raised:
        TrainConfig(**{"train_steps": 10, **kwargs})
    assert raised.value.field == flag  # a binary prints it as --<field>


def test_neither_length_given_means_the_default_epochs():
    assert TrainConfig().epochs == 10 and TrainConfig().train_steps is None
    assert TrainConfig(train_steps=5).epochs is None


def test_lengths():
    cfg = TrainConfig(epochs=2.5, batch_size=60)
    assert cfg.total_steps(600) == 25 and cfg.eval_interval(600) == 10
    assert TrainConfig(train_steps=7, eval_every=3).eval_interval(600) == 3


def test_schedules():
    warm = WarmupSchedule(1.0, warmup_steps=4)
    assert [round(float(warm(s)), 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    step = WarmupSchedule(0.1, kind="step", decay_steps=(10, 20))
    assert np.allclose([float(step(s)) for s in (0, 9, 10, 19, 20)], [0.1, 0.1, 0.01, 0.01, 0.001])
    cos = WarmupSchedule(1.0, kind="cosine", total_steps=100)
    assert float(cos(0)) == pytest.approx(1.0) and float(cos(50)) == pytest.approx(0.5) and float(cos(100)) < 1e-6
    assert WarmupSchedule(**step.get_config()).get_config() == step.get_config()


def test_summarize_picks_minimum_validation_loss():
    records = [
        {"step": 10, "val_loss": 0.5, "val_accuracy": 0.8, "test_accuracy": 0.79},
        {"step": 20, "val_loss": 0.3, "val_accuracy": 0.9, "test_accuracy": 0.88},
        {"step": 25, "val_loss": 0.4, "val_accuracy": 0.91, "test_accuracy": 0.9},
    ]
    result = summarize(records, 25, 1.0)
    assert (result.early_stop_step, result.early_stop_test_accuracy) == (20, 0.88)
    assert result.final_test_accuracy == 0.9 and result.ms_per_step == 40.0


def test_build_and_train_learns_and_keeps_masks(tmp_path):
    data = DataConfig(max_train_examples=600).load()
    cfg = TrainConfig(train_steps=25, eval_every=10, batch_size=60, seed=1)
    model, result = build_and_train("lenet_300_100", data, cfg, output_dir=str(tmp_path), verbose=0)
    assert [r["step"] for r in result.history] == [10, 20, 25]  # remainder interval included
    assert result.total_steps == 25 and int(model.optimizer.iterations.numpy()) == 25
    assert result.final_test_accuracy > 0.6  # far above chance (0.1) after 25 steps
    assert any(p.name.startswith("events") for p in (tmp_path / "tensorboard" / "train").iterdir())
    assert Mask.from_model(model).density() == 1.0
    assert all(l.kernel_mask.numpy().min() == 1 for l in masked_layers(model))


def test_same_seed_same_result():
    data = DataConfig(max_train_examples=300).load()
    cfg = TrainConfig(train_steps=5, batch_size=50, seed=4, jit_compile=False)
    a, _ = build_and_train("lenet_300_100", data, cfg, verbose=0)
    b, _ = build_and_train("lenet_300_100", data, cfg, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-6)


def test_killed_fit_with_backup_resumes_at_its_last_evaluation(tmp_path):
    from lt_keras._keras import keras
    from lt_keras.models import build_model
    from lt_keras.training import fit

    data = DataConfig(max_train_examples=600).load()
    cfg = TrainConfig(train_steps=40, eval_every=10, seed=0, jit_compile=False)
    backup = str(tmp_path / "backup")

    class Die(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 0:
                time.sleep(3.0)  # training seconds before the checkpoint the resumed fit starts from

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:  # after the 2nd evaluation was recorded
                raise KeyboardInterrupt

    keras.utils.set_random_seed(0)
    model = build_model("lenet_300_100", (28, 28, 1), 10)
    with pytest.raises(KeyboardInterrupt):
        fit(model, data, cfg, callbacks=[Die()], verbose=0, backup_dir=backup)
    saved = json.load(open(os.path.join(backup, "seconds.json")))["seconds"]
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    fresh = build_model("lenet_300_100", (28, 28, 1), 10)
    epochs = []
    counter = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs.append(epoch))
    result = fit(fresh, data, cfg, callbacks=[counter], verbose=0, backup_dir=backup)
    assert [r["step"] for r in result.history] == [10, 20, 30, 40]
    assert epochs == [1, 2, 3]  # continued after the last saved evaluation (step 10), not from scratch
    assert int(fresh.optimizer.iterations.numpy()) == 40
    assert saved >= 3.0 and result.wall_time_s > saved  # the killed process's seconds up to its checkpoint count
    # ... on the batches it would have seen: the same weights and records as a run never killed.
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    whole = build_model("lenet_300_100", (28, 28, 1), 10)
    reference = fit(whole, data, cfg, verbose=0)
    for a, b in zip(fresh.get_weights(), whole.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [r["test_accuracy"] for r in result.history] == [r["test_accuracy"] for r in reference.history]


def xla_compiled(function):
    """Whether a traced tf.function's graph holds a function TensorFlow must compile with XLA."""
    for concrete in function._list_all_concrete_functions():
        graph = concrete.graph.as_graph_def()
        for fn in graph.library.function:
            if fn.attr["_XlaMustCompile"].b or any(n.attr["_XlaMustCompile"].b for n in fn.node_def):
                return True
        if any(n.attr["_XlaMustCompile"].b for n in graph.node):
            return True
    return False


def test_xla_setting_is_what_the_compiled_step_runs():
    """jit_compile reaches the traced train step itself, not just the config or the summary."""
    from lt_keras._keras import keras
    from lt_keras.models import build_model
    from lt_keras.training import fit

    data = DataConfig(max_train_examples=120).load()
    for jit in (True, False):
        keras.backend.clear_session()
        model = build_model("lenet_300_100", (28, 28, 1), 10)
        fit(model, data, TrainConfig(train_steps=2, batch_size=60, jit_compile=jit), verbose=0)
        assert model.jit_compile is jit
        assert xla_compiled(model.train_function) is jit


def test_xla_by_default_only_where_it_is_faster():
    from lt_keras._keras import tf
    from lt_keras.models import build_model
    from lt_keras.training import compile_model, use_xla

    lenet, conv = build_model("lenet_300_100", (28, 28, 1), 10), build_model("conv2", (32, 32, 3), 10)
    on_gpu = bool(tf.config.list_logical_devices("GPU"))
    assert use_xla(lenet) and use_xla(conv) == on_gpu  # XLA's CPU convolutions are the slow ones
    assert use_xla(conv, True) and not use_xla(lenet, False)  # an explicit --jit_compile wins
    compile_model(conv, TrainConfig(epochs=1), total_steps=10)
    assert conv.jit_compile == on_gpu


def test_step_schedule_and_decoupled_weight_decay_inside_fit():
    """Hand-computed: a pruned weight gets no gradient, so only SGD's decoupled decay moves its stored value:
    w <- w (1 - lr * wd) each step, with lr 0.1 for steps 1-2 and 0.01 after the decay at step 2. A
    freeze_init layer keeps values stored where pruned (it computes with its frozen ones there), so the decay
    is visible; a plain fixed mask stores zeros there, which decay keeps at zero."""
    from lt_keras import Mask, mask_model
    from lt_keras._keras import keras
    from lt_keras.models import build_model
    from lt_keras.training import fit

    data = DataConfig(max_train_examples=240).load()
    keras.utils.set_random_seed(0)
    model = mask_model(build_model("lenet_300_100", (28, 28, 1), 10), mask0="freeze_init")
    mask = Mask({k: (np.arange(v.size).reshape(v.shape) % 2).astype(np.float32) for k, v in
                 Mask.ones_like(model).items()})
    before = model.get_layer("fc1").kernel.numpy().copy()
    mask.apply_to(model)
    model.get_layer("fc1").kernel.assign(before)  # values at the pruned entries
    cfg = TrainConfig(optimizer="sgd", learning_rate=0.1, momentum=0.0, weight_decay=0.5, lr_schedule="step",
                      lr_decay_steps=(2,), lr_decay_factor=0.1, train_steps=4, eval_every=2, batch_size=60,
                      jit_compile=False)
    fit(model, data, cfg, verbose=0)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)  # the rate at step 4, after the decay
    after = model.get_layer("fc1").kernel.numpy()
    pruned = mask["fc1/kernel"] == 0
    factor = (1 - 0.1 * 0.5) ** 2 * (1 - 0.01 * 0.5) ** 2
    np.testing.assert_allclose(after[pruned], before[pruned] * factor, rtol=1e-5)
    assert not np.allclose(after[~pruned], before[~pruned] * factor, rtol=1e-3)  # kept weights also learned


def test_auto_steps_per_call_divide_the_interval_and_land_on_every_exact_step():
    from lt_keras.training import resolve_steps_per_execution as resolve

    assert resolve("auto", 200) == 50 and resolve("auto", 100) == 50 and resolve("auto", 833) == 49
    assert resolve("auto", 200, [30]) == 10 and resolve("auto", 200, [230]) == 10  # K's offset in its interval
    assert resolve("auto", 200, [7]) == 1
    assert resolve("auto", 200, [200, 400]) == 50  # an evaluation always ends a call
    assert resolve("4", 200, [8]) == 4 and resolve(3, 10) == 3
    with pytest.raises(ConfigError, match="^steps_per_execution: 4 steps per call never stop at step 10"):
        resolve("4", 200, [10])
    with pytest.raises(ConfigError, match="^steps_per_execution: "):
        TrainConfig(steps_per_execution="many")
    assert TrainConfig(steps_per_execution=20).steps_per_execution == "20"


@pytest.mark.parametrize("rewind_step", [10, 7])
def test_late_rewind_snapshot_is_exact_with_many_steps_per_call(rewind_step):
    """K=10 in an interval of 20: auto runs 10 steps a call; K=7: auto adapts to 1. Either way the snapshot is
    the weights after exactly K steps, as with one step per call."""
    from lt_keras._keras import keras
    from lt_keras.imp import _Snapshot
    from lt_keras.models import build_model
    from lt_keras.training import fit

    data = DataConfig(max_train_examples=600).load()
    snapshots = {}
    for per_call in ("1", "auto"):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model, snapshot = build_model("lenet_300_100", (28, 28, 1), 10), _Snapshot(rewind_step)
        fit(model, data, TrainConfig(train_steps=20, eval_every=20, seed=0, jit_compile=False,
                                     steps_per_execution=per_call), callbacks=[snapshot], verbose=0)
        snapshots[per_call] = snapshot.weights
        assert int(model._steps_per_execution.numpy()) == (1 if per_call == "1" else {10: 10, 7: 1}[rewind_step])
    for a, b in zip(snapshots["1"], snapshots["auto"]):
        np.testing.assert_array_equal(a, b)


def test_a_users_compile_that_skips_the_rewind_step_is_refused():
    from lt_keras import find_ticket, mask_model
    from lt_keras._keras import keras
    from lt_keras.imp import ImpConfig
    from lt_keras.models import build_model

    data = DataConfig(max_train_examples=120).load()
    model = mask_model(build_model("lenet_300_100", (28, 28, 1), 10, masked=False))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=4)
    with pytest.raises(ConfigError, match="step:6 fell inside a call of 4 training steps"):
        find_ticket(model, lambda m, callbacks: m.fit(data.x_train, data.y_train, batch_size=10, epochs=1,
                                                      callbacks=callbacks, verbose=0),
                    ImpConfig(rounds=1, rewind="step:6"))


def _reference_steps(optimizer, mode, w, grad, wd, steps, lr=0.1, momentum=0.9, b1=0.9, b2=0.999, eps=1e-7):
    """Hand computation: PyTorch's SGD/Adam weight_decay (coupled) or Keras's decoupled decay."""
    w, m, v = np.array(w, np.float64), 0.0, 0.0
    for t in range(1, steps + 1):
        g = grad + (wd * w if mode == "coupled" else 0.0)
        if mode == "decoupled":
            w = w - lr * wd * w  # before the update, from the current weights
        if optimizer == "sgd":
            m = momentum * m + g  # PyTorch's buffer; Keras's -lr * m form is the same at a constant rate
            w = w - lr * m
        else:
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            w = w - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)  # Keras's epsilon-hat
    return w


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_weight_decay_modes_match_hand_computation(optimizer, mode):
    from lt_keras._keras import tf
    from lt_keras.training import make_optimizer

    config = TrainConfig(optimizer=optimizer, learning_rate=0.1, momentum=0.9, weight_decay=0.05,
                         weight_decay_mode=mode, train_steps=4)
    opt = make_optimizer(config, 4)
    w0, grad = np.array([1.0, -2.0, 0.5]), np.array([0.5, 0.25, -1.0])
    w = tf.Variable(w0.astype(np.float32))
    for _ in range(4):
        opt.apply_gradients([(tf.constant(grad, tf.float32), w)])
    np.testing.assert_allclose(w.numpy(), _reference_steps(optimizer, mode, w0, grad, 0.05, 4), rtol=1e-5)
    other = "decoupled" if mode == "coupled" else "coupled"
    assert not np.allclose(w.numpy(), _reference_steps(optimizer, other, w0, grad, 0.05, 4), rtol=1e-4)


def _sgd_after_a_decay(form, w, grad, lrs, momentum=0.9):
    """Hand computation of the two SGD momentum forms under the rates ``lrs`` (one per step)."""
    w, v = np.array(w, np.float64), 0.0
    for lr in lrs:
        if form == "pytorch":  # torch.optim.SGD: buf = mu * buf + g; p -= lr * buf
            v = momentum * v + grad
            w = w - lr * v
        else:  # Keras: m = mu * m - lr * g; p += m
            v = momentum * v - lr * grad
            w = w + v
    return w


@pytest.mark.parametrize("form", ["keras", "pytorch"])
def test_the_two_sgd_momentum_forms_after_a_rate_decay(form):
    """Step schedule: 0.1 for 3 steps, then 0.01 for 3 (a /10 decay at step 3). The forms agree before the
    decay and differ after it: PyTorch's applies the new rate to the whole velocity."""
    from lt_keras._keras import tf
    from lt_keras.training import make_optimizer

    config = TrainConfig(optimizer="sgd", learning_rate=0.1, momentum=0.9, momentum_form=form, lr_schedule="step",
                         lr_decay_steps=(3,), train_steps=6)
    opt = make_optimizer(config, 6)
    w0, grad = np.array([1.0, -2.0, 0.5]), np.array([0.5, 0.25, -1.0])
    w = tf.Variable(w0.astype(np.float32))
    lrs = [0.1] * 3 + [0.01] * 3
    for step in range(6):
        opt.apply_gradients([(tf.constant(grad, tf.float32), w)])
        np.testing.assert_allclose(w.numpy(), _sgd_after_a_decay(form, w0, grad, lrs[:step + 1]), rtol=1e-5)
    other = "keras" if form == "pytorch" else "pytorch"
    before_decay = lrs[:3]
    np.testing.assert_allclose(_sgd_after_a_decay(form, w0, grad, before_decay),
                               _sgd_after_a_decay(other, w0, grad, before_decay))
    assert not np.allclose(w.numpy(), _sgd_after_a_decay(other, w0, grad, lrs), rtol=1e-3)


def test_adam_epsilon_reaches_the_optimizer():
    from lt_keras.training import make_optimizer

    assert make_optimizer(TrainConfig(), 1).epsilon == 1e-7
    assert make_optimizer(TrainConfig(adam_epsilon=1e-8), 1).epsilon == 1e-8
    assert make_optimizer(TrainConfig(adam_epsilon=1e-8, weight_decay=1e-4, weight_decay_mode="coupled"), 1).epsilon \
        == 1e-8
    with pytest.raises(ConfigError, match="adam_epsilon"):
        TrainConfig(adam_epsilon=0.0)


COUPLED_UNDER_A_STRATEGY = """
import numpy as np
from lt_keras.distribute import make_strategy, split_cpu
split_cpu(2)
from lt_keras._keras import tf
from lt_keras.training import TrainConfig, make_optimizer
strategy = make_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2
config = TrainConfig(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0.05, weight_decay_mode="coupled",
                     momentum_form="{form}", train_steps=4)
with strategy.scope():
    w = tf.Variable([1.0, -2.0, 0.5])
    opt = make_optimizer(config, 4)
grad = tf.constant([0.5, 0.25, -1.0])

@tf.function
def step():
    def replica():  # each replica's share of a mean loss: its gradients sum to grad
        opt.apply_gradients([(grad / 2.0, w)])
    strategy.run(replica)

for _ in range(4):
    step()
print("W", " ".join(repr(float(v)) for v in w.numpy()))
"""


@pytest.mark.parametrize("form", ["keras", "pytorch"])
def test_coupled_weight_decay_is_applied_once_per_step_on_two_replicas(form):
    """The decay of a mirrored step is the single-device one: each replica adds its share, and the summed
    gradients carry wd * w once (the hand computation), not once per replica."""
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-c", COUPLED_UNDER_A_STRATEGY.format(form=form)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    w = np.array([float(v) for v in done.stdout.split("W ")[1].split()])
    w0, grad = np.array([1.0, -2.0, 0.5]), np.array([0.5, 0.25, -1.0])
    np.testing.assert_allclose(w, _reference_steps("sgd", "coupled", w0, grad, 0.05, 4), rtol=1e-5)
    assert not np.allclose(w, _reference_steps("sgd", "coupled", w0, grad, 0.1, 4), rtol=1e-4)


def test_fit_stores_zeros_where_weights_were_set_by_hand():
    """A kernel written with set_weights keeps values where the mask prunes; fit stores zeros there first, so
    the trained kernels (get_weights(), checkpoints) show exact zeros where pruned."""
    from lt_keras import Mask, masked_layers
    from lt_keras._keras import keras
    from lt_keras.models import build_model
    from lt_keras.training import fit

    data = DataConfig(max_train_examples=240).load()
    keras.utils.set_random_seed(0)
    model = build_model("lenet_300_100", (28, 28, 1), 10)
    dense = {layer.name: layer.kernel.numpy() for layer in masked_layers(model)}
    mask = Mask({k: (np.random.RandomState(1).rand(*v.shape) < 0.5).astype(np.float32)
                 for k, v in Mask.ones_like(model).items()})
    mask.apply_to(model)
    for layer in masked_layers(model):  # e.g. a rewind by hand: values again where the mask prunes
        layer.kernel.assign(dense[layer.name])
    fit(model, data, TrainConfig(optimizer="sgd", learning_rate=1e-3, train_steps=2, eval_every=2, batch_size=60,
                                 jit_compile=False), verbose=0)
    for key, values in mask.items():
        kernel = model.get_layer(key.split("/")[0]).kernel.numpy()
        assert np.all(kernel[values == 0] == 0.0) and np.all(kernel[values == 1] != 0.0)

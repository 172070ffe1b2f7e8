"""The one time unit: iterations or epochs, parsed once and resolved by each run's steps per epoch."""
import dataclasses

import numpy as np
import pytest

from lt_keras import ConfigError
from lt_keras._keras import keras
from lt_keras.data import DataConfig
from lt_keras.duration import Duration, canonical, iterations
from lt_keras.early_bird import EarlyBirdConfig
from lt_keras.imp import ImpConfig, Rewind
from lt_keras.methods.early_bird import schedule
from lt_keras.models import build_model
from lt_keras.runs import run_identity
from lt_keras.training import TrainConfig, fit, make_optimizer


def test_forms_and_their_canonical_values():
    cases = {"500": (0, 500, 500), "500it": (0, 500, 500), 500: (0, 500, 500), "30ep": (30, 0, "30ep"),
             "2ep100it": (2, 100, "2ep100it"), "0.5ep": (0.5, 0, "0.5ep"), " 3EP ": (3, 0, "3ep")}
    for text, (epochs, its, value) in cases.items():
        duration = Duration.parse(text, "f")
        assert (duration.epochs, duration.iterations, duration.value) == (epochs, its, value)
    assert Duration.parse("2ep100it", "f").steps(703) == 1506 and Duration.parse("0.5ep", "f").steps(7) == 4
    for bad in ("", "ep", "1.5", "-3", -3, "3 ep", "1e", "it", True, 2.0):
        with pytest.raises(ConfigError, match="^f: "):
            Duration.parse(bad, "f")
    with pytest.raises(ConfigError, match="rewind: '5ep' is in epochs"):
        iterations("5ep", "rewind")  # no steps per epoch known here: said, not guessed
    assert canonical(None, "f") is None and iterations(None, "f", 3) is None


def test_configs_keep_iterations_as_ints_so_older_run_directories_match():
    assert TrainConfig(warmup_steps="100", eval_every="20it", lr_schedule="step", lr_decay_steps=("30", 40)) == \
        TrainConfig(warmup_steps=100, eval_every=20, lr_schedule="step", lr_decay_steps=(30, 40))
    config = TrainConfig(warmup_steps="1ep", eval_every="0.5ep", lr_schedule="step", lr_decay_steps=("2ep", "3ep"),
                         batch_size=60)
    resolved = config.resolved(600)  # 10 iterations an epoch
    assert (resolved.warmup_steps, resolved.eval_every, resolved.lr_decay_steps) == (10, 5, (20, 30))
    assert config.eval_interval(600) == 5


def test_schedule_errors_are_named():
    with pytest.raises(ConfigError, match="^lr_decay_steps: decay points need lr_schedule=step"):
        TrainConfig(lr_decay_steps=("2ep",))  # they would be ignored silently
    with pytest.raises(ConfigError, match="^lr_decay_steps: must be increasing"):
        TrainConfig(lr_schedule="step", lr_decay_steps=("3ep", "2ep"))
    mixed = TrainConfig(lr_schedule="step", lr_decay_steps=(500, "2ep"), batch_size=60)
    assert mixed.resolved(60000).lr_decay_steps == (500, 2000)
    with pytest.raises(ConfigError, match=r"^lr_decay_steps: must be increasing.*\[2000, 500\]"):
        dataclasses.replace(mixed, lr_decay_steps=("2ep", 500)).resolved(60000)
    with pytest.raises(ConfigError, match="^eval_every: must be more than 0"):
        TrainConfig(eval_every="0ep")
    with pytest.raises(ConfigError, match="^warmup_steps: '1ep' is in epochs"):
        make_optimizer(TrainConfig(warmup_steps="1ep"), 100)  # unresolved: refused, never read as 1


def test_a_run_in_epochs_is_the_run_in_iterations():
    """Warmup, decay points and evaluation interval written in epochs train exactly as their iterations."""
    data = DataConfig(max_train_examples=240).load()
    spe = TrainConfig(batch_size=60).steps_per_epoch(data.num_train)
    base = dict(optimizer="sgd", learning_rate=0.05, lr_schedule="step", batch_size=60, epochs=2.0, jit_compile=False)
    runs = []
    for times in ({"warmup_steps": "1ep", "lr_decay_steps": ("1ep1it",), "eval_every": "1ep"},
                  {"warmup_steps": spe, "lr_decay_steps": (spe + 1,), "eval_every": spe}):
        keras.utils.set_random_seed(0)
        model = build_model("lenet_300_100", data.input_shape, data.num_classes)
        result = fit(model, data, TrainConfig(**base, **times), verbose=0)
        runs.append((result.history, model.get_weights(), float(model.optimizer.learning_rate)))
    (history_a, weights_a, lr_a), (history_b, weights_b, lr_b) = runs
    assert history_a == history_b and lr_a == lr_b == pytest.approx(0.005)
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)


def test_rewind_points_in_epochs():
    assert ImpConfig(rewind="step:2ep").rewind_to.step(703) == 1406
    assert ImpConfig(rewind="step:1ep5it").rewind_to.late and ImpConfig(rewind="step:5").rewind_to.step() == 5
    assert Rewind.parse("init").step(3) == 0 and not Rewind.parse("init").late and Rewind.parse("none").step() is None
    for bad, message in (("step:0ep", "expected init, none or step:K"), ("step:0", "expected init"),
                         ("step:x", "'x' is not a number of iterations or epochs"), ("step:", "'' is not"),
                         ("epoch:3", "expected init")):
        with pytest.raises(ConfigError, match=f"^rewind: {message}"):
            ImpConfig(rewind=bad)
    with pytest.raises(ConfigError, match="^rewind: '1ep' is in epochs"):
        ImpConfig(rewind="step:1ep").rewind_to.step()


def test_early_bird_phases_shift_the_training_schedule_in_any_unit():
    """Retraining from the EB epoch resumes the one schedule: points move back by its iterations, passed ones
    divide the rate; epochs and iterations give the same phase."""
    in_epochs = TrainConfig(epochs=10.0, batch_size=60, learning_rate=0.1, lr_schedule="step",
                            lr_decay_steps=("4ep", "7ep"))
    in_iterations = dataclasses.replace(in_epochs, lr_decay_steps=(40, 70))
    for start, points, lr in ((0, (40, 70), 0.1), (5, (20,), 0.01), (8, (), 0.001)):
        phases = [schedule(c, 600, 10 - start, start_epoch=start) for c in (in_epochs, in_iterations)]
        assert phases[0] == phases[1]
        assert phases[0].lr_decay_steps == points and phases[0].learning_rate == pytest.approx(lr)
        assert phases[0].lr_schedule == ("step" if points else "constant")
    assert "lr_decay_epochs" not in {f.name for f in dataclasses.fields(EarlyBirdConfig)}


def test_an_early_bird_run_directory_with_lr_decay_epochs_is_the_same_run():
    old = {"model": "vgg11_bn", "early_bird": {"lr_decay_epochs": [60.0, 90.0], "epsilon": 0.1},
           "train": {"lr_schedule": "step", "lr_decay_steps": [], "epochs": 120.0}}
    new = {"model": "vgg11_bn", "early_bird": {"epsilon": 0.1},
           "train": {"lr_schedule": "step", "lr_decay_steps": ["60ep", "90ep"], "epochs": 120.0}}
    assert run_identity(old) == run_identity(new)
    assert run_identity(dict(old, early_bird={"lr_decay_epochs": [], "epsilon": 0.1})) != run_identity(new)

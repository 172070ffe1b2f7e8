"""IMP engine: exact per-round counts, rewinding, controls, and resume after a kill."""
import os

import numpy as np
import pytest

import lt_keras.imp as imp_module
from lt_keras import LtKerasError, Mask
from lt_keras._keras import keras
from lt_keras.data import DataConfig
from lt_keras.imp import ImpConfig, run_imp
from lt_keras.models import build_model
from lt_keras.training import TrainConfig

TRAIN = TrainConfig(train_steps=12, eval_every=6, batch_size=60, seed=5, jit_compile=False)


@pytest.fixture(scope="module")
def data():
    return DataConfig(max_train_examples=600).load()


def build():
    return build_model("lenet_300_100", (28, 28, 1), 10)


def final_mask(run_dir, k):
    return Mask.load(os.path.join(run_dir, f"round_{k}", "mask.npz"))


def test_counts_rewind_and_tickets(tmp_path, data):
    run = str(tmp_path)
    results = run_imp(run, build, data, ImpConfig(rounds=2), TRAIN, verbose=0)
    assert [r["round"] for r in results] == [0, 1, 2]
    m1, m2 = final_mask(run, 1), final_mask(run, 2)
    assert m1.counts() == {"fc1/kernel": (188_160, 235_200), "fc2/kernel": (24_000, 30_000), "output/kernel": (900, 1000)}
    assert m2.counts()["fc1/kernel"][0] == 150_528 and m2.counts()["output/kernel"][0] == 810
    assert np.all(m2["fc1/kernel"] <= m1["fc1/kernel"])
    # The round-2 ticket starts from theta_0 (rewind=init) times its mask.
    with np.load(os.path.join(run, "init_weights.npz")) as f:
        init_fc1 = f["w0"]
    ticket = keras.models.load_model(os.path.join(run, "round_2", "ticket", "model.keras"))
    np.testing.assert_array_equal(ticket.get_layer("fc1").kernel.numpy() * m2["fc1/kernel"], init_fc1 * m2["fc1/kernel"])
    assert Mask.from_model(ticket) == m2
    assert results[2]["density"] == pytest.approx(m2.density())
    assert 0.0 <= results[2]["untrained_test_accuracy"] <= 1.0


def test_killed_run_resumes_to_identical_masks(tmp_path, data, monkeypatch):
    config = ImpConfig(rounds=2)
    reference = str(tmp_path / "reference")
    run_imp(reference, build, data, config, TRAIN, verbose=0)

    killed = str(tmp_path / "killed")
    real_fit, calls = imp_module.fit, []

    def dying_fit(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # round 2, mid-round
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(imp_module, "fit", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        run_imp(killed, build, data, config, TRAIN, verbose=0)
    assert os.path.exists(os.path.join(killed, "round_1", "metrics.json"))
    assert not os.path.exists(os.path.join(killed, "round_2"))  # the partial round never looks complete
    monkeypatch.setattr(imp_module, "fit", real_fit)
    keras.backend.clear_session()
    run_imp(killed, build, data, config, TRAIN, verbose=0)
    for k in (1, 2):
        assert final_mask(killed, k) == final_mask(reference, k)

    # A finished run trains nothing.
    monkeypatch.setattr(imp_module, "fit", lambda *a, **k: pytest.fail("a finished run trained again"))
    assert len(run_imp(killed, build, data, config, TRAIN, verbose=0)) == 3


def test_controls_keep_per_layer_density(tmp_path, data):
    config = ImpConfig(rounds=1, controls=("random_reinit", "random_prune"), criterion="movement", rewind="step:6")
    results = run_imp(str(tmp_path), build, data, config, TRAIN, verbose=0)
    ticket = results[1]
    for control in ("random_reinit", "random_prune"):
        assert results[1]["controls"][control]["layer_density"] == ticket["layer_density"]


def test_one_shot_and_global(tmp_path, data):
    one_shot = run_imp(str(tmp_path / "a"), build, data, ImpConfig(target_density=0.3), TRAIN, verbose=0)
    assert len(one_shot) == 2
    assert all(abs(d - 0.3) < 1e-3 for d in one_shot[1]["layer_density"].values())
    glob = run_imp(str(tmp_path / "b"), build, data, ImpConfig(rounds=1, allocation="global", prune_rate=0.5),
                   TRAIN, verbose=0)
    assert glob[1]["density"] == pytest.approx(0.5, abs=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rounds": 0}, "--rounds"),
        ({"prune_rate_fc": 1.0}, "--prune_rate_fc"),
        ({"criterion": "biggest"}, "--criterion"),
        ({"mask1": "nope"}, "--mask1"),
        ({"rewind": "step:x"}, "--rewind"),
        ({"controls": ("other",)}, "--controls"),
        ({"target_density": 1.2}, "--target_density"),
        ({"mask0": "keep"}, "--mask0"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(LtKerasError, match=message):
        ImpConfig(**kwargs).validate()


def test_mask0_freeze_init_keeps_pruned_weights_at_theta0(tmp_path, data):
    run = str(tmp_path)
    run_imp(run, build, data, ImpConfig(rounds=1, mask0="freeze_init"), TRAIN, verbose=0)
    with np.load(os.path.join(run, "init_weights.npz")) as f:
        init_fc1 = f["w0"]
    ticket = keras.models.load_model(os.path.join(run, "round_1", "ticket", "model.keras"))
    fc1 = ticket.get_layer("fc1")
    assert fc1.mask0 == "freeze_init"
    np.testing.assert_array_equal(fc1.kernel_frozen.numpy(), init_fc1)
    # The effective kernel equals theta_0 everywhere at the rewind point (kept: rewound, pruned: frozen).
    np.testing.assert_array_equal(fc1.masked_kernel().numpy(), init_fc1)


def lenet_arrays(data, n=600):
    x, y = next(iter(data.train_dataset(n, seed=0)))
    return x.numpy(), y.numpy()


def test_find_ticket_around_users_fit(tmp_path, data):
    """The library API prunes the user's own compiled model trained by their own model.fit."""
    from lt_keras import find_ticket, mask_model

    keras.utils.set_random_seed(3)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(64, activation="relu", name="hidden")(h)
    user_model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
    model = mask_model(user_model)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    theta0 = model.get_layer("hidden").kernel.numpy()
    x, y = lenet_arrays(data)
    seen_callbacks = []

    def train_fn(m, callbacks):
        seen_callbacks.append(list(callbacks))
        return m.fit(x, y, batch_size=60, epochs=1, verbose=0, callbacks=callbacks).history["loss"][-1]

    search = find_ticket(model, train_fn, ImpConfig(rounds=2, rewind="step:3"),
                         evaluate_fn=lambda m: m.evaluate(x, y, verbose=0, return_dict=True)["accuracy"],
                         output_dir=str(tmp_path))
    assert [r["round"] for r in search.rounds] == [0, 1, 2]
    assert search.mask.counts()["hidden/kernel"] == (round(0.8 * round(0.8 * 50176)), 50176)
    assert search.mask.counts()["logits/kernel"] == (round(0.9 * 576), 640)
    assert search.masks[2] == search.mask and Mask.from_model(model) == search.mask
    assert len(seen_callbacks[0]) == 1 and seen_callbacks[1] == []  # the snapshot rides only round 0
    assert all(0 <= r["evaluation"] <= 1 and r["train"] > 0 for r in search.rounds)
    # Pruned weights never moved off zero through the user's fit.
    hidden = model.get_layer("hidden")
    assert np.all(hidden.masked_kernel().numpy()[search.mask["hidden/kernel"] == 0] == 0)
    ticket = keras.models.load_model(os.path.join(str(tmp_path), "round_2", "ticket", "model.keras"))
    assert Mask.from_model(ticket) == search.mask
    assert not np.array_equal(ticket.get_layer("hidden").kernel.numpy(), theta0)  # rewound to step 3, not 0
    assert model.optimizer.iterations.numpy() == 10  # zeroed at the last rewind, then one epoch


def test_find_ticket_rejects_unmasked_model():
    from lt_keras import find_ticket

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(LtKerasError, match="mask_model"):
        find_ticket(model, lambda m, c: None)

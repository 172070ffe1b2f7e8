"""IMP engine: exact per-round counts, rewinding, controls, and resume after a kill."""
import json
import os

import numpy as np
import pytest

import lt_keras.imp as imp_module
from lt_keras import ConfigError, LtKerasError, Mask
from lt_keras._keras import keras
from lt_keras.imp import ImpConfig
from lt_keras.methods.imp import search as imp_search
from tests.conftest import IMP_TRAIN as TRAIN
from tests.conftest import build_lenet as build


def final_mask(run_dir, k):
    return Mask.load(os.path.join(run_dir, f"round_{k}", "mask.npz"))


def test_counts_rewind_and_tickets(tmp_path, data):
    run = str(tmp_path)
    results = imp_search(run, build, data, ImpConfig(rounds=2), TRAIN, verbose=0)
    assert [r["round"] for r in results] == [0, 1, 2]
    m1, m2 = final_mask(run, 1), final_mask(run, 2)
    assert m1.counts() == {"fc1/kernel": (188_160, 235_200), "fc2/kernel": (24_000, 30_000),
                           "output/kernel": (900, 1000)}
    assert m2.counts()["fc1/kernel"][0] == 150_528 and m2.counts()["output/kernel"][0] == 810
    assert np.all(m2["fc1/kernel"] <= m1["fc1/kernel"])
    # The round-2 ticket starts from theta_0 (rewind=init) times its mask.
    with np.load(os.path.join(run, "init_weights.npz")) as f:
        init_fc1 = f["w0"]
    ticket = keras.models.load_model(os.path.join(run, "round_2", "ticket", "model.keras"))
    kept = m2["fc1/kernel"]
    np.testing.assert_array_equal(ticket.get_layer("fc1").kernel.numpy() * kept, init_fc1 * kept)
    assert Mask.from_model(ticket) == m2
    assert results[2]["density"] == pytest.approx(m2.density())
    # The untrained accuracy is the round-2 ticket's (theta_0 under its mask) before any training.
    ticket.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    untrained = ticket.evaluate(data.eval_dataset("test"), verbose=0, return_dict=True)["accuracy"]
    assert results[2]["untrained_test_accuracy"] == pytest.approx(untrained, abs=1e-6)


def round_record(run_dir, k):
    """Everything a round leaves: its mask, metrics (wall time aside) and the ticket's weights."""
    metrics = json.load(open(os.path.join(run_dir, f"round_{k}", "metrics.json")))
    metrics.pop("wall_time_s")
    ticket = keras.models.load_model(os.path.join(run_dir, f"round_{k}", "ticket", "model.keras"))
    return final_mask(run_dir, k), metrics, ticket.get_weights()


def assert_same_rounds(a, b, rounds):
    for k in range(rounds + 1):
        (mask_a, metrics_a, weights_a), (mask_b, metrics_b, weights_b) = round_record(a, k), round_record(b, k)
        assert mask_a == mask_b, k
        assert metrics_a == metrics_b, k
        for wa, wb in zip(weights_a, weights_b):
            np.testing.assert_array_equal(wa, wb)


class Trainings(keras.callbacks.Callback):
    """Joins every training of a search (``search(callbacks=...)``) and counts them, one ``on_train_begin`` each
    (these runs have no remainder interval, so no training starts Keras's fit twice); ``at_start(n, model)`` runs
    as the n-th begins, ``at_epoch(n, epoch)`` as each of its evaluation intervals begins."""

    def __init__(self, at_start=None, at_epoch=None):
        super().__init__()
        self.count, self.at_start, self.at_epoch = 0, at_start, at_epoch

    def on_train_begin(self, logs=None):
        self.count += 1
        if self.at_start:
            self.at_start(self.count, self.model)

    def on_epoch_begin(self, epoch, logs=None):
        if self.at_epoch:
            self.at_epoch(self.count, epoch)


def kill_run_at(run_dir, config, call):
    """Run IMP until its ``call``-th training (1-based) starts, as a kill there would leave it."""

    def die(n, model):
        if n == call:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        imp_search(run_dir, build, data_for_kills, config, TRAIN, verbose=0, callbacks=[Trainings(die)])
    keras.backend.clear_session()
    keras.utils.set_random_seed(123)  # whatever the global state, the resumed run draws its own streams


@pytest.mark.parametrize("kill_at", [3, 4])  # fit calls: r0, r1, r1's control, r2, r2's control
def test_killed_run_with_controls_resumes_bit_identical(tmp_path, data, kill_at):
    """A kill after a control ran must not change the later rounds' data order, masks, weights or metrics."""
    global data_for_kills
    data_for_kills = data
    config = ImpConfig(rounds=2, controls=("random_reinit",))
    reference = str(tmp_path / "reference")
    imp_search(reference, build, data, config, TRAIN, verbose=0)
    killed = str(tmp_path / "killed")
    kill_run_at(killed, config, kill_at)
    assert os.path.exists(os.path.join(killed, "round_0", "metrics.json"))
    assert not os.path.exists(os.path.join(killed, "round_2"))  # the partial round never looks complete
    imp_search(killed, build, data, config, TRAIN, verbose=0)
    assert_same_rounds(killed, reference, 2)

    # A finished run trains nothing.
    trains = Trainings(lambda n, model: pytest.fail("a finished run trained again"))
    assert len(imp_search(killed, build, data, config, TRAIN, verbose=0, callbacks=[trains])) == 3


def test_resumed_round_trains_from_the_saved_rewind_weights(tmp_path, data):
    """Killed in round 2: the resumed round trains from the late-rewind weights read back from disk."""
    global data_for_kills
    data_for_kills = data
    config = ImpConfig(rounds=2, rewind="step:6")
    reference = str(tmp_path / "reference")
    imp_search(reference, build, data, config, TRAIN, verbose=0)
    killed = str(tmp_path / "killed")
    kill_run_at(killed, config, 3)
    imp_search(killed, build, data, config, TRAIN, verbose=0)
    assert_same_rounds(killed, reference, 2)
    assert round_record(killed, 2)[1]["final_test_accuracy"] > 0.5  # it learned: the rewind weights are real


def kill_inside_fit(run_dir, config, call):
    """Run IMP until the ``call``-th training (1-based) has saved its first evaluation, then kill it there."""

    def die(n, epoch):
        if n == call and epoch == 1:  # the first evaluation (step 6 of 12) is backed up
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        imp_search(run_dir, build, data_for_kills, config, TRAIN, verbose=0, callbacks=[Trainings(at_epoch=die)])
    keras.backend.clear_session()
    keras.utils.set_random_seed(123)


def first_epochs_of_each_training():
    """A callback, and the first Keras epoch (evaluation interval) each training it joins trains: 0 unless it
    resumed, None when nothing was left to train."""
    firsts = []

    def first(n, epoch):
        if firsts[-1] is None:
            firsts[-1] = epoch

    return Trainings(lambda n, model: firsts.append(None), first), firsts


@pytest.mark.parametrize("config, kill_at", [
    (ImpConfig(rounds=2, controls=("random_reinit",)), 2),  # round 1's training
    (ImpConfig(rounds=2, controls=("random_reinit",)), 3),  # round 1's control
    (ImpConfig(rounds=1, rewind="step:3"), 1),  # round 0, past its late-rewind snapshot
])
def test_round_killed_mid_training_resumes_at_its_last_evaluation(tmp_path, data, config, kill_at):
    """A long round is not retrained from scratch: the killed training continues from its backed-up evaluation
    (with the rewind snapshot taken before the kill) and the run ends as one never killed."""
    global data_for_kills
    data_for_kills = data
    reference = str(tmp_path / "reference")
    imp_search(reference, build, data, config, TRAIN, verbose=0)
    killed = str(tmp_path / "killed")
    kill_inside_fit(killed, config, kill_at)
    k = 0 if kill_at == 1 else 1
    assert os.path.isdir(os.path.join(killed, f"round_{k}.backup"))
    recorder, firsts = first_epochs_of_each_training()
    imp_search(killed, build, data, config, TRAIN, verbose=0, callbacks=[recorder])
    resumed = firsts[0] if k == 0 else firsts[kill_at - 2]  # round 0 was complete before a kill in round 1
    assert resumed == 1, firsts
    assert_same_rounds(killed, reference, config.rounds)
    assert not [name for name in os.listdir(killed) if name.endswith(".backup")]  # gone once rounds complete


def models_at_training():
    """A callback, and each model's kernels and masks as each training it joins begins."""
    from lt_keras.layers import masked_layers

    seen = []

    def record(n, model):
        seen.append({l.name: (l.kernel.numpy().copy(), l.kernel_mask.numpy().copy()) for l in masked_layers(model)})

    return Trainings(record), seen


def test_controls_differ_from_the_ticket_as_each_defines(tmp_path, data):
    recorder, seen = models_at_training()
    config = ImpConfig(rounds=1, controls=("random_reinit", "random_prune"))
    results = imp_search(str(tmp_path), build, data, config, TRAIN, verbose=0, callbacks=[recorder])
    ticket, reinit, prune = seen[1], seen[2], seen[3]  # round 1's ticket, then its controls in order
    with np.load(os.path.join(str(tmp_path), "init_weights.npz")) as f:
        theta0 = f["w0"]
    kernel, mask = ticket["fc1"]
    np.testing.assert_array_equal(kernel * mask, theta0 * mask)
    # random_reinit: the same mask over a fresh draw of the same initializer (Glorot normal for LeNet).
    r_kernel, r_mask = reinit["fc1"]
    np.testing.assert_array_equal(r_mask, mask)
    kept = mask == 1
    assert abs(np.corrcoef(r_kernel[kept], theta0[kept])[0, 1]) < 0.05
    assert np.std(r_kernel[kept]) == pytest.approx(np.std(theta0), rel=0.05)
    # random_prune: the same per-layer counts at other positions, over the ticket's rewind weights.
    p_kernel, p_mask = prune["fc1"]
    assert p_mask.sum() == mask.sum() and not np.array_equal(p_mask, mask)
    assert np.mean(p_mask[kept]) == pytest.approx(mask.mean(), abs=0.02)  # positions independent of the ticket
    np.testing.assert_array_equal(p_kernel, theta0 * p_mask)  # stored zeros where pruned
    for name in ("fc2", "output"):
        assert prune[name][1].sum() == ticket[name][1].sum()
    for control in ("random_reinit", "random_prune"):
        assert results[1]["controls"][control]["layer_density"] == results[1]["layer_density"]


MASK1 = ["init", "reinit", "reshuffle", "constant", "signed_reinit", "signed_reshuffle", "signed_constant"]


@pytest.mark.parametrize("mask1", MASK1)
def test_every_mask1_action_end_to_end(tmp_path, data, mask1):
    imp_search(str(tmp_path), build, data, ImpConfig(rounds=1, mask1=mask1), TRAIN, verbose=0)
    with np.load(os.path.join(str(tmp_path), "init_weights.npz")) as f:
        theta0 = f["w0"]
    ticket = keras.models.load_model(os.path.join(str(tmp_path), "round_1", "ticket", "model.keras"))
    mask = final_mask(str(tmp_path), 1)["fc1/kernel"] == 1
    start, init = ticket.get_layer("fc1").kernel.numpy()[mask], theta0[mask]
    same_sign = np.mean(np.sign(start) == np.sign(init))
    if mask1 == "init":
        np.testing.assert_array_equal(start, init)
    elif mask1 in ("reshuffle", "signed_reshuffle"):
        np.testing.assert_allclose(np.sort(np.abs(start)), np.sort(np.abs(init)))
        assert abs(np.corrcoef(np.abs(start), np.abs(init))[0, 1]) < 0.05
    elif mask1 in ("constant", "signed_constant"):
        np.testing.assert_allclose(np.abs(start), np.std(theta0), rtol=1e-5)
    else:  # fresh draws of the same initializer
        assert np.std(start) == pytest.approx(np.std(theta0), rel=0.05)  # the mask does not select them
        assert abs(np.corrcoef(np.abs(start), np.abs(init))[0, 1]) < 0.05
    if mask1.startswith("signed_"):
        assert same_sign == 1.0
    elif mask1 != "init":
        assert 0.45 < same_sign < 0.55  # unsigned actions keep a sign by chance only


def _authors_round_start(exp, prev_start, mask, rs):
    """train_lottery.py's --exp on initial_weights, which get_weight_init.py takes from --prev_weights: the
    previous round's run, whose all_weights[0] is that round's start (the whole tensor)."""
    start, kept = prev_start.copy(), mask.astype(bool)
    if exp == "random_reshuffle":
        temp = start[kept]
        rs.shuffle(temp)
        start[kept] = temp
    elif exp == "signed_constant":
        start = np.std(start) * np.sign(start)
    return start


@pytest.mark.parametrize("mask1, exp", [("reshuffle", "random_reshuffle"), ("signed_constant", "signed_constant")])
def test_iterative_mask1_applies_to_the_previous_rounds_start_as_the_authors_chain(mask1, exp):
    """Round 2 of a chain starts from round 1's start tensor, not from theta_0: its kept values are a
    permutation of round 1's at those positions (reshuffle), and the constant is the std of round 1's whole
    start tensor (signed_constant), as the authors' port computes from the same arrays."""
    model = build()
    layers = {f"{l.name}/kernel": l for l in imp_module.masked_layers(model)}
    theta0 = model.get_weights()
    rng = np.random.RandomState(0)
    m1 = Mask({k: (rng.rand(*l.kernel.shape) < 0.8).astype(np.float32) for k, l in layers.items()})
    m2 = Mask({k: v * (rng.rand(*v.shape) < 0.8) for k, v in m1.items()})
    config = ImpConfig(mask1=mask1)
    start1 = imp_module._set_start(model, theta0, m1, config, np.random.RandomState(1))
    start2 = imp_module._set_start(model, theta0, m2, config, np.random.RandomState(2), chain_kernels=start1)
    key = "fc1/kernel"
    theirs1 = _authors_round_start(exp, theta0[0], m1[key], np.random.RandomState(3))
    theirs2 = _authors_round_start(exp, start1[key], m2[key], np.random.RandomState(4))
    kept2 = m2[key] == 1
    np.testing.assert_allclose(np.sort(start2[key][kept2]), np.sort(theirs2[kept2]), rtol=1e-6)
    np.testing.assert_array_equal(layers[key].kernel.numpy(), start2[key] * m2[key])
    if mask1 == "signed_constant":
        np.testing.assert_allclose(start1[key], theirs1, rtol=1e-6)
        np.testing.assert_allclose(np.abs(start2[key]), np.std(start1[key]), rtol=1e-6)
    else:  # round 1's kept values were a permutation of theta_0's at m1; round 2 draws from those, not theta_0
        np.testing.assert_allclose(np.sort(start1[key][m1[key] == 1]), np.sort(theta0[0][m1[key] == 1]))
        assert not np.allclose(np.sort(start2[key][kept2]), np.sort(theta0[0][kept2]))


@pytest.mark.parametrize("mask0", ["freeze_init_zero_mask", "freeze_init_zero_all", "freeze_init_zero_reshuffle",
                                   "freeze_init_zero_rev"])
def test_mask0_actions_end_to_end_use_theta0_and_the_trained_kernels(tmp_path, data, mask0):
    from lt_keras.actions import apply_mask0
    from lt_keras.ticket import load_ticket

    run = str(tmp_path)
    imp_search(run, build, data, ImpConfig(rounds=1, mask0=mask0), TRAIN, verbose=0)
    with np.load(os.path.join(run, "init_weights.npz")) as f:
        theta0 = f["w0"]
    with np.load(os.path.join(run, "round_0", "next.npz")) as f:
        final = f["final:fc1/kernel"]  # theta_final of the round that pruned
    ticket = load_ticket(os.path.join(run, "round_1", "ticket"))
    fc1 = ticket.model.get_layer("fc1")
    mask = ticket.mask["fc1/kernel"]
    frozen = fc1.kernel_frozen.numpy()
    pruned = mask == 0
    moved_in = np.abs(theta0) > np.abs(final)
    if mask0 == "freeze_init_zero_reshuffle":
        assert np.sum(frozen[pruned] == 0) == np.sum(moved_in[pruned])
        assert not np.array_equal(frozen[pruned] == 0, moved_in[pruned])
    else:
        np.testing.assert_array_equal(frozen * (1 - mask), apply_mask0(mask0, theta0, final, mask))
    assert 0 < np.mean(frozen[pruned] == 0) < 1
    kernel = fc1.masked_kernel().numpy()
    np.testing.assert_array_equal(kernel[pruned], frozen[pruned])
    expected_kept = np.where(moved_in, 0, theta0) if mask0 == "freeze_init_zero_all" else theta0
    np.testing.assert_array_equal(kernel[~pruned], expected_kept[~pruned])
    assert fc1.mask0 == mask0 and ticket.info.settings["mask0"] == mask0


def test_one_shot_and_global(tmp_path, data):
    one_shot = imp_search(str(tmp_path / "a"), build, data, ImpConfig(target_density=0.3), TRAIN, verbose=0)
    assert len(one_shot) == 2
    assert all(abs(d - 0.3) < 1e-3 for d in one_shot[1]["layer_density"].values())
    glob = imp_search(str(tmp_path / "b"), build, data, ImpConfig(rounds=1, allocation="global", prune_rate=0.5),
                   TRAIN, verbose=0)
    assert glob[1]["density"] == pytest.approx(0.5, abs=1e-5)
    # One pooled threshold: the layers end at different densities (pruning each layer at the pooled rate would
    # give 0.5 everywhere), and the lowest kept |w_final| of any layer clears the highest pruned one of all.
    densities = glob[1]["layer_density"]
    assert max(densities.values()) - min(densities.values()) > 0.05, densities
    with np.load(os.path.join(str(tmp_path / "b"), "round_0", "next.npz")) as f:
        final = {k[len("final:"):]: f[k] for k in f.files if k.startswith("final:")}
        pooled = {k[len("mask:"):]: f[k] for k in f.files if k.startswith("mask:")}
    kept = min(np.abs(final[k][pooled[k] == 1]).min() for k in final)
    pruned = max(np.abs(final[k][pooled[k] == 0]).max() for k in final)
    assert kept >= pruned


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rounds": 0}, "rounds"),
        ({"prune_rate_fc": 1.0}, "prune_rate_fc"),
        ({"criterion": "biggest"}, "criterion"),
        ({"mask1": "nope"}, "mask1"),
        ({"rewind": "step:x"}, "rewind"),
        ({"controls": ("other",)}, "controls"),
        ({"target_density": 1.2}, "target_density"),
        ({"mask0": "keep"}, "mask0"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=f"^{message}: ") as raised:
        ImpConfig(**kwargs)
    assert raised.value.field == message


def test_mask0_freeze_init_keeps_pruned_weights_at_theta0(tmp_path, data):
    run = str(tmp_path)
    imp_search(run, build, data, ImpConfig(rounds=1, mask0="freeze_init"), TRAIN, verbose=0)
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

    evaluations = []

    def evaluate_fn(m):
        evaluations.append(m.evaluate(x, y, verbose=0, return_dict=True)["accuracy"])
        return evaluations[-1]

    search = find_ticket(model, train_fn, ImpConfig(rounds=2, rewind="step:3"), evaluate_fn=evaluate_fn,
                         output_dir=str(tmp_path))
    assert [r["round"] for r in search.rounds] == [0, 1, 2]
    assert search.mask.counts()["hidden/kernel"] == (round(0.8 * round(0.8 * 50176)), 50176)
    assert search.mask.counts()["logits/kernel"] == (round(0.9 * 576), 640)
    assert search.masks[2] == search.mask and Mask.from_model(model) == search.mask
    snapshots = [[type(c).__name__ for c in round_callbacks].count("_Snapshot") for round_callbacks in seen_callbacks]
    assert snapshots == [1, 0, 0]  # the snapshot rides only round 0
    assert [r["evaluation"] for r in search.rounds] == evaluations  # evaluate_fn after each round's training
    assert all(r["evaluation"] > 0.5 and r["train"] > 0 for r in search.rounds)  # every round learned
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


def test_find_ticket_fails_at_the_first_batch_when_train_fn_drops_the_callbacks(data):
    from lt_keras import find_ticket, mask_model

    model = mask_model(keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                         keras.layers.Dense(10, name="logits")]))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = lenet_arrays(data)
    batches = []

    def forgetful(m, callbacks):
        m.fit(x, y, batch_size=60, epochs=1, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_batch_end=lambda b, logs: batches.append(b))])

    with pytest.raises(LtKerasError, match="must pass the callbacks on"):
        find_ticket(model, forgetful, ImpConfig(rounds=1))
    assert batches == []  # not one batch trained
    model.fit(x[:120], y[:120], batch_size=60, verbose=0)  # the model's own fit is left as it was


def test_rewind_none_continues_from_the_trained_weights(tmp_path, data):
    """rewind=none: round 1 starts from round 0's trained kernels under the new mask, not from theta_0."""
    run = str(tmp_path)
    imp_search(run, build, data, ImpConfig(rounds=1, rewind="none"), TRAIN, verbose=0)
    with np.load(os.path.join(run, "round_0", "next.npz")) as f:
        trained = f["final:fc1/kernel"]
    with np.load(os.path.join(run, "init_weights.npz")) as f:
        theta0 = f["w0"]
    ticket = keras.models.load_model(os.path.join(run, "round_1", "ticket", "model.keras"))
    mask = final_mask(run, 1)["fc1/kernel"]
    np.testing.assert_array_equal(ticket.get_layer("fc1").masked_kernel().numpy(), trained * mask)
    assert not np.allclose(trained * mask, theta0 * mask)


def test_freeze_init_zero_mask_keeps_earlier_zeros_in_later_rounds(tmp_path, data):
    """A pruned weight zeroed in round 1 (it moved toward zero in round 0) stays zero in round 2: round 1's
    theta_final at that position is what the layer computed with there, 0, not the stored kernel."""
    from lt_keras.ticket import load_ticket

    run = str(tmp_path)
    imp_search(run, build, data, ImpConfig(rounds=2, mask0="freeze_init_zero_mask"), TRAIN, verbose=0)
    frozen = [load_ticket(os.path.join(run, f"round_{k}", "ticket")).model.get_layer("fc1").kernel_frozen.numpy()
              for k in (1, 2)]
    pruned_in_1 = final_mask(run, 1)["fc1/kernel"] == 0
    zeroed_in_1 = pruned_in_1 & (frozen[0] == 0)
    assert zeroed_in_1.sum() > 1000
    assert np.all(frozen[1][zeroed_in_1] == 0)
    # ... and one frozen at theta_0 in round 1 did not move (theta_final there is theta_0, not the stored 0):
    # it stays frozen at theta_0 in round 2.
    still_frozen = pruned_in_1 & (frozen[0] != 0)
    assert still_frozen.sum() > 1000
    np.testing.assert_array_equal(frozen[1][still_frozen], frozen[0][still_frozen])


def test_a_layer_kind_at_rate_zero_stays_dense():
    """Frankle & Carbin prune VGG-19's and ResNet's convolutions only: rate 0 leaves a kind out."""
    from lt_keras.models import build_model

    model = build_model("conv2", (32, 32, 3), 10)
    rates = imp_module.layer_rates(model, ImpConfig(prune_rate_conv=0.2, prune_rate_fc=0.0, prune_rate_output=0.0))
    assert rates == {"conv1/kernel": 0.2, "conv2/kernel": 0.2}
    scores = {key: np.random.RandomState(0).rand(*value.shape) for key, value in Mask.ones_like(model).items()}
    mask = imp_module.prune_layerwise(scores, Mask.ones_like(model), rates)
    assert mask.layer_densities()["fc1/kernel"] == 1.0 and mask.layer_densities()["conv1/kernel"] < 0.81
    with pytest.raises(ConfigError, match="nothing would be pruned"):
        imp_module.layer_rates(model, ImpConfig(prune_rate_conv=0.0, prune_rate_fc=0.0, prune_rate_output=0.0))
    with pytest.raises(ConfigError, match=r"prune_rate_fc: pruning rate must be in \[0, 1\)"):
        ImpConfig(prune_rate_fc=1.0)

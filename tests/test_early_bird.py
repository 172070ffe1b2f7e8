"""Early-Bird: detection on hand-made masks, prunable channels, exact slimming, FLOPs, callback, binary."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lt_keras import LtKerasError, Mask, compact
from lt_keras import early_bird as eb
from lt_keras._keras import keras
from lt_keras.flops import forward_flops_per_example, training_flops_per_step
from lt_keras.models import build_model
from lt_keras.methods.early_bird import _ticket_for
from lt_keras.ticket import load_ticket
from tests.conftest import REPO, kill_binary_when


def m(bits):
    return Mask({"bn/gamma": np.array(bits, np.float32)})


def test_detector_declares_when_the_newest_mask_is_within_epsilon_of_the_full_queue():
    d = eb.EarlyBirdDetector([0.5], queue_length=3, epsilon=0.25)
    seq = [[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [1, 0, 1, 0], [1, 0, 1, 1], [1, 0, 1, 0]]
    emerged_at = [e for e, bits in enumerate(seq, start=1) if d.update(e, {0.5: m(bits)})]
    # epoch 3: queue full, distances to epochs 1, 2 are 0.5 -> no; 4: 0.5 (epoch 2 vs 4: 0.5) -> no;
    # 5: distances to epochs 3, 4 are 0.25 -> yes (<= epsilon)
    assert emerged_at == [5] and d.emerged == {0.5: 5}
    assert d.max_distance[0.5][:2] == [None, None] and d.max_distance[0.5][4] == 0.25
    # The newest mask must be close to EVERY mask in the queue: at epoch 3 it equals the oldest (distance 0)
    # but is the complement of epoch 2's (distance 1), so no ticket yet; epoch 5's queue is 3 equal masks.
    d = eb.EarlyBirdDetector([0.5], queue_length=3, epsilon=0.25)
    seq = [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [1, 0, 1, 0], [1, 0, 1, 0]]
    assert [e for e, bits in enumerate(seq, start=1) if d.update(e, {0.5: m(bits)})] == [5]
    assert d.max_distance[0.5][2:] == [1.0, 1.0, 0.0]
    with pytest.raises(LtKerasError, match="prune_ratios"):
        eb.EarlyBirdDetector([1.2])


def _authors_channel_mask(gammas, percent):
    """EarlyBird.pruning of You et al.'s main.py: y = sort(|gamma|); thre = y[int(total * percent)]; mask = gt."""
    pooled = np.concatenate([np.abs(g) for g in gammas])
    y = np.sort(pooled)
    thre = y[int(pooled.size * percent)]
    return (pooled > thre).astype(np.float32)


def _authors_eb_epochs(masks, epoch_keep=5, threshold=0.1):
    """EarlyBird.early_bird_emerge, called before each epoch's training: the loop indices where it says yes."""
    queue, dists, found = [], [1] * (epoch_keep - 1), []
    for epoch, mask in enumerate(masks):  # masks[e]: the mask after e epochs, checked before epoch e trains
        queue = (queue + [mask])[-epoch_keep:]
        if len(queue) == epoch_keep:
            for i in range(len(queue) - 1):
                dists[i] = 1 - float(np.sum(queue[-1] == queue[i])) / queue[i].size
            if all(d <= threshold for d in dists):
                found.append(epoch)
    return found


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_channel_mask_is_the_authors_on_the_same_gammas(ratio):
    """Same |gamma| (ties included), same mask: every channel at or below the sorted value at index int(T * p)."""
    model = build_model("vgg11_bn", (32, 32, 3), 10)
    _randomize_bns(model, seed=4)
    bns = eb.prunable_bns(model)
    bns[2].gamma.assign(np.round(bns[2].gamma.numpy(), 1))  # ties across the threshold
    ours = eb.channel_mask(model, ratio, bns)
    theirs = _authors_channel_mask([bn.gamma.numpy() for bn in bns], ratio)
    np.testing.assert_array_equal(np.concatenate([ours[eb.bn_key(bn)] for bn in bns]), theirs)


def test_the_initial_mask_is_in_the_queue_as_in_the_authors_loop():
    """A mask steady from initialization emerges after queue_length - 1 epochs, as the authors' check before
    each epoch finds it; without the initial mask, one epoch later."""
    rng = np.random.RandomState(0)
    seqs = {"steady": [rng.rand(40) > 0.5] * 8}
    moving = [rng.rand(40) > 0.5 for _ in range(3)]
    seqs["settles"] = moving + [moving[-1]] * 6
    for name, seq in seqs.items():
        with_init = eb.EarlyBirdDetector([0.5], queue_length=5, epsilon=0.1)
        ours = [e for e, bits in enumerate(seq) if with_init.update(e, {0.5: m(bits.astype(np.float32))})]
        assert ours[:1] == _authors_eb_epochs([b.astype(np.float32) for b in seq])[:1], name
    assert with_init.emerged == {0.5: 6}  # masks after epochs 2..6 equal
    without = eb.EarlyBirdDetector([0.5], queue_length=5, epsilon=0.1)
    steady = [e for e, bits in enumerate(seqs["steady"][1:], start=1) if without.update(e, {0.5: m(bits)})]
    assert steady[0] == 5 and _authors_eb_epochs(seqs["steady"])[0] == 4


def test_callback_puts_the_initial_mask_first_and_the_ticket_is_the_eb_epochs_mask():
    """Two ratios emerging at different epochs, masks moving on after: each ticket is cut by its own EB epoch's
    mask, not the last epoch's."""
    from lt_keras.precision import SearchPrecision

    model = build_model("vgg11_bn", (32, 32, 3), 10)
    callback = eb.EarlyBirdCallback([0.3, 0.7], queue_length=2, epsilon=0.0, stop_at_eb=False, verbose=0)
    callback.set_model(model)
    callback.on_train_begin()
    assert callback.epochs == [0]
    bns, rng = eb.prunable_bns(model), np.random.RandomState(1)

    def masks(seed):
        r = np.random.RandomState(seed)
        return Mask({eb.bn_key(bn): (r.rand(*bn.gamma.shape) < 0.6).astype(np.float32) for bn in bns})

    plan = {0.3: [1, 2, 2, 3, 4], 0.7: [5, 6, 7, 8, 8]}  # equal masks: 0.3 at epochs 2-3, 0.7 at epochs 4-5
    for epoch in range(1, 6):
        for w in model.trainable_weights:
            w.assign_add(rng.rand(*w.shape).astype(np.float32))
        weights = model.get_weights()
        for ratio in callback._add(epoch, {r: masks(plan[r][epoch - 1]) for r in plan}):
            callback.eb_weights[ratio] = weights
    assert callback.emerged == {0.3: 3, 0.7: 5} and callback.epochs == [0, 1, 2, 3, 4, 5]
    config = eb.EarlyBirdConfig(prune_ratios=(0.3, 0.7))
    for ratio, epoch in callback.emerged.items():
        _, _, used = _ticket_for(model, callback, ratio, config, SearchPrecision())
        assert used == masks(plan[ratio][epoch - 1])
        np.testing.assert_array_equal(model.get_weights()[0], callback.eb_weights[ratio][0])
    assert callback.mask_at(0.3, 3) != callback.history[0.3][-1]


@pytest.mark.parametrize("name, count", [("vgg11_bn", 8), ("resnet20", 9)])
def test_prunable_channels(name, count):
    model = build_model(name, (32, 32, 3), 10)
    bns = eb.prunable_bns(model)
    assert len(bns) == count
    if name == "resnet20":  # only block-internal channels: the others feed residual additions
        assert all(b.name.endswith("_conv1_bn") for b in bns)


def _randomize_bns(model, seed=0):
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape
            layer.gamma.assign(rng.rand(*c))
            layer.beta.assign(rng.randn(*c) * 0.1)
            layer.moving_mean.assign(rng.randn(*c) * 0.1)
            layer.moving_variance.assign(rng.rand(*c) + 0.5)


@pytest.mark.parametrize("name", ["vgg11_bn", "resnet20"])
def test_slimmed_network_equals_the_channel_masked_network(name):
    model = build_model(name, (32, 32, 3), 10)
    _randomize_bns(model)
    mask = eb.channel_mask(model, 0.5)
    total = sum(v.size for v in mask.values())
    assert sum(int(v.sum()) for v in mask.values()) == total - (int(0.5 * total) + 1)  # You et al.'s threshold
    counted = eb.channel_mask(model, 0.5, rule="count")
    assert sum(int(v.sum()) for v in counted.values()) == total - round(0.5 * total)
    slimmed = eb.slim(model, mask)
    x = np.random.RandomState(1).randn(3, 32, 32, 3).astype(np.float32)
    masked = eb.channel_masked(model, mask)(x, training=False).numpy()
    np.testing.assert_allclose(slimmed(x, training=False).numpy(), masked, atol=1e-4, rtol=1e-4)
    assert slimmed.count_params() < model.count_params()
    assert forward_flops_per_example(slimmed) < forward_flops_per_example(model)
    kept = {k: int(v.sum()) for k, v in mask.items()}
    for key, n in kept.items():
        assert slimmed.get_layer(key.split("/")[0]).gamma.shape[0] == n
    assert Mask.from_model(slimmed).density() == 1.0  # masked layers came along, with sliced all-ones masks
    compacted = compact(eb.channel_masked(model, mask))  # compaction finds the same channels from zero scales
    np.testing.assert_allclose(compacted(x, training=False).numpy(), masked, atol=1e-4, rtol=1e-4)
    masks = sum(int(np.prod(w.shape)) for w in slimmed.weights if "kernel_mask" in w.name)
    assert compacted.count_params() == slimmed.count_params() - masks


def test_slimming_before_flatten_keeps_the_right_dense_rows():
    """A 4x4x6 map flattened into a Dense layer: the rows kept are each position's kept channels (NHWC order);
    a 1x1 map (the VGG test above) cannot tell the orders apart."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="c")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="r")(x)
    x = keras.layers.MaxPooling2D(name="p")(x)
    x = keras.layers.Flatten(name="f")(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="d")(x))
    _randomize_bns(model, seed=3)
    mask = Mask({"bn/gamma": np.array([1, 0, 1, 1, 0, 1], np.float32)})
    x = np.random.RandomState(2).randn(4, 8, 8, 3).astype(np.float32)
    slimmed = eb.slim(model, mask)
    assert slimmed.get_layer("d").kernel.shape == (4 * 4 * 4, 5)
    np.testing.assert_allclose(slimmed(x, training=False).numpy(),
                               eb.channel_masked(model, mask)(x, training=False).numpy(), atol=1e-5, rtol=1e-5)


def test_flops_by_hand():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="r")(x)
    x = keras.layers.Flatten(name="f")(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="d")(x))
    conv = 2 * 8 * 8 * 3 * 3 * 3 * 4 + 8 * 8 * 4
    bn, relu, dense = 4 * 256, 256, 2 * 256 * 5 + 5
    assert forward_flops_per_example(model) == conv + bn + relu + dense
    assert training_flops_per_step(model, 10) == 3 * 10 * (conv + bn + relu + dense)


def test_callback_stops_a_users_fit_when_every_ratio_emerged():
    keras.utils.set_random_seed(0)
    model = build_model("vgg11_bn", (32, 32, 3), 10)
    eb.add_bn_l1(model, 1e-4)
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.RandomState(0).randn(16, 32, 32, 3).astype(np.float32)
    y = np.arange(16) % 10
    callback = eb.EarlyBirdCallback([0.3, 0.5], queue_length=2, epsilon=0.5, verbose=0, initial_mask=False)
    history = model.fit(x, y, epochs=10, batch_size=8, verbose=0, callbacks=[callback])
    assert len(history.history["loss"]) == 2 and callback.emerged == {0.3: 2, 0.5: 2}
    assert "eb_distance_0.5" in history.history
    assert callback.distance_matrix(0.5).shape == (2, 2) and set(callback.eb_weights) == {0.3, 0.5}


def test_weight_granularity_masks():
    model = build_model("lenet_300_100", (28, 28, 1), 10)
    mask = eb.compute_mask(model, 0.7, "weight")
    assert abs(mask.density() - 0.3) < 1e-5
    with pytest.raises(LtKerasError, match="no prunable BatchNorm"):
        eb.channel_mask(model, 0.5)


def run(module, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def test_binary_finds_slims_retrains_and_counts_flops(tmp_path):
    out = tmp_path / "eb"
    data = ["--max_train_examples=200", "--validation_size=100"]  # the embedded digits: runs anywhere
    args = [f"--output_dir={out}", "--model=resnet20", "--epochs=3", "--batch_size=50", "--optimizer=sgd",
            "--learning_rate=0.05", "--queue_length=2", "--epsilon=0.5", "--prune_ratios=0.5", "--nojit_compile",
            "--noinitial_mask", *data]
    # Killed once epoch 1 is checkpointed: the resumed search must still see epoch 1's mask in its FIFO (a
    # queue of 2), or its ticket would emerge at epoch 3, not 2.
    kill_binary_when("lt_keras.bin.early_bird", args, lambda: (out / "backup_search" / "chief" / "checkpoint").exists())
    result = run("lt_keras.bin.early_bird", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Early-Bird detector restored at epoch" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["ratios"]["0.5"]
    assert entry["emerged"] and entry["eb_epoch"] == 2 and entry["retrain_epochs"] == 1
    assert entry["flops_ratio"] > 1 and entry["eb_total_flops"] < entry["lt_total_flops"]
    assert (out / "eb_distances.png").exists()
    ticket = load_ticket(out / "eb_p0.5" / "ticket")
    assert ticket.info.settings["slimmed"]
    assert ticket.model.count_params() < build_model("resnet20", (28, 28, 1), 10).count_params()
    exported = run("lt_keras.bin.export", f"--ticket_dir={out / 'eb_p0.5' / 'ticket'}",
                   f"--saved_model_dir={tmp_path / 'export'}", *data)
    assert exported.returncode == 0, exported.stderr[-3000:]
    report = json.loads((tmp_path / "export.report.json").read_text())
    assert report["max_abs_diff_saved_model"] <= 1e-5 and report["method"] == "early_bird"
    assert not list(out.rglob("backup_*"))  # the phases' checkpoints go once the run is complete
    retrained = run("lt_keras.bin.retrain", f"--ticket_dir={out / 'eb_p0.5' / 'ticket'}",
                    f"--output_dir={tmp_path / 'r'}", "--train_steps=4", "--eval_every=2", "--nojit_compile", *data)
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    retrain_summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert retrain_summary["method"] == "early_bird" and retrain_summary["total_steps"] == 4
    assert retrain_summary["density"] == ticket.mask.density() and retrain_summary["pruned_weights_nonzero"] == 0
    assert load_ticket(tmp_path / "r" / "ticket").model.count_params() == ticket.model.count_params()


def test_binary_bad_flags(tmp_path):
    for extra, message in ((["--prune_ratios=0.5,1.5", "--epochs=1"], "--prune_ratios"),
                           (["--train_steps=10"], "--epochs"),
                           (["--epochs=1", "--retrain_ratios=0.9"], "--retrain_ratios"),
                           (["--epochs=2", "--lr_decay_steps=1ep"], "--lr_decay_steps: decay points need"),
                           (["--epochs=2", "--lr_schedule=step", "--lr_decay_steps=1e"],
                            "--lr_decay_steps: '1e' is not a number of iterations or epochs")):
        result = run("lt_keras.bin.early_bird", f"--output_dir={tmp_path / 'x'}", *extra)
        assert result.returncode != 0, result.stderr[-800:]
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-800:]


def test_int8_search_gives_an_fp32_slimmed_ticket(tmp_path):
    out = tmp_path / "eb8"
    result = run("lt_keras.bin.early_bird", f"--output_dir={out}", "--model=resnet20", "--epochs=3", "--batch_size=50",
                 "--optimizer=sgd", "--learning_rate=0.05", "--queue_length=2", "--epsilon=0.5", "--prune_ratios=0.5",
                 "--nojit_compile", "--precision=int8", "--max_train_examples=200", "--validation_size=100")
    assert result.returncode == 0, result.stderr[-3000:]
    ticket = load_ticket(out / "eb_p0.5" / "ticket")
    assert ticket.info.found_at_precision == "int8" and ticket.info.settings["slimmed"]
    assert not any(type(l).__name__.startswith("Quantize") for l in ticket.model.layers)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["search_precision"]["precision"] == "int8" and summary["ratios"]["0.5"]["emerged"]


def test_int8_twin_detector_reads_the_trained_gammas():
    """The detector and the L1 penalty must see the twin's own BN scales, which training moves."""
    from lt_keras.precision import SearchPrecision

    keras.utils.set_random_seed(0)
    fp32 = build_model("vgg11_bn_quarter", (32, 32, 3), 10)
    twin = SearchPrecision("int8").to_search(fp32)
    weights_before = len(twin.weights)
    bns = eb.prunable_bns(twin)
    assert len(twin.weights) == weights_before  # reading the graph through the wrappers adds nothing
    assert [bn.name for bn in bns] == [bn.name for bn in eb.prunable_bns(fp32)] and len(bns) == 8
    assert all(any(bn.gamma is w for w in twin.trainable_weights) for bn in bns)
    eb.add_bn_l1(twin, 1e-3)
    before = [bn.gamma.numpy().copy() for bn in bns]
    twin.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    twin.fit(rng.random((64, 32, 32, 3), np.float32), rng.integers(0, 10, 64), batch_size=32, epochs=1, verbose=0)
    assert all(np.abs(bn.gamma.numpy() - b).max() > 0 for bn, b in zip(bns, before))


def test_the_initial_mask_is_saved_and_restored_with_the_fifo(tmp_path):
    """A search resumed from its state folder replays the mask at initialization first, as it was."""
    model = build_model("vgg11_bn", (32, 32, 3), 10)
    _randomize_bns(model, seed=2)
    first = eb.EarlyBirdCallback([0.5], queue_length=3, verbose=0, state_dir=str(tmp_path))
    first.set_model(model)
    first.on_train_begin()
    first.on_epoch_end(0)
    again = eb.EarlyBirdCallback([0.5], queue_length=3, verbose=0, state_dir=str(tmp_path)).restore(1)
    assert again.epochs == first.epochs == [0, 1]
    assert again.history[0.5] == first.history[0.5]
    again.set_model(model)
    again.on_train_begin()  # a resumed fit: the initial mask is not added twice
    assert again.epochs == [0, 1]


def test_killed_search_resumes_with_its_fifo_and_a_stopped_search_stays_stopped(tmp_path):
    """The detector's masks and EB weights are checkpointed with the epoch: a search killed mid-way emerges at
    the epoch an uninterrupted one does, with the same weights; re-running a finished search trains nothing."""
    from lt_keras.data import DataConfig
    from lt_keras.training import TrainConfig, fit, saved_evaluations

    data = DataConfig(max_train_examples=200, validation_size=100).load()
    cfg = TrainConfig(epochs=6, batch_size=50, seed=0, jit_compile=False, optimizer="sgd", learning_rate=0.05)

    def search(state_dir=None, backup=None, extra=()):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = eb.add_bn_l1(build_model("resnet20", (28, 28, 1), 10), 1e-4)
        callback = eb.EarlyBirdCallback([0.5], queue_length=3, epsilon=0.5, verbose=0, state_dir=state_dir,
                                        initial_mask=False)
        if backup:
            callback.restore(saved_evaluations(backup))
        result = fit(model, data, cfg, callbacks=[callback, *extra], verbose=0, backup_dir=backup)
        return model, callback, result

    class Die(keras.callbacks.Callback):  # after the detector saved epoch 2, before that epoch's checkpoint
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    whole_model, whole, whole_result = search()
    assert whole.emerged == {0.5: 3} and len(whole_result.history) == 3  # stopped at its Early-Bird epoch
    backup, state = str(tmp_path / "backup"), str(tmp_path / "backup" / "eb")
    with pytest.raises(KeyboardInterrupt):
        search(state, backup, [Die()])
    assert saved_evaluations(backup) == 1 and len(os.listdir(state)) == 4  # epoch 2's masks are ahead of it
    model, resumed, result = search(state, backup)
    assert resumed.emerged == whole.emerged
    assert [m == w for m, w in zip(resumed.history[0.5], whole.history[0.5])] == [True] * 3
    for a, b in zip(resumed.eb_weights[0.5], whole.eb_weights[0.5]):
        np.testing.assert_array_equal(a, b)
    assert [r["test_accuracy"] for r in result.history] == [r["test_accuracy"] for r in whole_result.history]
    batches = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))
    again_model, again, again_result = search(state, backup, [counter])  # as after a kill past the stop
    assert batches == [] and again.emerged == whole.emerged and again_result.history == result.history
    for a, b in zip(again_model.get_weights(), whole_model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_search_is_one_library_call(tmp_path):
    """lt-early-bird from Python with typed configs, no flags: the method writes what the binary writes."""
    from lt_keras.data import DataConfig
    from lt_keras.methods import EarlyBird, RunSpec
    from lt_keras.training import TrainConfig

    data = DataConfig(max_train_examples=200, validation_size=100)
    config = eb.EarlyBirdConfig(prune_ratios=(0.5,), queue_length=2, epsilon=0.5, retrain_ratios=(),
                                initial_mask=False)
    train = TrainConfig(epochs=2, batch_size=50, optimizer="sgd", learning_rate=0.05, jit_compile=False)
    summary = EarlyBird(config).run(str(tmp_path), RunSpec("resnet20", data, train))
    assert summary["ratios"]["0.5"]["eb_epoch"] == 2 and "retrain_test_accuracy" not in summary["ratios"]["0.5"]
    assert summary["search_precision"]["precision"] == "fp32" and summary["model"] == "resnet20"
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert load_ticket(tmp_path / "eb_p0.5" / "ticket").info.found_at_precision == "fp32"
    assert not list(tmp_path.rglob("backup_*"))
    assert "--prune_ratios=0.5" in (tmp_path / "flags.txt").read_text().splitlines()
    with pytest.raises(LtKerasError, match="epochs: "):
        EarlyBird(config).run(str(tmp_path / "steps"), RunSpec("resnet20", data, TrainConfig(train_steps=4)))
    assert not (tmp_path / "steps").exists()  # refused before the run directory is made
    with pytest.raises(LtKerasError, match="retrain_ratios: "):
        eb.EarlyBirdConfig(prune_ratios=(0.5,), retrain_ratios=(0.3,))


def test_early_bird_detects_the_same_with_one_or_many_steps_per_call():
    """The detector runs at epoch ends, which end a call whatever the count: same EB epoch, masks and weights."""
    from lt_keras.data import DataConfig
    from lt_keras.training import TrainConfig, fit

    data = DataConfig(max_train_examples=600, validation_size=100).load()
    runs = {}
    for per_call in ("1", "auto"):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = eb.add_bn_l1(build_model("resnet20", (28, 28, 1), 10), 1e-4)
        callback = eb.EarlyBirdCallback([0.5], queue_length=3, epsilon=0.5, verbose=0)
        fit(model, data, TrainConfig(epochs=5, batch_size=50, seed=0, jit_compile=False, optimizer="sgd",
                                     learning_rate=0.05, steps_per_execution=per_call), callbacks=[callback],
            verbose=0)
        assert (int(model._steps_per_execution.numpy()) > 1) == (per_call == "auto")
        runs[per_call] = callback
    one, auto = runs["1"], runs["auto"]
    assert one.emerged == auto.emerged and one.emerged
    assert [a == b for a, b in zip(one.history[0.5], auto.history[0.5])] == [True] * len(one.history[0.5])
    for a, b in zip(one.eb_weights[0.5], auto.eb_weights[0.5]):
        np.testing.assert_array_equal(a, b)

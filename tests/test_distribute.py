"""Every search on two replicas (logical CPU devices) computes what it computes on one device.

The mirrored run takes the same global batch and data order as the
single-device run; the replicas split each batch and sum their gradients, so
the two runs differ only in the order floating-point sums are taken. The
checks: IMP's masks are identical at every round (weights within 1e-4);
Early-Bird finds the same EB epoch and channel masks (weights within 7e-4); a supermask draws the
same masks at every step (Bernoulli: every replica draws the single-device
draw; top-k: the same k largest scores), with scores within 1e-4. One fresh
process runs every comparison (logical devices are set before TensorFlow
starts).
"""
import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, start_workers, wait_workers

SCRIPT = r'''
import json, sys
import numpy as np
from lt_keras.distribute import Devices
Devices("mirrored", cpu_devices=2).make()  # first: logical devices exist only if split before TensorFlow starts
from lt_keras import methods, supermask
from lt_keras._keras import keras, tf
from lt_keras.bernoulli import sampled_mask
from lt_keras.data import DataConfig
from lt_keras.early_bird import EarlyBirdConfig, prunable_bns
from lt_keras.imp import ImpConfig
from lt_keras.layers import masked_layers
from lt_keras.mask import Mask
from lt_keras.methods import RunSpec
from lt_keras.models import build_model, register
from lt_keras.precision import SearchPrecision
from lt_keras.seeds import derive_seed
from lt_keras.ticket import load_ticket
from lt_keras.training import TrainConfig, fit

out, report = sys.argv[1], {}
data_cfg = DataConfig(max_train_examples=240)
DEVICES = {"one": Devices(), "two": Devices("mirrored", cpu_devices=2)}


def both(method, model, train, name):
    return {d: method.run(f"{out}/{name}_{d}", RunSpec(model, data_cfg, train, devices=devices))
            for d, devices in DEVICES.items()}


def max_diff(a, b):
    a, b = [np.asarray(x) for x in a], [np.asarray(y) for y in b]
    if [x.shape for x in a] != [y.shape for y in b]:
        return float("inf")
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


# IMP: two rounds with late rewinding (the step-3 snapshot), a random-reinit control, Adam.
train = TrainConfig(train_steps=8, eval_every=4, batch_size=60, seed=3, jit_compile=False)
runs = both(methods.Imp(ImpConfig(rounds=2, rewind="step:3", controls=("random_reinit",))), "lenet_300_100", train,
            "imp")
report["imp"] = {
    "replicas": [runs[d]["replicas"] for d in DEVICES],
    "masks_equal": [Mask.load(f"{out}/imp_one/round_{k}/mask.npz") == Mask.load(f"{out}/imp_two/round_{k}/mask.npz")
                    for k in range(3)],
    "weights_diff": max(max_diff(load_ticket(f"{out}/imp_one/round_{k}/ticket").model.get_weights(),
                                 load_ticket(f"{out}/imp_two/round_{k}/ticket").model.get_weights()) for k in range(3)),
    "accuracy": [[r["final_test_accuracy"] for r in runs[d]["rounds"]] for d in DEVICES],
}
# The 8-bit search on two replicas: each replica quantizes its own gradients before the sum (as 8-bit training
# on several devices does), so it is not the single-device run; it must run, and keep one mask.
int8 = methods.Imp(ImpConfig(rounds=1)).run(f"{out}/imp_int8_two", RunSpec(
    "lenet_300_100", data_cfg, train, precision=SearchPrecision("int8"), devices=DEVICES["two"]))
report["imp"]["int8"] = {"replicas": int8["replicas"], "precision": int8["search_precision"],
                         "accuracy": int8["rounds"][-1]["final_test_accuracy"],
                         "density": Mask.load(f"{out}/imp_int8_two/round_1/mask.npz").density()}


@register("vgg_spread_bn_test")
def vgg_spread_bn(input_shape, num_classes, masked=True):
    """vgg11_bn_quarter with BN scales spread over [0.2, 1]: the channel ranking is decided by training, not by
    float rounding among scales that all start at 0.5."""
    model = build_model("vgg11_bn_quarter", input_shape, num_classes, masked=masked)
    rng = np.random.RandomState(0)
    for bn in prunable_bns(model):
        bn.gamma.assign(rng.uniform(0.2, 1.0, bn.gamma.shape).astype(np.float32))
    return model


# Early-Bird: BN-L1 search, synchronized BatchNorm on two replicas, slimming and retraining of one ticket.
train = TrainConfig(epochs=4, batch_size=120, seed=3, optimizer="sgd", learning_rate=0.01, jit_compile=False)
config = EarlyBirdConfig(prune_ratios=(0.3, 0.5), queue_length=2, epsilon=0.02, retrain_ratios=(0.3,),
                         initial_mask=False)
runs = both(methods.EarlyBird(config), "vgg_spread_bn_test", train, "eb")
with DEVICES["two"].make().scope():
    synchronized = [bn.synchronized for bn in prunable_bns(build_model("vgg11_bn_quarter", (28, 28, 1), 10))]
report["early_bird"] = {
    "replicas": [runs[d]["replicas"] for d in DEVICES],
    "synchronized_bn": synchronized and all(synchronized),
    "eb_epochs": [{r: v.get("eb_epoch") for r, v in runs[d]["ratios"].items()} for d in DEVICES],
    "masks_equal": [Mask.load(f"{out}/eb_one/eb_p{r}/eb_mask.npz") == Mask.load(f"{out}/eb_two/eb_p{r}/eb_mask.npz")
                    for r in ("0.3", "0.5") if runs["one"]["ratios"][r]["emerged"]],
    "weights_diff": max(max_diff(load_ticket(f"{out}/eb_one/eb_p{r}/ticket").model.trainable_weights,
                                 load_ticket(f"{out}/eb_two/eb_p{r}/ticket").model.trainable_weights)
                        for r in ("0.3", "0.5") if runs["one"]["ratios"][r]["emerged"]),
}


class StepMasks(keras.callbacks.Callback):
    """The mask each training step uses: top-k of the scores, or the Bernoulli draw keyed by the step's count."""

    def __init__(self):
        super().__init__()
        self.masks, self.scores = [], []

    def on_train_batch_begin(self, batch, logs=None):
        step = []
        for layer in masked_layers(self.model):
            if layer.mask_mode == "topk":
                step.append(layer.hard_mask().numpy())
            else:
                word = derive_seed(layer.sample_seed, 0, f"bernoulli/{layer.name}")
                key = tf.constant([word, int(layer.sample_count.numpy()) + 1], tf.int32)
                step.append(sampled_mask(layer.kernel_scores, key, layer.kernel_mask).numpy())
        self.masks.append(step)

    def on_train_end(self, logs=None):
        self.scores = [layer.kernel_scores.numpy() for layer in masked_layers(self.model)]


data = data_cfg.load()
for estimator in ("bernoulli", "topk"):
    train = TrainConfig(train_steps=8, eval_every=4, batch_size=60, seed=3, optimizer="sgd", learning_rate=20.0,
                        steps_per_execution="1", jit_compile=False)
    seen, draws_agree = {}, True
    for d, devices in DEVICES.items():
        strategy = devices.make()
        with strategy.scope():
            keras.utils.set_random_seed(3)
            model = supermask.to_supermask(build_model("lenet_300_100", (28, 28, 1), 10), estimator,
                                           keep_fraction=0.3, seed=3)
            if d == "two" and estimator == "bernoulli":  # each replica's own draw, in replica context
                layer = masked_layers(model)[0]
                per_replica = strategy.experimental_local_results(strategy.run(lambda: layer.mask_source.learned(True)))
                draws_agree = bool(np.array_equal(per_replica[0].numpy(), per_replica[1].numpy()))
                layer.sample_count.assign(0)
            recorder = StepMasks()
            fit(model, data, train, callbacks=[recorder], verbose=0)
        seen[d] = recorder
    report[estimator] = {
        "steps": len(seen["one"].masks),
        "masks_equal_every_step": all(all(np.array_equal(a, b) for a, b in zip(x, y))
                                      for x, y in zip(seen["one"].masks, seen["two"].masks)),
        "masks_change": any(not np.array_equal(seen["one"].masks[0][0], m[0]) for m in seen["one"].masks[1:]),
        "scores_diff": max_diff(seen["one"].scores, seen["two"].scores),
        "replicas_draw_alike": draws_agree,
    }
    runs = both(methods.Supermask(methods.SupermaskConfig(supermask.LearnConfig(estimator=estimator))),
                "lenet_300_100", train, f"supermask_{estimator}")
    report[estimator]["ticket_masks_equal"] = (load_ticket(f"{out}/supermask_{estimator}_one/ticket").mask
                                               == load_ticket(f"{out}/supermask_{estimator}_two/ticket").mask)
    report[estimator]["replicas"] = [runs[d]["replicas"] for d in DEVICES]
print("REPORT" + json.dumps(report))
'''


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("distribute")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], cwd=REPO, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout[result.stdout.rindex("REPORT") + 6:].splitlines()[0])


def test_imp_on_two_replicas_finds_the_single_device_masks(report):
    imp = report["imp"]
    assert imp["replicas"] == [1, 2]
    assert imp["masks_equal"] == [True, True, True]
    assert imp["weights_diff"] < 1e-4
    assert imp["accuracy"][0] == pytest.approx(imp["accuracy"][1], abs=0.01)
    int8 = imp["int8"]
    assert int8["replicas"] == 2 and int8["precision"]["precision"] == "int8" and 0.3 < int8["accuracy"] <= 1
    assert int8["density"] == pytest.approx(0.8, abs=0.02)


def test_early_bird_on_two_replicas_finds_the_same_epoch_and_channels(report):
    eb = report["early_bird"]
    assert eb["replicas"] == [1, 2]
    assert eb["eb_epochs"][0] == eb["eb_epochs"][1] and all(e and e >= 2 for e in eb["eb_epochs"][0].values())
    assert eb["masks_equal"] and all(eb["masks_equal"])
    assert eb["synchronized_bn"]
    # Measured 2.3e-4 (BatchNorm's scale gradients on the digits' blank borders cancel, so float rounding grows
    # faster than in IMP); with per-replica BatchNorm statistics, 1.3e-3.
    assert eb["weights_diff"] < 7e-4


@pytest.mark.parametrize("estimator", ["bernoulli", "topk"])
def test_supermask_on_two_replicas_uses_the_single_device_mask_at_every_step(report, estimator):
    sm = report[estimator]
    assert sm["steps"] == 8 and sm["masks_change"]  # the masks move, so equality at every step means something
    assert sm["masks_equal_every_step"] and sm["replicas_draw_alike"]
    assert sm["scores_diff"] < 1e-4
    assert sm["replicas"] == [1, 2] and sm["ticket_masks_equal"]


def test_multi_worker_imp_on_two_loopback_workers_resumes_after_a_kill(tmp_path):
    """Two workers search one IMP run; ``kill -9`` of one mid-round, then both restarted, resumes from the
    rounds already written; both end with the same rounds (masks, accuracies); only the chief writes files."""
    out, scratch = tmp_path / "imp", tmp_path / "scratch"
    scratch.mkdir()
    args = [f"--output_dir={out}", "--rounds=2", "--train_steps=120", "--eval_every=20", "--nojit_compile",
            "--max_train_examples=600", "--validation_size=200", "--seed=4"]
    procs = start_workers("lt_keras.bin.imp", args, env={"TMPDIR": str(scratch)})  # TMPDIR: the non-chief's copy
    try:
        deadline = time.time() + 300
        while not (out / "round_1.backup").exists():  # round 0 written, round 1 training
            assert time.time() < deadline and all(p.poll() is None for p in procs), "no round 1 within 300 s"
            time.sleep(0.5)
        procs[1].send_signal(signal.SIGKILL)
        procs[0].send_signal(signal.SIGKILL)  # its peer is gone: the job is restarted as a whole
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    round_0 = (out / "round_0" / "metrics.json").read_text()
    killed = {p.name for p in scratch.iterdir() if p.name.startswith("lt-imp_worker_")}  # kill -9 cleans nothing
    assert not (out / "summary.json").exists()
    outputs = wait_workers(start_workers("lt_keras.bin.imp", args, env={"TMPDIR": str(scratch)}), timeout=400)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "multi_worker" and summary["replicas"] == 2 and len(summary["rounds"]) == 3
    assert (out / "round_0" / "metrics.json").read_text() == round_0  # resumed: round 0 was not trained again
    tables = [stdout[stdout.rindex("round  weights"): stdout.rindex("Run directory")] for stdout, _ in outputs]
    assert tables[0] == tables[1]  # the same densities and accuracies on both workers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imp", "scratch"]
    assert {p.name for p in scratch.iterdir() if p.name.startswith("lt-imp_worker_")} == killed  # copy removed
    assert any(p.name.startswith("__autograph") for p in scratch.iterdir())  # TMPDIR did reach the workers

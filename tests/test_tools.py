"""The benchmark and reproduction tools run from a fresh clone: their --quick modes, end to end.

These check structure and that every figure was measured, never the values.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


def run_tool(*args, timeout=1200):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def test_bench_quick_measures_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = run_tool("tools/bench.py", "--quick", f"--json_out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    ratios = {(r["figure"].split(" xla=")[0], r["ratio"]) for r in report["rows"]}
    expected = {("masking lenet_300_100", "masked/plain"), ("masking lenet_300_100", "masked/tfmot"),
                ("xla retrain lenet_300_100", "masked xla/no-xla"), ("xla retrain conv4", "masked xla/no-xla"),
                ("int8 search lenet_300_100", "int8/masked"), ("supermask lenet_300_100", "supermask/plain"),
                ("supermask lenet_300_100", "topk/plain"),
                ("bernoulli mask draw lenet_300_100", "fused/philox"),
                ("topk select lenet_300_100", "radix/top_k"),
                ("eb inference vgg11_bn p=0.5", "slimmed/dense"), ("mask_model resnet50", "seconds"),
                ("search step lenet_300_100", "mirrored 2 / one (img/s)"), ("streaming input 224x224", "images/s"),
                ("export lenet_300_100 unstructured_3.6", "tflite_gzip_bytes / dense"),
                ("export lenet_300_100 block1x4_10", "tflite_ms@1 / dense"),
                ("compact vgg11_bn_quarter eb 0.5", "parameters compacted/ticket"),
                ("mask_model coverage mobilenet_v2", "masked/kernel weights"),
                ("mask_model coverage text_encoder", "masked/kernel weights")}
    assert expected <= ratios
    assert all(r["value"] > 0 and (r["target"] is None or r["met"] in (True, False)) for r in report["rows"])
    assert "median ratio" in result.stdout


def test_reproduce_quick_writes_the_results_report(tmp_path):
    results = tmp_path / "RESULTS.md"
    result = run_tool("tools/reproduce.py", "--quick", f"--output_root={tmp_path / 'runs'}", f"--results={results}",
                      timeout=2400)  # twelve steps of processes; a guard against hangs, not a timing
    assert result.returncode == 0, result.stderr[-3000:]
    text = results.read_text()
    sections = re.findall(r"^## (.+)$", text, re.M)
    assert sections == ["IMP lottery tickets, LeNet-300-100 on MNIST",
                        "Supermasks and untrained masks, LeNet-300-100 on MNIST",
                        "IMP found in 8 bits, retrained at fp32",
                        "Supermask over frozen Conv-4 weights, CIFAR-10 subset",
                        "Early-Bird tickets, VGG-11-BN on the CIFAR-10 subset",
                        "Early-Bird search in 8 bits, VGG-11-BN on the CIFAR-10 subset",
                        "Early-Bird tickets, ResNet-20 on the CIFAR-10 subset",
                        "Zeros, signs and criteria (Zhou et al.), LeNet-300-100 on MNIST",
                        "Early-Bird tickets, VGG-11-BN on the full CIFAR-10 (CPU scale)",
                        "Zeros and signs (Zhou et al.), Conv-2 on the full CIFAR-10 (CPU scale)",
                        "Training recipes: augmentation, the Early-Bird schedule, warmup (full CIFAR-10, CPU scale)",
                        "Learned supermasks, Conv-4 and Conv-6 on the full CIFAR-10"]
    assert text.count("Command: `bash tools/env.sh python") == 12 and "Versions: " in text and "seed 0" in text
    for image in re.findall(r"\]\((results/[^)]+)\)", text):
        assert (tmp_path / image).exists(), image
    assert len(re.findall(r"\]\(results/", text)) >= 4
    assert "| 0.5 |" in text or "did not emerge" in text  # the Early-Bird table has its rows
    assert "EB epoch, int8 search" in text and "| sampled (mean of 2) |" in text
    # The Zhou tables: quick mode trains the one-shot chain to 7.0% only; the other rows wait for theirs.
    zhou = text.split("## Zeros, signs and criteria")[1].split("## Early-Bird tickets, VGG-11-BN on the full")[0]
    assert "**Mask-0 actions (pruned weights)**" in zhou and "identical in all 1 chains" in zhou
    one_shot = next(line for line in zhou.splitlines() if line.startswith("| 7.0% |") or line.startswith("| 6."))
    assert one_shot.split("|")[3].strip() not in ("", "-")
    # Conv-2: the signed_reinit chain starts from the lottery-ticket chain's dense round and prunes once.
    conv2 = text.split("## Zeros and signs (Zhou et al.), Conv-2")[1]
    assert "identical in all 2 chains (1 of them copies" in conv2 and "Every chain prunes once" in conv2
    signed = next(line for line in conv2.splitlines() if line.startswith("| signed_reinit |"))
    assert [cell.strip() for cell in signed.split("|")[2:4]].count("-") == 0
    # Recipes: both arms of each comparison trained and measured, and the four checks judged.
    recipes = text.split("## Training recipes")[1]
    for row in ("| crop_flip |", "| none |", "| 40,60 (late) |", "| 0,50 (early) |", "| 0.1, no warmup |",
                "| 0.03, warmup |"):
        line = next(line for line in recipes.splitlines() if line.startswith(row))
        assert re.search(r"\| \d+\.\d\d \|", line), line
    assert len(re.findall(r"\| (yes|\*\*MISSED\*\*) \|$", recipes.split("## ")[0], re.M)) == 4
    supermasks = text.split("## Learned supermasks")[1]
    assert re.search(r"^\| conv4_glorot \| finished \| 1 of 1 \| \d+ \|", supermasks, re.M)
    assert re.search(r"^\| learned supermask Conv-4 >= 65% \| \d+\.\d\d% ", supermasks, re.M)
    # --report_only trains nothing and writes the same sections from the run directories.
    result = run_tool("tools/reproduce.py", "--quick", "--report_only", "--steps=imp,supermask_full",
                      f"--output_root={tmp_path / 'runs'}", f"--results={results}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reproduce_imp_mnist.py" not in result.stdout and "--report_only" in result.stdout
    assert results.read_text().split("\n## ")[1:] == text.split("\n## ")[1:]


def test_reproduce_recipes_refuses_bad_parts_and_missing_data():
    result = run_tool("tools/reproduce_recipes.py", "--parts=augment,bogus", timeout=120)
    assert result.returncode != 0 and "--parts: ['bogus']" in result.stderr
    result = run_tool("tools/reproduce_recipes.py", "--parts=warmup", "--warmup_density=1.5", timeout=120)
    assert result.returncode != 0 and "--warmup_density must be in (0, 1)" in result.stderr
    result = run_tool("tools/reproduce_recipes.py", timeout=120)
    assert result.returncode != 0 and "give --data_dir" in result.stderr


def test_reproduce_report_only_refuses_steps_that_never_ran(tmp_path):
    results = tmp_path / "RESULTS.md"
    result = run_tool("tools/reproduce.py", "--quick", "--report_only", "--steps=imp,recipes",
                      f"--output_root={tmp_path / 'runs'}", f"--results={results}", timeout=120)
    assert result.returncode != 0 and "no results yet for imp, recipes" in result.stderr
    assert not results.exists() and not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_reproduce_supermask_cifar_reports_finished_and_unfinished_runs(tmp_path):
    out = tmp_path / "sm"
    args = ["tools/reproduce_supermask_cifar.py", "--data_flags=--dataset=mnist_5k,--validation_size=500,"
            "--max_train_examples=600", "--runs=conv2_signed_constant,conv4_edgepopup",
            "--run_flags=--epochs=2,--batch_size=100,--eval_samples=2", f"--output_dir={out}"]
    result = run_tool(*args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["run"]: r for r in json.loads((out / "reproduction.json").read_text())["runs"]}
    assert [r["status"] for r in rows.values()] == ["finished", "finished"]
    bernoulli = rows["conv2_signed_constant"]
    assert bernoulli["iterations"] == 12 and 0 < bernoulli["test_accuracy"] <= 1
    assert bernoulli["paper"] == 0.66 and rows["conv4_edgepopup"]["paper"] is None
    config = json.loads((out / "conv2_signed_constant" / "config.json").read_text())["supermask"]
    assert config["weight_init"] == "signed_constant" and config["dynamic_weight_rescaling"]  # the paper's recipe
    text = (out / "reproduction.md").read_text()
    assert "| conv2_signed_constant | finished | 2 of 2 | 12 |" in text
    assert "Not measured yet: Conv-4 (target >= 65%), Conv-6 (target >= 70%)." in text  # top-k is no Bernoulli
    # A run still training is reported from its TensorBoard log: its last epoch, its iterations so far.
    (out / "conv2_signed_constant" / "summary.json").unlink()
    # The validation log may already hold the next interval's evaluation before the epoch's test accuracy lands.
    import tensorflow as tf

    with tf.summary.create_file_writer(str(out / "conv2_signed_constant" / "tensorboard" / "validation")).as_default():
        tf.summary.scalar("evaluation_accuracy_vs_iterations", 0.5, step=18)
    result = run_tool(*args, "--report_only", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    unfinished = json.loads((out / "reproduction.json").read_text())["runs"][0]
    assert unfinished["status"] == "unfinished" and unfinished["epochs_done"] == 2
    assert unfinished["iterations"] == 12 and 0 < unfinished["test_accuracy"] <= 1
    assert unfinished["wall_time_s"] > 0
    # --record keeps each run's furthest state: a run whose folder is behind it, or gone, is reported from it.
    record = tmp_path / "record.json"
    result = run_tool(*args, "--report_only", f"--record={record}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads(record.read_text())
    assert saved["conv2_signed_constant"]["epochs_done"] == 2 and saved["conv4_edgepopup"]["status"] == "finished"
    saved["conv2_signed_constant"].update(status="finished", test_accuracy=0.42)  # further than its folder
    record.write_text(json.dumps(saved))
    shutil.rmtree(out / "conv4_edgepopup")
    result = run_tool(*args, "--report_only", f"--record={record}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "reproduction.json").read_text())["runs"] == [
        saved["conv2_signed_constant"], saved["conv4_edgepopup"]]
    assert json.loads(record.read_text()) == saved  # nothing forgotten
    text = (out / "reproduction.md").read_text()
    assert f"| conv4_edgepopup | finished, recorded {saved['conv4_edgepopup']['recorded']} (run folder" in text
    assert "| 42.00 | 66.00 |" in text
    result = run_tool(*args[:-3], "--runs=conv2_glorot", "--report_only", f"--output_dir={out}", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    glorot = json.loads((out / "reproduction.json").read_text())["runs"][0]
    assert glorot["status"] == "not started" and glorot["paper"] is None  # the paper's number is not Glorot's
    result = run_tool("tools/reproduce_supermask_cifar.py", "--runs=conv4_bogus", timeout=120)
    assert result.returncode != 0 and "--runs: ['conv4_bogus']" in result.stderr


def test_a_report_of_some_steps_keeps_the_other_sections():
    sys.path.insert(0, os.path.join(REPO, "tools"))
    try:
        from repro_util import merge_report
    finally:
        sys.path.pop(0)
    old = "# head\n\nintro\n\n## A\n\nold a\n\n## B\n\nold b\n\n## Speed\n\nfast\n"
    merged = merge_report(old, ["## B\n\nnew b\n", "## C\n\nnew c\n"])
    assert merged == ["## A\n\nold a\n", "## B\n\nnew b\n", "## Speed\n\nfast\n", "## C\n\nnew c\n"]
    assert "\n".join(merged) == "## A\n\nold a\n\n## B\n\nnew b\n\n## Speed\n\nfast\n\n## C\n\nnew c\n"
    assert merge_report("", ["## C\n\nc\n"]) == ["## C\n\nc\n"]


def test_shards_split_the_units_without_overlap(monkeypatch):
    sys.path.insert(0, os.path.join(REPO, "tools"))
    try:
        import repro_util
    finally:
        sys.path.pop(0)
    units = [(seed, chain) for seed in range(3) for chain in "abcde"]
    monkeypatch.setattr(repro_util.flags, "FLAGS", type("F", (), {"shard": None})())
    assert repro_util.shard_of("t", units) == units
    parts = []
    for i in range(4):
        repro_util.flags.FLAGS.shard = f"{i}/4"
        parts.append(repro_util.shard_of("t", units))
    assert sorted(u for p in parts for u in p) == sorted(units) and max(map(len, parts)) - min(map(len, parts)) <= 1
    for bad in ("4/4", "1", "a/2", "-1/2"):
        repro_util.flags.FLAGS.shard = bad
        with pytest.raises(SystemExit, match="--shard"):
            repro_util.shard_of("t", units)


def test_quick_mode_refuses_to_overwrite_full_results(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# lt_keras results\n\n## IMP\n\nreal numbers\n")
    result = run_tool("tools/reproduce.py", "--quick", "--steps=imp", f"--results={results}", timeout=120)
    assert result.returncode != 0 and "holds full-budget results" in result.stderr
    assert results.read_text() == "# lt_keras results\n\n## IMP\n\nreal numbers\n"


ZHOU_CHECKS = """
import json, sys
sys.path.insert(0, "tools")
import reproduce_zhou as z

def chain(accuracies):  # early-stop test accuracy per round index
    return [{"early_stop_test_accuracy": a, "density": 0.8 ** k} for k, a in enumerate(accuracies)]

pad = [0.97] * 12
runs = {
    "large_final": chain(pad + [0.980, 0.98, 0.98, 0.979]),             # init: 98.0 at 7.0%, 97.9 at 3.6%
    "mask1_signed_constant": chain(pad + [0.978, 0.9, 0.9, 0.978]),     # -0.2 pp, -0.1 pp: met
    "mask1_signed_reinit": chain(pad + [0.976, 0.9, 0.9, 0.979]),       # -0.4 pp at 7.0%: missed
    "mask1_reinit": chain(pad + [0.95, 0.9, 0.9, 0.9765]),              # 3.6%: -0.25 pp, not <= -0.3: missed
    "mask0_freeze_init": chain(pad + [0.95]),
    "mask0_freeze_init_zero_mask": chain(pad + [0.9775]),               # zero - 0.25 pp: met; > freeze_init
    "mask0_freeze_init_zero_reshuffle": chain(pad + [0.96]),
    "random": chain(pad + [0.96]),
    "magnitude_increase": chain(pad + [0.969]),                         # +0.9 pp over random: missed
    "small_final": chain(pad + [0.50]),
    "oneshot_7.0": chain([0.97, 0.981]),                                # one-shot above iterative: missed
}
print(json.dumps({c["claim"]: c["met"] for c in z.checks(runs)}))
one_shot = {"large_final": chain([0.6, 0.55]), "mask1_reinit": chain([0.6, 0.53]), "mask1_signed_reinit":
            chain([0.6, 0.549])}  # Conv-2's ladder: one pruned round; unsigned actions checked at its density
print(json.dumps({c["claim"]: c["met"] for c in z.checks(one_shot, {7.0: 1})}))
"""


def test_zhou_checks_on_hand_made_rounds():
    result = subprocess.run([sys.executable, "-c", ZHOU_CHECKS], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lenet, conv2 = result.stdout.splitlines()
    assert json.loads(conv2) == {"signs: signed_reinit >= init - 0.3 pp at 7.0%": True,
                                 "signs: reinit <= init - 0.3 pp at 7.0%": True}
    assert json.loads(lenet) == {
        "signs: signed_reinit >= init - 0.3 pp at 7.0%": False,
        "signs: signed_constant >= init - 0.3 pp at 7.0%": True,
        "signs: signed_reinit >= init - 0.3 pp at 3.6%": True,
        "signs: signed_constant >= init - 0.3 pp at 3.6%": True,
        "signs: reinit <= init - 0.3 pp at 3.6%": False,
        "zeros: freeze_init < zero at 7.0%": True,
        "zeros: freeze_init_zero_mask >= zero - 0.3 pp at 7.0%": True,
        "zeros: freeze_init_zero_mask > freeze_init at 7.0%": True,
        "zeros: freeze_init_zero_reshuffle < freeze_init_zero_mask at 7.0%": True,
        "criteria: large_final >= random + 1 pp at 7.0%": True,
        "criteria: magnitude_increase >= random + 1 pp at 7.0%": False,
        "criteria: small_final < random at 7.0%": True,
        "iterative >= one-shot at 7.0%": False,
    }


def test_early_bird_report_judges_over_pruning():
    code = """
import json, sys
sys.path.insert(0, "tools")
import reproduce as r
row = dict(emerged=True, eb_epoch=10, eb_fraction_of_schedule=0.125, eb_total_flops=1e12, lt_total_flops=3e12,
           flops_ratio=3.0, baseline_test_accuracy=None)
summary = {"schedule_epochs": 80, "search_epochs": 12, "search_wall_time_s": 60, "retrain_from": "EB",
           "ratios": {"0.3": dict(row, retrain_test_accuracy=0.87), "0.5": dict(row, retrain_test_accuracy=0.86),
                      "0.7": dict(row, retrain_test_accuracy=None)}}
print(json.dumps(r._early_bird_table(summary)[-1]))
summary["ratios"]["0.7"]["retrain_test_accuracy"] = 0.84
print(json.dumps(r._early_bird_table(summary)[-1]))
summary["ratios"]["0.7"]["retrain_test_accuracy"] = 0.875
print(json.dumps(r._early_bird_table(summary)[-1]))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    waiting, hurts, does_not = (json.loads(line) for line in result.stdout.splitlines())
    assert waiting.startswith("| 0.7 |")  # no p = 0.7 retrain yet: no verdict
    assert hurts == ("Over-pruning hurts (You et al., p >= 0.7): the p = 0.7 ticket retrains to 84.00%, "
                     "3.00 pp below p = 0.3 (87.00%): shown.")
    assert does_not.endswith("-0.50 pp below p = 0.3 (87.00%): **not shown**.")


def test_bench_reports_the_median_of_repeated_processes():
    sys.path.insert(0, os.path.join(REPO, "tools"))
    try:
        import bench
    finally:
        sys.path.pop(0)

    def report(ratio, plain_ms):
        return {"rows": [{"jit_compile": True, "ms_per_step": {"plain": plain_ms}, "masked/plain": ratio}],
                "xla_retrain": {"lenet_300_100": ratio - 0.3}, "targets": {"masked/plain": 1.05}}

    rows = bench.collect_runs("masking lenet_300_100", [report(1.10, 2.0), report(1.02, 2.4), report(1.04, 2.2)])
    assert [(r["figure"], r["ratio"]) for r in rows] == [("masking lenet_300_100 xla=on", "masked/plain"),
                                                          ("xla retrain lenet_300_100", "masked xla/no-xla")]
    assert rows[0]["value"] == 1.04 and rows[0]["runs"] == [1.10, 1.02, 1.04]
    assert rows[0]["ms_per_step"] == {"plain": 2.2}
    assert abs(rows[1]["value"] - 0.74) < 1e-12
    single = bench.collect_runs("masking lenet_300_100", [report(1.10, 2.0)])
    assert single[0]["value"] == 1.10 and "runs" not in single[0]


def test_every_planted_bug_still_finds_its_function(tmp_path):
    """tools/mutants.py names each mutation's function; a rename or a moved line would make it NOT APPLIED
    (the full run, ~15 minutes, checks the tests kill each one)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mutants", os.path.join(REPO, "tools", "mutants.py"))
    mutants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mutants)
    for mutation in mutants.MUTATIONS:
        tree = tmp_path / mutation.name
        shutil.copytree(os.path.join(REPO, "lt_keras"), tree / "lt_keras")
        assert mutants.apply(str(tree), mutation) is None, mutation.name
        where = mutants.locate(str(tree), mutation.function)
        assert mutation.new in open(where[0]).read(), mutation.name
    assert len({m.name for m in mutants.MUTATIONS}) == len(mutants.MUTATIONS)

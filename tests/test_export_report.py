"""The export report: the path TFLite takes for each layer, read from the converted model, and sizes and
latencies of the export beside a dense one (values checked for sense, never timed against each other)."""
import json

import numpy as np

from lt_keras import Mask, keras
from lt_keras.data import DataConfig
from lt_keras.export import export_ticket_dir
from lt_keras.methods import Export, ExportConfig
from lt_keras.models import build_model
from lt_keras.patterns import SparsityPattern
from lt_keras.ticket import TicketInfo, write_ticket


def blocked_ticket(folder):
    """LeNet-300-100 with fc1 and the output layer in 1x4 blocks (10%) and fc2 at random (10%)."""
    keras.utils.set_random_seed(0)
    model = build_model("lenet_300_100", (28, 28, 1), 10)
    pattern, rng = SparsityPattern.parse("block:1x4"), np.random.RandomState(0)
    masks = {}
    for key, ones in Mask.from_model(model).items():
        if key == "fc2/kernel":
            masks[key] = (rng.rand(*ones.shape) < 0.1).astype(np.float32)
        else:
            blocks = (rng.rand(*pattern.block_sizes(ones.shape).shape) < 0.1).astype(np.float32)
            masks[key] = pattern.expand_blocks(blocks, ones.shape)
    mask = Mask(masks)
    mask.apply_to(model)
    write_ticket(str(folder), model, mask, TicketInfo("imp", "fp32", {"round": 1, "sparsity_pattern": "block:1x4"}))
    return mask


def test_the_report_names_each_layers_tflite_path_and_measures_both_exports(tmp_path):
    data = DataConfig(dataset="mnist_5k", max_train_examples=100).load()
    mask = blocked_ticket(tmp_path / "ticket")
    report = export_ticket_dir(str(tmp_path / "ticket"), str(tmp_path / "model"), data, parity_examples=20,
                               tflite_quantization="none", tflite_sparsity="always")
    assert report["tflite_encoding"] == {"setting": "always", "chosen": "sparse"}
    assert report["tflite_layer_paths"] == {"fc1": "sparse block kernel (1x4)", "fc2": "densified at load",
                                            "output": "sparse block kernel (1x4)"}
    assert report["tflite_max_abs_diff"] <= 1e-4  # the sparse encoding computes the same outputs
    measured = report["measured"]
    dense, ticket = measured["variants"]["dense"], measured["variants"]["ticket"]
    assert measured["batches"] == [1, 64] and measured["tflite_runtime"] in ("ai_edge_litert", "tf.lite")
    for entry in (dense, ticket):
        for kind in ("saved_model_ms", "tflite_ms"):
            assert set(entry[kind]) == {"1", "64"} and all(np.isfinite(v) and v > 0 for v in entry[kind].values())
    kept = int(sum(m.sum() for m in mask.values()))
    assert dense["weights"] == 266610 and ticket["weights"] == kept  # nonzero entries (the biases start at 0)
    assert ticket["tflite_bytes"] < 0.2 * dense["tflite_bytes"]  # stored sparse: sizes are not timings
    assert ticket["ratios_to_dense"]["tflite_bytes"] == ticket["tflite_bytes"] / dense["tflite_bytes"]
    assert json.loads((tmp_path / "model.report.json").read_text())["tflite_layer_paths"]["fc2"] == "densified at load"
    text = Export(ExportConfig(ticket_dir=str(tmp_path / "ticket"))).report(report, str(tmp_path / "model"))
    assert "TFLite runs fc1: sparse block kernel (1x4)" in text and "tflite_ms@1" in text
    auto = export_ticket_dir(str(tmp_path / "ticket"), str(tmp_path / "auto"), data, parity_examples=20,
                             tflite_quantization="none", measure_export=False)["tflite_encoding"]
    never_slower = max(auto["sparse_over_dense_ms"].values()) <= 1.0  # auto follows its own measurement
    assert set(auto["sparse_over_dense_ms"]) == {"1", "64"}
    assert auto["chosen"] == ("sparse" if never_slower else "dense")


def test_sparse_serving_computes_the_tickets_outputs_and_serves_without_lt_keras(tmp_path):
    """Each pruned Dense layer is timed both ways and computes sparse where it measured faster; whatever was
    chosen, the SavedModel gives the masked model's outputs at every batch size and loads with TensorFlow alone."""
    import os
    import subprocess
    import sys

    from lt_keras.ticket import load_ticket

    data = DataConfig(dataset="mnist_5k", max_train_examples=100).load()
    blocked_ticket(tmp_path / "ticket")
    (tmp_path / "model.sparse").mkdir()  # a user's folder of that name is never replaced
    (tmp_path / "model.sparse" / "mine.txt").write_text("mine")
    try:
        export_ticket_dir(str(tmp_path / "ticket"), str(tmp_path / "model"), data, parity_examples=20,
                          measure_export=False, sparse_serving=True)
        raise AssertionError("a user's model.sparse was replaced")
    except Exception as e:  # noqa: BLE001
        assert "is not a sparse-serving export of ours" in str(e)
    assert (tmp_path / "model.sparse" / "mine.txt").read_text() == "mine"
    (tmp_path / "model.sparse" / "mine.txt").unlink()
    (tmp_path / "model.sparse").rmdir()
    report = export_ticket_dir(str(tmp_path / "ticket"), str(tmp_path / "model"), data, parity_examples=20,
                               sparse_serving=True)
    sparse = report["sparse_serving"]
    assert set(sparse["layers"]) == {"fc1", "fc2", "output"} and sparse["max_abs_diff"] <= 1e-5
    for name, choice in sparse["layers"].items():
        assert set(choice["times"]) == {"1", "4", "16", "64"}
        for batch in choice["sparse_batches"]:  # sparse only where the layer measured faster ...
            assert choice["times"][str(batch)]["sparse_ms"] < choice["times"][str(batch)]["dense_ms"]
    if "options" in sparse:  # a switch was verified: the shipped option is the best never slower than dense
        never_slower = {n: r for n, r in sparse["options"].items() if max(r.values()) <= 1.0}
        assert "dense" in never_slower and sparse["shipped"] in never_slower
        assert np.mean(list(never_slower[sparse["shipped"]].values())) == min(
            np.mean(list(r.values())) for r in never_slower.values())
    else:  # one graph at every size: the fastest whole at each
        for batch, graphs in sparse["graph_ms"].items():
            assert graphs["+".join(sparse["switch"][0]["sparse_layers"]) or "dense"] == min(graphs.values())
    assert "sparse_serving" in report["measured"]["variants"]
    x = data.x_test[:7]
    reference = load_ticket(str(tmp_path / "ticket")).model(x, training=False).numpy()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", reference)
    script = ("import sys, numpy as np, tensorflow as tf\n"
              f"serve = tf.saved_model.load({str(tmp_path / 'model.sparse')!r}).signatures['serving_default']\n"
              f"x, y = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'y.npy')!r})\n"
              "diff = max(float(np.abs(serve(inputs=tf.constant(x[i:i + n]))['logits'].numpy() - y[i:i + n]).max())\n"
              "           for i, n in ((0, 1), (1, 2), (0, 7)))\n"
              "assert 'lt_keras' not in sys.modules\n"
              "print(diff)\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip().splitlines()[-1]) <= 1e-5


def test_the_compacted_export_is_smaller_and_computes_the_tickets_outputs(tmp_path):
    """A ticket with dead units (a quarter of fc1's units get no live inputs, and carry a bias; a quarter of fc2's
    are read by nothing) exports a compacted SavedModel beside the ticket's, checked and measured."""
    import tensorflow as tf

    from lt_keras.ticket import load_ticket

    data = DataConfig(dataset="mnist_5k", max_train_examples=100).load()
    keras.utils.set_random_seed(0)
    model = build_model("lenet_300_100", (28, 28, 1), 10)
    rng = np.random.RandomState(0)
    masks = {key: (rng.rand(*ones.shape) < 0.2).astype(np.float32) for key, ones in Mask.from_model(model).items()}
    masks["fc1/kernel"][:, :75] = 0
    masks["output/kernel"] = np.ones((100, 10), np.float32)
    masks["output/kernel"][:25] = 0
    model.get_layer("fc1").bias.assign(rng.rand(300).astype(np.float32))
    Mask(masks).apply_to(model)
    write_ticket(str(tmp_path / "ticket"), model, Mask(masks), TicketInfo("imp", "fp32", {"round": 1}))
    report = export_ticket_dir(str(tmp_path / "ticket"), str(tmp_path / "model"), data, parity_examples=20,
                               tflite_quantization="none", compact_export=True)
    compacted = report["compacted"]
    assert compacted["layers"]["fc1"] == [225, 300] and compacted["layers"]["fc2"] == [75, 100]
    assert compacted["parameters"] == 784 * 225 + 225 + 225 * 75 + 75 + 75 * 10 + 10
    assert compacted["parameters_before"] == 266610 and compacted["max_abs_diff"] <= 1e-5
    variant = report["measured"]["variants"]["compacted"]
    assert variant["weights"] == compacted["parameters"] and variant["tflite_bytes"] > 0
    served = tf.saved_model.load(str(tmp_path / "model.compact")).signatures["serving_default"]
    x = data.x_test[:5]
    np.testing.assert_allclose(served(inputs=tf.constant(x))["logits"].numpy(),
                               load_ticket(str(tmp_path / "ticket")).model(x, training=False).numpy(), atol=1e-5)
    text = Export(ExportConfig(ticket_dir=str(tmp_path / "ticket"))).report(report, str(tmp_path / "model"))
    assert f"{compacted['parameters']} of {compacted['parameters_before']} parameters" in text
    assert "compacted fc1: 225 of 300 outputs" in text

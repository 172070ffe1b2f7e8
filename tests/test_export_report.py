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
                               tflite_quantization="none")
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

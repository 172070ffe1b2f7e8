"""Deployment figures of LeNet-300-100 tickets: what an export saves on disk and in latency, beside dense.

    bash tools/env.sh python tools/export_figures.py                   # synthetic tickets, ~1 minute
    bash tools/env.sh python tools/export_figures.py \\
        --ticket=unstructured_3.6:runs/repro_imp_mnist/round_15/ticket \\
        --ticket=block1x4_8.6:runs/imp_mnist_block1x4/round_11/ticket --data_dir=../shared/data/mnist

Each ticket goes through ``lt_keras.export.export_ticket_dir`` with a float TFLite, sparse serving and the
measurement on (``lt_keras.export_report``: the dense export of the same model beside it, interleaved,
medians), and one markdown table row per ticket is printed: SavedModel and TFLite sizes gzip'd, and latency
at batch 1 and 64 of the SavedModel, the sparse-serving SavedModel and LiteRT, all as ratios to dense, with
the path TFLite takes for each layer. Without ``--ticket``, two seeded tickets of LeNet-300-100 at random
initial weights stand in (unstructured at 3.6%, 1x4 blocks at 10%): sizes and latencies depend on the
pattern and density, hardly on the values. ``tools/bench.py`` reports these rows too.
"""
import os
import sys
import tempfile

import numpy as np
from absl import app, flags

flags.DEFINE_multi_string("ticket", [], "name:ticket_dir of an MNIST LeNet-300-100 ticket (repeatable).")
flags.DEFINE_string("data_dir", None, "MNIST folder for the parity examples (default: the bundled mnist_5k).")
flags.DEFINE_string("markdown_out", None, "Also write the table here.")
FLAGS = flags.FLAGS

COLUMNS = ("saved_model_zipped_bytes", "tflite_gzip_bytes", "saved_model_ms@1", "saved_model_ms@64",
           "tflite_ms@1", "tflite_ms@64")


def synthetic_tickets(folder):
    """Two seeded LeNet-300-100 tickets at their initial weights: unstructured 3.6% and 1x4 blocks at 10%."""
    from lt_keras import Mask, keras
    from lt_keras.models import build_model
    from lt_keras.patterns import SparsityPattern
    from lt_keras.ticket import TicketInfo, write_ticket

    out = {}
    for name, density, pattern in (("unstructured_3.6", 0.036, None), ("block1x4_10", 0.10, "block:1x4")):
        keras.utils.set_random_seed(0)
        model = build_model("lenet_300_100", (28, 28, 1), 10)
        rng, masks = np.random.RandomState(0), {}
        for key, ones in Mask.from_model(model).items():
            if pattern is None:
                masks[key] = (rng.rand(*ones.shape) < density).astype(np.float32)
            else:
                p = SparsityPattern.parse(pattern)
                masks[key] = p.expand_blocks((rng.rand(*p.block_sizes(ones.shape).shape) < density).astype(
                    np.float32), ones.shape)
        Mask(masks).apply_to(model)
        out[name] = os.path.join(folder, name)
        write_ticket(out[name], model, Mask(masks), TicketInfo("imp", "fp32", {"round": 0}))
    return out


def figures(tickets: dict, data, folder) -> list:
    """One row per ticket: density, ratios to dense (COLUMNS), the sparse-serving ratios, TFLite's paths."""
    from lt_keras.export import export_ticket_dir

    rows = []
    for name, ticket_dir in tickets.items():
        report = export_ticket_dir(ticket_dir, os.path.join(folder, "exports", name), data, parity_examples=50,
                                   tflite_quantization="none", sparse_serving=True)
        variants = report["measured"]["variants"]
        ratios = variants["ticket"]["ratios_to_dense"]
        sparse = variants["sparse_serving"]["ratios_to_dense"]
        rows.append({"ticket": name, "density": 1 - report["total_sparsity"],
                     **{c: ratios[c] for c in COLUMNS},
                     "sparse_serving_ms@1": sparse["saved_model_ms@1"],
                     "sparse_serving_ms@64": sparse["saved_model_ms@64"],
                     "tflite_encoding": report["tflite_encoding"],
                     "tflite_paths": report["tflite_layer_paths"],
                     "sparse_paths": {k: v["path"] for k, v in report["sparse_serving"]["layers"].items()},
                     "switch": report["sparse_serving"]["switch"],
                     "dense_ms": {k: variants["dense"][k] for k in ("saved_model_ms", "tflite_ms")},
                     "runtime": report["measured"]["tflite_runtime"]})
    return rows


def _switch(switch) -> str:
    """The sparse-serving graph in words: which Dense layers compute sparse from which batch size."""
    if len(switch) == 1 and not switch[0]["sparse_layers"]:
        return "dense graph shipped"
    return "; ".join(f"from batch {s['from_batch']}: {', '.join(s['sparse_layers']) or 'dense'}" for s in switch)


def markdown(rows) -> str:
    head = ("| ticket | weights kept | SavedModel gzip | TFLite gzip | SavedModel b1 / b64 | sparse serving b1 / b64 "
            "| LiteRT b1 / b64 | TFLite paths |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        paths = f"{r['tflite_encoding']['chosen']} encoding: " + ", ".join(f"{k}: {v}"
                                                                       for k, v in r["tflite_paths"].items())
        lines.append(f"| {r['ticket']} | {100 * r['density']:.1f}% | {r['saved_model_zipped_bytes']:.3f}x | "
                     f"{r['tflite_gzip_bytes']:.3f}x | {r['saved_model_ms@1']:.2f}x / {r['saved_model_ms@64']:.2f}x | "
                     f"{r['sparse_serving_ms@1']:.2f}x / {r['sparse_serving_ms@64']:.2f}x ({_switch(r['switch'])}) | "
                     f"{r['tflite_ms@1']:.2f}x / {r['tflite_ms@64']:.2f}x | {paths} |")
    return "\n".join(lines)


def main(argv):
    del argv
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from lt_keras.data import DataConfig

    data = DataConfig(dataset="mnist", data_dir=FLAGS.data_dir).load() if FLAGS.data_dir else DataConfig().load()
    with tempfile.TemporaryDirectory(prefix="lt_export_figures_") as folder:
        tickets = dict(t.split(":", 1) for t in FLAGS.ticket) if FLAGS.ticket else synthetic_tickets(folder)
        missing = [d for d in tickets.values() if not os.path.isdir(d)]
        if missing:
            sys.exit(f"export_figures: error: --ticket: no ticket folder {missing}.")
        rows = figures(tickets, data, folder)
    table = markdown(rows)
    print(table)
    print("ratios to the dense export of the same model, medians of interleaved runs; runtime:", rows[0]["runtime"])
    if FLAGS.markdown_out:
        with open(FLAGS.markdown_out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    app.run(main)

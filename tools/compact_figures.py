"""Compaction figures: parameters and latency of a ticket beside its compacted twin (``lt_keras.compact``).

    bash tools/env.sh python tools/compact_figures.py                  # a seeded VGG-11 channel ticket, ~1 minute
    bash tools/env.sh python tools/compact_figures.py \\
        --eb_mask=vgg11_eb_0.5:vgg11_bn_quarter:runs/eb_epochs_vgg11_full/eb_p0.5/eb_mask.npz \\
        --ticket=lenet_3.6:runs/repro_imp_mnist/round_15/ticket

An IMP ticket (``--ticket=name:dir``) is compacted as it is. An Early-Bird channel mask
(``--eb_mask=name:model:mask.npz``) is applied to the model as Early-Bird's channel-masked network (the pruned
channels' BatchNorm scale and offset zeroed) and compacted; sizes and latency depend on which channels are
kept, not on the weights, so the network's weights are seeded ones. Without either, a seeded VGG-11 (quarter
width) with an Early-Bird channel mask at 50% of its BatchNorm scales stands in. Both models are written as
SavedModels and float TFLite, measured by ``lt_keras.export_report.measure`` (interleaved, medians; the ticket
is the baseline), and one markdown row per ticket is printed. ``tools/bench.py`` reports the seeded row.
"""
import os
import sys
import tempfile

import numpy as np
from absl import app, flags

flags.DEFINE_multi_string("ticket", [], "name:ticket_dir of a ticket to compact (repeatable).")
flags.DEFINE_multi_string("eb_mask", [], "name:model:eb_mask.npz, an Early-Bird channel mask (repeatable).")
flags.DEFINE_string("markdown_out", None, "Also write the table here.")
FLAGS = flags.FLAGS

HEADER = ("| ticket | parameters (ticket -> compacted) | FLOPs | SavedModel batch 1 / 64 | LiteRT batch 1 / 64 | "
          "max abs diff |\n|---|---|---|---|---|---|")


def eb_ticket(model_name, mask_path=None, ratio=0.5):
    """Early-Bird's channel-masked network of ``model_name`` (CIFAR shape) for a saved channel mask, or for the
    mask at ``ratio`` of seeded BatchNorm scales; BatchNorm statistics are seeded so every channel computes."""
    from lt_keras import Mask, early_bird
    from lt_keras._keras import keras
    from lt_keras.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(model_name, (32, 32, 3), 10, masked=False)
    rng = np.random.RandomState(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape[0]
            layer.gamma.assign(rng.rand(size).astype(np.float32) + 0.1)
            layer.beta.assign(rng.randn(size).astype(np.float32) * 0.1)
            layer.moving_variance.assign(rng.rand(size).astype(np.float32) + 0.5)
    mask = Mask.load(mask_path) if mask_path else early_bird.channel_mask(model, ratio)
    return early_bird.channel_masked(model, mask)


def row(name, model, folder):
    """Compact ``model``, write and measure both; the figure's row (ratios to the ticket)."""
    from lt_keras import compact, compaction_summary
    from lt_keras.convert import strip_masks
    from lt_keras.export import save_saved_model, to_tflite
    from lt_keras.export_report import measure
    from lt_keras.flops import forward_flops_per_example
    from lt_keras.layers import masked_layers

    plain = strip_masks(model) if masked_layers(model) else model
    compacted = compact(model)
    shape = tuple(model.input_shape[1:])
    x = np.random.RandomState(1).rand(16, *shape).astype(np.float32)
    diff = float(np.abs(plain(x, training=False).numpy() - compacted(x, training=False).numpy()).max())
    variants = {}
    for variant, net in (("ticket", plain), ("compacted", compacted)):
        path = save_saved_model(net, os.path.join(folder, f"{name}_{variant}"))
        variants[variant] = (path, to_tflite(path))
    ratios = measure(variants, shape, budget_s=6.0, rounds=11)["variants"]["compacted"]["ratios_to_dense"]
    flops = forward_flops_per_example(compacted) / forward_flops_per_example(plain)
    return {"ticket": name, "parameters": int(plain.count_params()), "compacted": int(compacted.count_params()),
            "flops": flops,
            "layers_narrowed": len(compaction_summary(plain, compacted)), "max_abs_diff": diff,
            **{key: ratios[key] for key in ("saved_model_ms@1", "saved_model_ms@64", "tflite_ms@1", "tflite_ms@64")}}


def figures(named_models, folder) -> list:
    return [row(name, model, folder) for name, model in named_models]


def markdown(rows) -> str:
    lines = [HEADER]
    for r in rows:
        lines.append(f"| {r['ticket']} | {r['parameters']:,} -> {r['compacted']:,} "
                     f"({r['compacted'] / r['parameters']:.3f}x, {r['layers_narrowed']} layers narrowed) | "
                     f"{r['flops']:.2f}x | "
                     f"{r['saved_model_ms@1']:.2f}x / {r['saved_model_ms@64']:.2f}x | "
                     f"{r['tflite_ms@1']:.2f}x / {r['tflite_ms@64']:.2f}x | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines)


def main(argv):
    del argv
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from lt_keras.ticket import load_ticket

    named = []
    for spec in FLAGS.ticket:
        name, _, path = spec.partition(":")
        named.append((name, load_ticket(path).model))
    for spec in FLAGS.eb_mask:
        name, model_name, path = spec.split(":", 2)
        named.append((name, eb_ticket(model_name, path)))
    if not named:
        named = [("vgg11_bn_quarter, Early-Bird channels 50% (seeded)", eb_ticket("vgg11_bn_quarter"))]
    with tempfile.TemporaryDirectory(prefix="lt_compact_figures_") as folder:
        table = markdown(figures(named, folder))
    print(table)
    if FLAGS.markdown_out:
        with open(FLAGS.markdown_out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    app.run(main)

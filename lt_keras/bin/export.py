"""lt-export: a ticket as a plain SavedModel (and TFLite) that serves without lt_keras.

    python -m lt_keras.bin.export --ticket_dir=runs/retrain/ticket --saved_model_dir=export/lenet

Masks are baked into plain Keras layers; the SavedModel's ``serving_default``
signature takes ``inputs`` and returns ``logits``. ``--tflite`` adds
``<saved_model_dir>.tflite`` (``--tflite_quantization=none|dynamic|int8``;
int8 calibrates on training examples of the data flags). The report,
``<saved_model_dir>.report.json``, gives per-layer sparsity, the largest
|difference| between the masked model and the export on ``--parity_examples``
test examples, and the zipped size of a dense export against this one.
"""
import json
import os
import sys

import numpy as np
from absl import app, flags

from lt_keras.bin import common_flags
from lt_keras.errors import LtKerasError

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    common_flags.define_common_flags(flag_values=flag_values)
    flags.DEFINE_string("ticket_dir", None, "Ticket folder (model.keras, mask.npz, ticket.json) to export.", flag_values=flag_values)
    flags.DEFINE_string("saved_model_dir", None, "New (or empty) folder for the SavedModel.", flag_values=flag_values)
    flags.DEFINE_bool("tflite", False, "Also write <saved_model_dir>.tflite.", flag_values=flag_values)
    flags.DEFINE_enum("tflite_quantization", "none", ["none", "dynamic", "int8"], "TFLite weight/activation quantization.", flag_values=flag_values)
    flags.DEFINE_integer("parity_examples", 100, "Test examples for the parity checks.", lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("representative_examples", 200, "Training examples that calibrate int8 TFLite.", lower_bound=1, flag_values=flag_values)
SAVED_MODEL_TOLERANCE = 1e-5


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with common_flags.user_errors("lt-export"):
        if not FLAGS.ticket_dir:
            raise LtKerasError("--ticket_dir: the ticket to export is required.")
        if not FLAGS.saved_model_dir:
            raise LtKerasError("--saved_model_dir: the folder for the SavedModel is required.")
        from lt_keras import export
        from lt_keras.io_utils import atomic_write_bytes, atomic_write_json
        from lt_keras.ticket import load_ticket

        ticket = load_ticket(FLAGS.ticket_dir)
        data = common_flags.data_config().load()
        if tuple(ticket.model.input_shape[1:]) != tuple(data.input_shape):
            raise LtKerasError(f"ticket takes inputs of shape {tuple(ticket.model.input_shape[1:])}, but --dataset="
                               f"{data.spec.name} has {tuple(data.input_shape)}; pass the ticket's dataset.")
        target = os.path.abspath(FLAGS.saved_model_dir)
        x = data.x_test[: FLAGS.parity_examples]
        report = export.export_ticket(ticket.model, target, x)
        report.update(ticket=os.path.abspath(FLAGS.ticket_dir), method=ticket.info.get("method"),
                      saved_model_tolerance=SAVED_MODEL_TOLERANCE)
        if report["max_abs_diff_saved_model"] > SAVED_MODEL_TOLERANCE:
            raise LtKerasError(f"the SavedModel differs from the masked model by {report['max_abs_diff_saved_model']:.3g} "
                               f"(> {SAVED_MODEL_TOLERANCE}); see {target}.")
        if FLAGS.tflite:
            representative = data.x_train[: FLAGS.representative_examples][:, None]
            tflite = export.to_tflite(target, FLAGS.tflite_quantization, representative)
            path = target + ".tflite"
            atomic_write_bytes(path, tflite)
            reference = ticket.model(x, training=False).numpy()
            outputs = export.tflite_outputs(tflite, x)
            report.update(tflite_path=path, tflite_quantization=FLAGS.tflite_quantization, tflite_bytes=len(tflite),
                          tflite_max_abs_diff=export.max_abs_diff(outputs, reference),
                          tflite_top1_agreement=float(np.mean(outputs.argmax(1) == reference.argmax(1))))
        atomic_write_json(target + ".report.json", report)
    print(json.dumps(report, indent=2, sort_keys=True))
    print(f"\nSavedModel: {target} (max |diff| {report['max_abs_diff_saved_model']:.2e}, "
          f"{100 * report['total_sparsity']:.1f}% zeros, zipped {report['zip_ratio']:.2f}x of dense)")


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

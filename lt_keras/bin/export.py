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

from absl import app, flags

from lt_keras.bin import common_flags
from lt_keras.errors import LtKerasError

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    common_flags.define_common_flags(flag_values=flag_values)
    flags.DEFINE_string("ticket_dir", None, "Ticket folder (model.keras, mask.npz, ticket.json) to export.",
                        flag_values=flag_values)
    flags.DEFINE_string("saved_model_dir", None, "New (or empty) folder for the SavedModel.", flag_values=flag_values)
    flags.DEFINE_bool("tflite", False, "Also write <saved_model_dir>.tflite.", flag_values=flag_values)
    flags.DEFINE_enum("tflite_quantization", "none", ["none", "dynamic", "int8"],
                      "TFLite weight/activation quantization.", flag_values=flag_values)
    flags.DEFINE_integer("parity_examples", 100, "Test examples for the parity checks.", lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_integer("representative_examples", 200, "Training examples that calibrate int8 TFLite.",
                         lower_bound=1, flag_values=flag_values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with common_flags.user_errors("lt-export"):
        if not FLAGS.ticket_dir:
            raise LtKerasError("--ticket_dir: the ticket to export is required.")
        common_flags.model_from_ticket(FLAGS.ticket_dir)
        if not FLAGS.saved_model_dir:
            raise LtKerasError("--saved_model_dir: the folder for the SavedModel is required.")
        from lt_keras.export import export_ticket_dir

        report = export_ticket_dir(FLAGS.ticket_dir, FLAGS.saved_model_dir, common_flags.data_config().load(),
                                   FLAGS.parity_examples, FLAGS.tflite_quantization if FLAGS.tflite else None,
                                   FLAGS.representative_examples)
    print(json.dumps(report, indent=2, sort_keys=True))
    print(f"\nSavedModel: {FLAGS.saved_model_dir} (max |diff| {report['max_abs_diff_saved_model']:.2e}, "
          f"{100 * report['total_sparsity']:.1f}% zeros, zipped {report['zip_ratio']:.2f}x of dense)")


def run():
    common_flags.run_binary(define_flags, main)


if __name__ == "__main__":
    run()

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
from lt_keras.bin.runner import binary
from lt_keras.methods import Export

run = binary(Export)

if __name__ == "__main__":
    run()

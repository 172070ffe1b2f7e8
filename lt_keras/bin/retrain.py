"""lt-retrain: retrain any ticket (IMP, supermask, Early-Bird) at full precision, with XLA by default.

    python -m lt_keras.bin.retrain --ticket_dir=runs/quickstart/round_3/ticket \
        --output_dir=runs/retrain --flagfile=flags/lenet300_mnist_dense.flags --data_dir=...

The ticket's model (its masks included) trains with the common training
flags; TensorFlow places it on a GPU when one is visible. ``--strategy``
picks a ``tf.distribute`` strategy (``--batch_size`` is the global batch).
Writes the retrained ticket, history.json, curves.png and summary.json
(``lt_keras.methods.Retrain``); a killed run resumes, a finished one prints.
"""
from lt_keras.bin.runner import binary
from lt_keras.methods import Retrain

run = binary(Retrain)

if __name__ == "__main__":
    run()

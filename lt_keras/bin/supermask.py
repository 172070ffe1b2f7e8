"""lt-supermask: learn a mask over frozen random weights (``lt_keras.methods.Supermask``), or score masks on
untrained weights (``--from_run``).

    python -m lt_keras.bin.supermask --flagfile=flags/lenet300_mnist_supermask.flags \
        --data_dir=path/to/mnist --output_dir=runs/supermask

Writes flags.txt, config.json, history.json, curves.png, summary.json and ``ticket/`` (learning) or the
untrained accuracy per density (``--criterion`` masks of an lt-train run, or an lt-imp ``--from_round``).
"""
from lt_keras.bin.runner import binary
from lt_keras.methods import Supermask

run = binary(Supermask)

if __name__ == "__main__":
    run()

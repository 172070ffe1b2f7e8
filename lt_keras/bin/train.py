"""lt-train: train a (dense or masked) model into a run directory.

    python -m lt_keras.bin.train --flagfile=flags/lenet300_mnist_dense.flags \
        --data_dir=path/to/mnist --output_dir=runs/dense

Writes flags.txt, config.json, versions.json, init_weights.npz, history.json, model.keras,
TensorBoard summaries and summary.json. Re-running a finished run directory
trains nothing and prints its summary.
"""
from lt_keras.bin.runner import binary
from lt_keras.methods import Train

run = binary(Train)

if __name__ == "__main__":
    run()

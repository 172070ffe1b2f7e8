"""lt-early-bird: find Early-Bird tickets early in training, slim them, retrain, and count the FLOPs.

    python -m lt_keras.bin.early_bird --flagfile=flags/vgg16_cifar100_early_bird.flags \
        --data_dir=path/to/cifar-100-python --output_dir=runs/eb

Trains a BatchNorm network with an L1 penalty on BN scale factors; after
every epoch computes the channel mask for each of ``--prune_ratios`` and
declares each ratio's Early-Bird ticket when its newest mask is within
``--epsilon`` of the others in the FIFO of ``--queue_length``. Each ticket
is slimmed (``eb_p<ratio>/ticket``: the smaller network at the EB-epoch
weights) and retrained at fp32 with XLA from the EB weights (the schedule
resumed at the EB epoch) or from scratch. The summary compares total
training FLOPs (search + retrain) with the LT one-shot baseline (full dense
training, prune at the same ratio, full retraining), counted by
``lt_keras.flops``; ``--run_baseline`` also trains that baseline for its
accuracy. The method is one library call, ``lt_keras.methods.EarlyBird``.
"""
from lt_keras.bin.runner import binary
from lt_keras.methods import EarlyBird

run = binary(EarlyBird)

if __name__ == "__main__":
    run()

"""lt-imp: find lottery tickets by iterative (or one-shot) magnitude pruning.

    python -m lt_keras.bin.imp --flagfile=flags/quickstart.flags

Writes round_<k>/ (mask, metrics, ticket) per round, summary.json and
report.png into --output_dir. Re-running the same command resumes after the
last complete round; on a finished run it trains nothing and prints the table.
"""
from lt_keras.bin.runner import binary
from lt_keras.methods import Imp

run = binary(Imp)

if __name__ == "__main__":
    run()

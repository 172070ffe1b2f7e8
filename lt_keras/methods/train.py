"""lt-train: train a registered (dense or masked) model into a run directory."""
import dataclasses
import json
import os
import shutil

from lt_keras.mask import Mask
from lt_keras.methods.base import Method, RunSpec
from lt_keras.models import parameter_count
from lt_keras.training import build_and_train


@dataclasses.dataclass(frozen=True)
class TrainRunConfig:
    """lt-train has no settings beyond the spec's model, data and training schedule."""


class Train(Method):
    """Train ``spec.model``: init_weights.npz (theta_0), model.keras, history.json, TensorBoard summaries; a
    killed run resumes from its last evaluation (``backup/``)."""

    binary = "lt-train"
    Config = TrainRunConfig

    def execute(self, run_dir, spec: RunSpec, data) -> dict:
        backup = os.path.join(run_dir, "backup")
        model, result = build_and_train(spec.model, data, spec.train, output_dir=run_dir, backup_dir=backup)
        shutil.rmtree(backup, ignore_errors=True)
        return {
            "data_sizes": data.sizes(),
            "parameters": parameter_count(model),
            "density": Mask.from_model(model).density(),
            **{k: v for k, v in result.to_dict().items() if k != "history"},
        }

    def report(self, summary, run_dir) -> str:
        return (f"{json.dumps(summary, indent=2, sort_keys=True)}\n\n{summary['model']} on {summary['dataset']}: "
                f"test accuracy {summary['final_test_accuracy']:.4f} at the end ({summary['total_steps']} steps); "
                f"early stop at step {summary['early_stop_step']} with test accuracy "
                f"{summary['early_stop_test_accuracy']:.4f}. Run directory: {run_dir}")

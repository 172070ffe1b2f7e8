"""lt-export: a ticket as a plain SavedModel (and TFLite) that serves without lt_keras, checked and reported."""
import dataclasses
import json

from lt_keras.errors import ConfigError
from lt_keras.export import TFLITE_QUANTIZATION, export_ticket_dir
from lt_keras.methods.base import Method, RunSpec
from lt_keras.options import option


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The ticket to export, the TFLite twin, and how many examples check and calibrate it."""

    ticket_dir: str = option(None, "Ticket folder (model.keras, mask.npz, ticket.json) to export.")
    tflite: bool = option(False, "Also write <saved_model_dir>.tflite.")
    tflite_quantization: str = option("none", "TFLite weight/activation quantization.", choices=TFLITE_QUANTIZATION)
    tflite_sparsity: str = option("auto", "Store TFLite weights sparse (EXPERIMENTAL_SPARSITY; 1x4 blocks then run "
                                  "TFLite's sparse kernel): always, never, or auto, where that measures no slower "
                                  "than the dense encoding at batch 1 and 64.", choices=("auto", "always", "never"))
    parity_examples: int = option(100, "Test examples for the parity checks.", lower_bound=1)
    representative_examples: int = option(200, "Training examples that calibrate int8 TFLite.", lower_bound=1)
    measure: bool = option(True, "Measure sizes (raw, compressed) and latency at batch 1 and 64 of the export (and "
                           "its TFLite) beside a dense export of the same model: seconds for small models.")
    sparse_serving: bool = option(False, "Also write <saved_model_dir>.sparse, a SavedModel whose pruned Dense "
                                  "layers compute with their nonzero weights at the batch sizes where that measured "
                                  "faster than dense (timed per layer at export).")
    compact: bool = option(False, "Also write <saved_model_dir>.compact, the ticket without the units and "
                           "channels no output depends on (lt_keras.compact), checked against the masked model.")

    def __post_init__(self):
        if not self.ticket_dir:
            raise ConfigError("ticket_dir", "the ticket to export is required.")
        if self.tflite_quantization not in TFLITE_QUANTIZATION:
            raise ConfigError("tflite_quantization", f"{self.tflite_quantization!r} is not one of "
                              f"{list(TFLITE_QUANTIZATION)}.")


class Export(Method):
    """Export ``config.ticket_dir`` into ``run_dir`` (the SavedModel's folder; the report is
    ``<run_dir>.report.json``). The export takes its own lock and resumes; it has no run metadata."""

    binary = "lt-export"
    Config = ExportConfig
    default_model = None  # the ticket's
    run_dir_flag = "saved_model_dir"
    distributes = False

    def run(self, run_dir, spec: RunSpec = None) -> dict:
        spec = self.resolve(spec if spec is not None else RunSpec())
        if not run_dir:
            raise ConfigError("saved_model_dir", "the folder for the SavedModel is required.")
        data = self.load_data(spec)
        if data.spec.streaming:
            raise ConfigError("dataset", f"lt-export takes its parity and calibration examples from a dataset held in "
                              f"memory; {data.spec.name} streams, which lt-export does not support yet.")
        c = self.config
        return export_ticket_dir(c.ticket_dir, run_dir, data, c.parity_examples,
                                 c.tflite_quantization if c.tflite else None, c.representative_examples, c.measure,
                                 c.sparse_serving, c.tflite_sparsity, c.compact)

    def report(self, summary, run_dir) -> str:
        lines = [json.dumps(summary, indent=2, sort_keys=True), "",
                 f"SavedModel: {run_dir} (max |diff| {summary['max_abs_diff_saved_model']:.2e}, "
                 f"{100 * summary['total_sparsity']:.1f}% zeros, zipped {summary['zip_ratio']:.2f}x of dense)"]
        for layer, path in summary.get("tflite_layer_paths", {}).items():
            lines.append(f"  TFLite runs {layer}: {path}")
        for layer, choice in summary.get("sparse_serving", {}).get("layers", {}).items():
            lines.append(f"  sparse serving runs {layer}: {choice['path']}")
        compacted = summary.get("compacted")
        if compacted:
            lines.append(f"compacted: {compacted['saved_model_dir']} ({compacted['parameters']} of "
                         f"{compacted['parameters_before']} parameters, {len(compacted['layers'])} layers narrowed, "
                         f"max |diff| {compacted['max_abs_diff']:.2e})")
            for layer, (kept, before) in compacted["layers"].items():
                lines.append(f"  compacted {layer}: {kept} of {before} outputs")
        for name, entry in summary.get("measured", {}).get("variants", {}).items():
            if name != "dense":
                lines.append(f"{name} / dense: " + ", ".join(f"{k} {v:.2f}x"
                                                             for k, v in sorted(entry["ratios_to_dense"].items())))
        return "\n".join(lines)

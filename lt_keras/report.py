"""Round tables and plots of IMP runs, as in Frankle & Carbin's figures 3 and 4."""
import os

from lt_keras.io_utils import atomic_write_bytes


def round_table(results) -> str:
    controls = sorted({c for r in results for c in r.get("controls", {})})
    header = ["round", "weights %", "untrained", "early-stop it", "test@es", "test@end"]
    header += [f"{c}@end" for c in controls]
    rows = [header]
    for r in results:
        untrained = r.get("untrained_test_accuracy")
        rows.append([str(r["round"]), f"{100 * r['density']:.1f}",
                     "-" if untrained is None else f"{untrained:.4f}",
                     str(r["early_stop_step"]), f"{r['early_stop_test_accuracy']:.4f}",
                     f"{r['final_test_accuracy']:.4f}"]
                    + [f"{r['controls'][c]['final_test_accuracy']:.4f}" if c in r.get("controls", {}) else "-"
                       for c in controls])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    table = "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows)
    return table + "\n" + ROUND_TABLE_LEGEND + ("; " + ", ".join(f"{c}@end" for c in controls) +
                                                ": that control's test accuracy at the end" if controls else "") + "."


ROUND_TABLE_LEGEND = ("untrained: test accuracy of the round's mask over its rewound weights, before training; "
                      "early-stop it: the iteration of the lowest validation loss; test@es / test@end: test "
                      "accuracy there and at the end of the round's training")


def plot_rounds(results, path, title=None):
    """Test accuracy and early-stop iteration vs remaining weights (log x, ticks at the rounds' densities),
    ticket vs controls, with the dense round as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    density = [100 * r["density"] for r in results]
    fig, (acc, es) = plt.subplots(1, 2, figsize=(11, 4.3))
    acc.plot(density, [r["final_test_accuracy"] for r in results], "o-", label="ticket (end)")
    acc.plot(density, [r["early_stop_test_accuracy"] for r in results], "o--", label="ticket (early stop)")
    es.plot(density, [r["early_stop_step"] for r in results], "o-", label="ticket")
    dense = [r for r in results if r["round"] == 0]
    if dense:
        acc.axhline(dense[0]["early_stop_test_accuracy"], color="gray", lw=0.8, ls="--", label="dense (early stop)")
        es.axhline(dense[0]["early_stop_step"], color="gray", lw=0.8, ls="--", label="dense")
    for control in sorted({c for r in results for c in r.get("controls", {})}):
        points = [(100 * r["density"], r["controls"][control]) for r in results if control in r.get("controls", {})]
        acc.plot([d for d, _ in points], [c["final_test_accuracy"] for _, c in points], "s:", label=control)
        es.plot([d for d, _ in points], [c["early_stop_step"] for _, c in points], "s:", label=control)
    for ax, ylabel in ((acc, "test accuracy"), (es, "early-stop iteration")):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(density))  # the densities themselves, not 10^1, 9x10^1, ...
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(density, _tick_labels(density))
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def _tick_labels(density, most=9):
    """A label at the first and last density and at every k-th between (at most ``most``): 20 rounds' labels
    would overlap into one unreadable string; every round keeps its tick."""
    step = max(1, -(-len(density) // most))
    last = len(density) - 1
    return [f"{d:.3g}" if (i % step == 0 and last - i >= step / 2) or i == last else "" for i, d in enumerate(density)]


def save_figure(fig, path):
    """Write a matplotlib figure as PNG atomically, and close it."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(os.fspath(path), buffer.getvalue())


def plot_curves(history, path, extra="mask_density"):
    """Learning curves of one training vs step: accuracies, losses, and ``extra`` (if logged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    has_extra = any(extra in r for r in history)
    panels = [("accuracy", ("accuracy", "val_accuracy", "test_accuracy")), ("loss", ("loss", "val_loss", "test_loss"))]
    if has_extra:
        panels.append((extra, (extra,)))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (ylabel, keys) in zip(axes[0], panels):
        for key in keys:
            if any(key in r for r in history):
                ax.plot(steps, [r.get(key) for r in history], label=key)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    if has_extra and "density" in extra:
        axes[0][-1].set_ylim(0, 1.02)  # a density is a fraction: 0.500-0.505 would read as a swing
    save_figure(fig, path)

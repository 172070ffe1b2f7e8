"""The plots users read first: report.png of an IMP run and curves.png of a training."""
import pytest

from lt_keras import report


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions would write, kept open for inspection."""
    kept = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: kept.append(fig))
    return kept


def rounds():
    densities = [1.0, 0.513, 0.211, 0.07, 0.036]
    return [{"round": k, "density": d, "final_test_accuracy": 0.97 - 0.001 * k, "early_stop_test_accuracy": 0.975,
             "early_stop_step": 1000 - 50 * k,
             "controls": {"random_reinit": {"final_test_accuracy": 0.9, "early_stop_step": 900}} if k else {}}
            for k, d in enumerate(densities)]


def test_report_reads_densities_names_the_run_and_shows_the_dense_round(figures):
    report.plot_rounds(rounds(), "unused.png", title="lenet_300_100 on mnist: IMP, criterion large_final")
    (fig,) = figures
    accuracy = fig.axes[0]
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["100", "51.3", "21.1", "7", "3.6"]
    assert fig._suptitle.get_text() == "lenet_300_100 on mnist: IMP, criterion large_final"
    dense = [line for line in accuracy.get_lines() if line.get_label() == "dense (early stop)"]
    assert len(dense) == 1 and set(dense[0].get_ydata()) == {0.975}
    assert {line.get_label() for line in accuracy.get_lines()} >= {"ticket (end)", "random_reinit"}


def test_curves_show_loss_and_a_density_axis_from_zero_to_one(figures):
    history = [{"step": s, "accuracy": 0.5, "val_accuracy": 0.5, "loss": 1.0 / s, "val_loss": 1.0,
                "mask_density": 0.501 + 1e-4 * s} for s in (10, 20, 30)]
    report.plot_curves(history, "unused.png")
    (fig,) = figures
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["accuracy", "loss", "mask_density"]
    assert {line.get_label() for line in fig.axes[1].get_lines()} == {"loss", "val_loss"}
    assert fig.axes[2].get_ylim() == (0, 1.02)
    assert all(ax.get_xlabel() == "training step" for ax in fig.axes)


def test_twenty_rounds_keep_readable_tick_labels_and_the_table_explains_its_columns(figures):
    """At 20 rounds every density keeps its tick but only some are labelled, so the labels never overlap."""
    densities = [0.8 ** k * (0.9 if k else 1) for k in range(21)]
    results = [{"round": k, "density": d, "final_test_accuracy": 0.97, "early_stop_test_accuracy": 0.97,
                "early_stop_step": 100, "controls": {}} for k, d in enumerate(densities)]
    report.plot_rounds(results, "unused.png")
    (fig,) = figures
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(labels) == 21 and 3 <= sum(bool(t) for t in labels) <= 10 and labels[0] and labels[-1]
    table = report.round_table(rounds())
    assert "early-stop it: the iteration of the lowest validation loss" in table
    assert "random_reinit@end: that control's test accuracy at the end" in table

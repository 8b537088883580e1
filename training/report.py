"""The training report picture: loss and eval accuracy per epoch, and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display in a training container or CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from training.loop import EpochRecord  # noqa: E402


def write_report(
    path: Path, history: Sequence[EpochRecord], confusion: Sequence[Sequence[int]], labels: Sequence[str], title: str
) -> None:
    figure, (curve, matrix_axes) = plt.subplots(1, 2, figsize=(11, 4.5))
    epochs = [r.epoch for r in history]
    curve.plot(epochs, [r.loss for r in history], marker="o", label="training loss")
    curve.set_xlabel("epoch")
    curve.xaxis.set_major_locator(MaxNLocator(integer=True))
    curve.set_ylabel("loss")
    accuracy_axes = curve.twinx()
    accuracy_axes.plot(
        epochs, [r.validation_accuracy for r in history], marker="s", color="tab:green", label="validation accuracy"
    )
    accuracy_axes.set_ylabel("eval accuracy (fp32)")
    curve.set_title("training")
    lines = curve.get_legend_handles_labels()[0] + accuracy_axes.get_legend_handles_labels()[0]
    curve.legend(lines, [str(line.get_label()) for line in lines], loc="center right")

    image = matrix_axes.imshow(confusion, cmap="Blues")
    matrix_axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    matrix_axes.set_yticks(range(len(labels)), labels)
    matrix_axes.set_xlabel("predicted")
    matrix_axes.set_ylabel("true")
    matrix_axes.set_title("confusion matrix (int8, eval split)")
    peak = max((max(row) for row in confusion), default=0)
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            matrix_axes.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    figure.colorbar(image, ax=matrix_axes, fraction=0.046)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)

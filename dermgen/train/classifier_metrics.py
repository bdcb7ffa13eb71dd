"""Binary metrics (accuracy, balanced accuracy, AUROC, sensitivity, specificity) and the job's
reports: the Markdown table in the study's Table IV layout and the training curves."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dermgen.train.classifier_config import MODEL_NAMES, MODES, STUDY_TABLE_IV

log = logging.getLogger("dermgen.train.classifier")


# -- metrics -----------------------------------------------------------------------------------------


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with tie correction); None if one class is absent."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y == 1].sum() - pos * (pos + 1) / 2.0
    return float(u / (pos * neg))


def binary_metrics(labels: Sequence[int], prob_positive: Sequence[float]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, AUROC, sensitivity (malignant recall), specificity, confusion matrix.

    The prediction is the argmax (p(malignant) >= 0.5). Confusion matrix rows are true classes
    [benign, malignant], columns predicted: [[TN, FP], [FN, TP]].
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(prob_positive, dtype=np.float64)
    pred = (p >= 0.5).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    n = len(y)
    sens = tp / (tp + fn) if tp + fn else None
    spec = tn / (tn + fp) if tn + fp else None
    recalls = [r for r in (sens, spec) if r is not None]
    return {
        "n": n,
        "accuracy": (tp + tn) / n if n else None,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "auroc": auroc(y, p),
        "sensitivity": sens,
        "specificity": spec,
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "confusion_labels": ["benign", "malignant"],
    }


# -- reports -----------------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def render_table(metrics: dict[str, Any]) -> str:
    """Markdown: test accuracy per mode and test set (Table IV layout), then the other metrics."""
    model = metrics["config"]["model"]
    label = MODEL_NAMES[model] + (" (tiny)" if metrics["config"]["model_size"] == "tiny" else "")
    modes = [m for m in MODES if m in metrics]
    tests = list(metrics[modes[0]].keys()) if modes else []
    lines = [
        f"# Classifier validation: {label}, weights `{metrics['config']['weights']}`",
        "",
        "Test accuracy (%) on unseen real data, as in the study's Table IV:",
        "",
        "| model | " + " | ".join(tests) + " | validation |",
        "| --- | " + " | ".join("---" for _ in tests) + " | --- |",
    ]
    for mode in modes:
        val = metrics["validation"].get(mode, {}).get("accuracy")
        cells = [_pct(metrics[mode][t]["accuracy"]) for t in tests]
        lines.append(f"| {label}, {mode} | " + " | ".join(cells) + f" | {_pct(val)} |")
    lines += ["", "All metrics (%; AUROC x100):", ""]
    lines.append(
        "| model | test set | n | accuracy | balanced acc. | AUROC | sensitivity | specificity | confusion [[TN, FP], [FN, TP]] |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for mode in modes:
        for t in tests:
            m = metrics[mode][t]
            lines.append(
                f"| {label}, {mode} | {t} | {m['n']} | {_pct(m['accuracy'])} | {_pct(m['balanced_accuracy'])} | "
                f"{_pct(m['auroc'])} | {_pct(m['sensitivity'])} | {_pct(m['specificity'])} | {m['confusion_matrix']} |"
            )
    lines += ["", "Training sets:", ""]
    for mode in modes:
        c = metrics["training"][mode]["composition"]
        lines.append(
            f"- {mode}: {c['real']} real + {c['synthetic']} synthetic "
            f"({100 * c['synthetic_fraction']:.1f}% synthetic), {metrics['training'][mode]['epochs']} epochs, "
            f"selected epoch {metrics['training'][mode]['selected_epoch']}"
        )
    study = [(m, STUDY_TABLE_IV.get((model, m))) for m in modes]
    if any(s for _, s in study):
        lines += [
            "",
            "The study's Table IV for reference (ISIC Archive / HAM10000 test sets, full models, pretrained):",
            "",
        ]
        for mode, s in study:
            if s:
                lines.append(
                    f"- {MODEL_NAMES[model]}, {mode}: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items())
                )
    return "\n".join(lines) + "\n"


def plot_curves(metrics: dict[str, Any], path: Path) -> None:
    """Training loss and validation accuracy per epoch, one line per mode (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, (mode, info) in enumerate(metrics["training"].items()):
        hist = info["history"]
        color = f"C{k}"
        epochs = [h["epoch"] for h in hist]
        axes[0].plot(epochs, [h["train_loss"] for h in hist], color=color, label=f"{mode} train")
        axes[1].plot(epochs, [h["train_accuracy"] for h in hist], color=color, label=f"{mode} train")
        if hist and "val_loss" in hist[0]:
            axes[0].plot(epochs, [h["val_loss"] for h in hist], "--", color=color, label=f"{mode} val")
            axes[1].plot(epochs, [h["val_accuracy"] for h in hist], "--", color=color, label=f"{mode} val")
    axes[0].set_yscale("log")
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].set(title="accuracy", xlabel="epoch", ylim=(0, 1))
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{MODEL_NAMES[metrics['config']['model']]} ({metrics['config']['model_size']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

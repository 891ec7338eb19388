"""PNG figures of the calibration report (matplotlib, headless).

Three questions a user should be able to answer at a glance: does P(correct) mean what it says (reliability),
how early does each signal tell right from wrong (AUROC by step fraction), and do correct traces lose answer
entropy step by step while wrong ones do not (entropy curves)?
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .evaluation import FRACTIONS, SIGNALS, RecipeReport
from .metrics import expected_calibration_error, reliability_bins

COLOURS = {"calibrated": "#d62728", "entropy": "#1f77b4", "token_entropy": "#2ca02c", "deepconf": "#9467bd",
           "top1": "#ff7f0e"}


def reliability(reports: list[RecipeReport], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(reports), figsize=(4.2 * len(reports), 4.2), squeeze=False)
    for ax, report in zip(axes[0], reports, strict=True):
        last = report.table.at_fraction(1.0)
        for label, y, p, style in (
            ("every step", report.table.y, report.p, "o-"),
            ("last step", report.table.y[last], report.p[last], "s--"),
        ):
            bins = reliability_bins(y, p)
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], style, ms=4,
                    label=f"{label} (ECE {expected_calibration_error(y, p):.3f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(correct)", ylabel="fraction correct",
               title=f"{report.key}\n({report.evaluation}, {len(set(report.table.trace.tolist()))} traces)")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def auroc_by_fraction(reports: list[RecipeReport], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(reports), figsize=(4.2 * len(reports), 4.0), squeeze=False)
    xs = [f * 100 for f in FRACTIONS]
    for ax, report in zip(axes[0], reports, strict=True):
        rows = report.rows[: len(FRACTIONS)]
        for signal in SIGNALS:
            ys = [row[signal.name]["auroc"] for row in rows]
            ax.plot(xs, ys, "o-", color=COLOURS[signal.name], lw=2.2 if signal.name == "calibrated" else 1.2,
                    label=signal.label, ms=4)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set(xticks=xs, ylim=(0.35, 1.0), xlabel="% of the trace's steps seen", ylabel="ROC-AUC",
               title=report.key)
        ax.title.set_fontsize(9)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def entropy_curves(signatures: dict[str, dict[str, Any]], path: Path) -> Path:
    """Top row: mean entropy per step with 95% bands; bottom row: curves resampled to relative position."""
    names = list(signatures)
    fig, axes = plt.subplots(2, len(names), figsize=(3.8 * len(names), 6.4), squeeze=False)
    for column, name in enumerate(names):
        signature = signatures[name]
        top, bottom = axes[0][column], axes[1][column]
        for label, colour in (("correct", "#2ca02c"), ("wrong", "#d62728")):
            points = signature["curves"][label]
            if points:
                steps = [p["step"] for p in points]
                top.plot(steps, [p["mean"] for p in points], color=colour, label=label)
                top.fill_between(steps, [p["low"] for p in points], [p["high"] for p in points], color=colour,
                                 alpha=0.2)
            relative = signature["relative_curves"][label]
            if relative:
                bottom.plot([i * 10 for i in range(len(relative))], relative, color=colour, label=label)
        monotone = signature["monotone_decreasing"]
        model, _, benchmark = name.partition(" / ")
        top.set(title=f"{benchmark} ({model.removeprefix('qwen2.5-coder-')})\nmean answer entropy, 95% band",
                xlabel="step", ylabel="entropy (bits; choice: / log2 n)")
        top.title.set_fontsize(9)
        p_value = monotone["fisher_p"]
        bottom.set(title=f"monotone: {monotone['share_among_correct']:.0%} of correct vs "
                   f"{monotone['share_among_wrong']:.0%} of wrong (p={_p(p_value)})",
                   xlabel="% of the trace", ylabel="mean entropy")
        bottom.title.set_fontsize(8)
        top.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _p(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2g}"

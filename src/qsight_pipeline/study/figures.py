"""The study's figures: test QWK against qubit count, and against the number of training images
(the few-data question), per contender, with interval bands."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from qsight_pipeline.study.summary import best_by_validation

CIRCUIT_CONTENDERS = ("quantum", "classical_twin", "frozen_circuit", "no_entanglement")
COLOURS = {"quantum": "tab:purple", "classical_twin": "tab:blue", "frozen_circuit": "tab:gray",
           "no_entanglement": "tab:red", "head_b": "tab:green", "logistic": "tab:orange"}


def _per_width(entries: list[dict[str, Any]], contender: str) -> list[dict[str, Any]]:
    """At each qubit count, the contender's setting with the best validation QWK."""
    widths = sorted({e["n_qubits"] for e in entries if e["contender"] == contender})
    chosen = []
    for width in widths:
        same = [e for e in entries if e["contender"] == contender and e["n_qubits"] == width]
        chosen.append(best_by_validation(same)[contender])
    return chosen


def _band(axes: Any, contender: str, x: list[Any], qwk: list[dict[str, float]],
          alpha: float) -> None:
    """The contender's mean test QWK as a line through ``x``, with its interval as a band."""
    colour = COLOURS[contender]
    axes.plot(x, [q["mean"] for q in qwk], "o-", color=colour, label=contender)
    axes.fill_between(x, [q["low"] for q in qwk], [q["high"] for q in qwk],
                      color=colour, alpha=alpha)


def _finish(axes: Any, title: str) -> None:
    """What both figures share: the QWK axis label, the small title, the legend and the grid."""
    axes.set_ylabel("test quadratic weighted kappa")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)


def qwk_vs_qubits(summary: dict[str, Any]) -> Figure:
    """Lines with confidence bands for the circuit-shaped contenders; the baselines, which have
    no qubit count, as horizontal bands."""
    entries = summary["settings"]
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.subplots()
    widths = sorted({e["n_qubits"] for e in entries if e["n_qubits"] is not None}) or [0, 1]
    for contender in CIRCUIT_CONTENDERS:
        points = _per_width(entries, contender)
        if not points:
            continue
        _band(axes, contender, [p["n_qubits"] for p in points],
              [p["test"]["qwk"] for p in points], alpha=0.2)
    for contender in ("head_b", "logistic"):
        entry = best_by_validation([e for e in entries if e["contender"] == contender])
        if contender in entry:
            qwk = entry[contender]["test"]["qwk"]
            colour = COLOURS[contender]
            axes.axhline(qwk["mean"], color=colour, linestyle="--", label=contender)
            axes.axhspan(qwk["low"], qwk["high"], color=colour, alpha=0.12)
    axes.set_xticks(widths)
    axes.set_xlabel("qubits (width of the projection)")
    _finish(axes, f"Test QWK, mean and {summary['confidence']:.0%} interval over "
            f"{len(summary['seeds'])} seeds (setting and learning rate chosen on validation)")
    return figure


def qwk_vs_training_images(summary: dict[str, Any]) -> Figure:
    """Each contender's best setting (chosen on validation at that share) against the number of
    training images, log scale, with interval bands; the caveat of cached features as a note."""
    fractions = summary["few_data"]["fractions"]
    figure = Figure(figsize=(7, 4.8), layout="constrained")
    axes = figure.subplots()
    contenders = [c for c in COLOURS if any(c in f["best"] for f in fractions)]
    for contender in contenders:
        points = [(f["n_train"], f["best"][contender]["test_qwk"]) for f in fractions
                  if contender in f["best"]]
        _band(axes, contender, [n for n, _ in points], [q for _, q in points], alpha=0.15)
    axes.set_xscale("log")
    ticks = [f["n_train"] for f in fractions]
    axes.set_xticks(ticks, [f"{n}\n({f['train_fraction']:.0%})" for n, f in zip(ticks, fractions,
                                                                               strict=True)])
    axes.minorticks_off()
    axes.set_xlabel("training images seen by the head (share of the training split)\n"
                    "cached features: the encoder saw the whole training split; only the head "
                    "sees fewer images", fontsize=9)
    _finish(axes, f"Test QWK against training-set size, mean and {summary['confidence']:.0%} "
            f"interval over {len(summary['seeds'])} seeds (best setting on validation)")
    return figure


def study_figures(summary: dict[str, Any]) -> dict[str, Figure]:
    """``{file name: figure}`` for the catalog's figure folder."""
    figures = {"test_qwk_vs_qubits.png": qwk_vs_qubits(summary)}
    if len((summary.get("few_data") or {}).get("fractions") or []) > 1:
        figures["test_qwk_vs_training_images.png"] = qwk_vs_training_images(summary)
    return figures

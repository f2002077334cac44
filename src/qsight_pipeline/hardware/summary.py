"""The summary of the hardware table (with its one-sentence headline) and its figures."""

from __future__ import annotations

import math
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from qsight_pipeline.config.quantum_hardware import QuantumHardwareParams

GROUP = ("condition", "device", "shots", "mitigation")
_SUMMARISED = (
    "qwk", "accuracy", "macro_f1", "agreement_with_exact", "z_mae",
    "ensemble_qwk", "ensemble_referral_sensitivity", "ensemble_referral_specificity",
)


def _plain(value: Any) -> Any:
    if value is None:
        return None
    try:
        if isinstance(value, float | np.floating) and math.isnan(value):
            return None
    except TypeError:
        pass
    if value is not None and hasattr(value, "item"):
        value = value.item()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _mean_std(values: Any) -> dict[str, float | None]:
    numbers = np.asarray([v for v in values if _plain(v) is not None], dtype=np.float64)
    if numbers.size == 0:
        return {"mean": None, "std": None}
    return {"mean": float(numbers.mean()), "std": float(numbers.std(ddof=1)) if numbers.size > 1 else 0.0}


def twin_reference(study_summary: dict[str, Any] | None, n_qubits: int) -> dict[str, Any] | None:
    """The classical twin of the same width in ``quantum_study_summary.json`` (best on
    validation among those settings), or ``None`` when there is no study or no such twin."""
    if not study_summary:
        return None
    twins = [e for e in study_summary.get("settings", []) if e.get("contender") == "classical_twin"]
    same = [e for e in twins if e.get("n_qubits") == n_qubits]
    pool = same or twins
    if not pool:
        return None
    best = max(pool, key=lambda e: (e.get("val_qwk") or {}).get("mean") or -1.0)
    return {
        "label": best.get("label"),
        "n_qubits": best.get("n_qubits"),
        "same_width": bool(same),
        "test_qwk": ((best.get("test") or {}).get("qwk") or {}).get("mean"),
    }


def summarise(
    table: Any, context: dict[str, Any], params: QuantumHardwareParams,
    study_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    exact_rows = table[table["condition"] == "exact"]
    exact = {m: _plain(exact_rows.iloc[0][m]) for m in _SUMMARISED} if len(exact_rows) else {}
    exact_qwk = exact.get("qwk")
    conditions = []
    for key, rows in table[table["condition"] != "exact"].groupby(list(GROUP), sort=False, dropna=False):
        entry: dict[str, Any] = {name: _plain(value) for name, value in zip(GROUP, key, strict=True)}
        entry["shots"] = None if entry["shots"] is None else int(entry["shots"])
        entry["seeds"] = len(rows)
        for metric in _SUMMARISED:
            entry[metric] = _mean_std(rows[metric])
        qwk = entry["qwk"]["mean"]
        entry["qwk_kept"] = qwk / exact_qwk if qwk is not None and exact_qwk else None
        for column in ("qpu_seconds_per_1000_images", "success_probability", "depth",
                       "two_qubit_gates", "circuit_duration_us"):
            entry[column] = _plain(rows[column].iloc[0])
        conditions.append(entry)
    twin = twin_reference(study_summary, context["n_qubits"])
    summary = {
        "split": context["split"],
        "n_images": context["n_images"],
        "n_qubits": context["n_qubits"],
        "seeds": sorted(int(s) for s in table["seed"].dropna().unique()),
        "ensemble_available": context["ensemble"],
        "exact": exact,
        "devices": context.get("devices", {}),
        "conditions": conditions,
        "classical_twin": twin,
        "parameters": params.to_dict(),
    }
    summary["headline"] = headline(summary, params)
    return summary


def _headline_entry(summary: dict[str, Any], params: QuantumHardwareParams) -> dict | None:
    device_rows = [c for c in summary["conditions"] if c["condition"] == "device"]
    if not device_rows:
        return None
    device = params.headline_device or params.devices[0]
    rows = [c for c in device_rows if c["device"] == device] or device_rows
    shots = min({c["shots"] for c in rows}, key=lambda s: abs(s - params.headline_shots))
    rows = [c for c in rows if c["shots"] == shots]
    preferred = [c for c in rows if c["mitigation"] == params.headline_mitigation]
    return (preferred or rows)[0]


def headline(summary: dict[str, Any], params: QuantumHardwareParams) -> str:
    """One sentence: how much of the exact test QWK the head keeps on the named device."""
    exact_qwk = summary["exact"].get("qwk")
    entry = _headline_entry(summary, params)
    split = summary["split"]
    if entry is None:
        ideal = [c for c in summary["conditions"] if c["condition"] == "ideal"]
        if not ideal:
            return f"The quantum head reaches {split} QWK {exact_qwk:.3f} exactly; no sampled condition ran."
        entry = ideal[-1]
        return (
            f"With ideal sampling at {entry['shots']:,} shots the quantum head reaches {split} QWK "
            f"{entry['qwk']['mean']:.3f} against {exact_qwk:.3f} exactly."
        )
    qwk = entry["qwk"]["mean"]
    mitigation = "no mitigation" if entry["mitigation"] == "none" else f"{entry['mitigation']} mitigation"
    if exact_qwk and exact_qwk > 0:
        kept = f"keeps {100 * qwk / exact_qwk:.0f}% of its exact {split} QWK ({qwk:.3f} of {exact_qwk:.3f}"
    else:
        kept = f"reaches {split} QWK {qwk:.3f} (exact {exact_qwk:.3f}"
    sentence = (
        f"On {entry['device']} at {entry['shots']:,} shots with {mitigation}, the quantum head "
        f"{kept}, mean of {entry['seeds']} seed(s); about "
        f"{entry['qpu_seconds_per_1000_images']:.0f} QPU seconds per 1,000 images)"
    )
    twin = summary.get("classical_twin")
    if twin and twin.get("test_qwk") is not None:
        width = "" if twin.get("same_width") else " (another width)"
        sentence += f"; its classical twin{width} reaches {twin['test_qwk']:.3f}"
    else:
        sentence += "; no quantum study summary to compare with the classical twin"
    return sentence + "."


# --------------------------------------------------------------------------- figures


def figures(table: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """``{"qwk_vs_shots.png": figure}``: QWK against shots per device (one panel each), a line
    per mitigation (mean and +-1 sd over seeds), ideal sampling, exact and twin reference lines."""
    conditions = summary["conditions"]
    devices = [d for d in dict.fromkeys(c["device"] for c in conditions if c["condition"] == "device")]
    panels = devices or ["ideal"]
    figure = Figure(figsize=(5 * len(panels), 4))  # no pyplot: nothing global to close
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)
    exact_qwk = summary["exact"].get("qwk")
    twin = summary.get("classical_twin") or {}
    for axis, device in zip(axes[0], panels, strict=True):
        series: dict[str, list[dict]] = {}
        for c in conditions:
            if c["condition"] == "ideal":
                series.setdefault("ideal sampling", []).append(c)
            elif c["device"] == device:
                series.setdefault(c["mitigation"], []).append(c)
        for label, entries in series.items():
            entries = sorted(entries, key=lambda c: c["shots"])
            shots = [c["shots"] for c in entries]
            mean = np.array([c["qwk"]["mean"] for c in entries], dtype=float)
            std = np.array([c["qwk"]["std"] or 0.0 for c in entries], dtype=float)
            style = "--" if label == "ideal sampling" else "-"
            axis.plot(shots, mean, style, marker="o", label=label)
            axis.fill_between(shots, mean - std, mean + std, alpha=0.15)
        if exact_qwk is not None:
            axis.axhline(exact_qwk, color="black", linewidth=1, label="exact")
        if twin.get("test_qwk") is not None:
            axis.axhline(twin["test_qwk"], color="grey", linestyle=":", label="classical twin")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("shots")
        axis.set_title(device)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{summary['split']} QWK (quantum head alone)")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return {"qwk_vs_shots.png": figure}


def circuit_figures(circuits: dict[str, Any]) -> dict[str, Any]:
    """``{"circuit_<device>.png": figure}``: each device's transpiled circuit (idle wires hidden)."""
    matplotlib.use("Agg")  # qiskit draws through pyplot: never a window
    drawn = {}
    for device, prepared in circuits.items():
        drawn[f"circuit_{device}.png"] = prepared.isa.draw(
            "mpl", idle_wires=False, fold=40, scale=0.6
        )
    return drawn

"""The Streamlit page: upload a fundus photograph, see its grade and the evidence for it.

Run through ``python -m qsight_pipeline.app`` (which passes ``--output-dir`` and ``--device``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from qsight_pipeline.app.upload import decode_upload, upload_limit
from qsight_pipeline.constants import GRADE_NAMES
from qsight_pipeline.errors import UserError
from qsight_pipeline.inference import LoadedModel, load_model, predict_image
from qsight_pipeline.inference.predict import gate_reasons, overlay_image

HEAD_LABELS = {"head_a": "Head A (classical)", "head_b": "Head B (classical)",
               "quantum_head": "Quantum head", "ensemble": "Ensemble"}


@st.cache_resource
def _model(output_dir: str, device: str) -> LoadedModel:
    return load_model(output_dir, device=device)


@st.cache_resource
def _upload_limit(project: str) -> tuple[int, str]:
    return upload_limit(Path(project))


def _probability_table(result) -> pd.DataFrame:
    rows = {HEAD_LABELS[h]: probs for h, probs in result.head_probabilities.items()}
    rows[HEAD_LABELS["ensemble"]] = result.ensemble_probabilities
    return pd.DataFrame(rows, index=list(GRADE_NAMES)).T.map(lambda p: f"{p:.3f}")


def _show(loaded: LoadedModel, name: str, photograph: np.ndarray) -> None:
    result = predict_image(loaded, photograph, heatmap=True)
    threshold = loaded.referral.get("threshold", 0.5)
    reasons = gate_reasons(result)
    if reasons:  # the gate stopped it: no grade is given, whatever the model says
        st.subheader("Not graded: refer for manual grading")
        st.markdown(
            "Referral decision: **REFER FOR MANUAL GRADING**. This photograph failed the gate "
            "(gradable: " + ("no" if result.gradable is False else "yes") + ", like the training "
            "photographs: " + ("no" if result.in_distribution is False else "yes") + "):"
        )
        st.markdown("\n".join(f"- {reason}" for reason in reasons))
        st.caption(
            f"The model's own reading, for the human grader only: grade {result.grade} "
            f"({result.grade_name}), P(grade ≥ 2) = {result.referable_probability:.3f} against the "
            f"threshold {threshold:.3f} chosen on validation."
        )
    else:
        st.subheader(f"Grade {result.grade}: {result.grade_name}")
        decision = "REFER" if result.refer else "no referral"
        st.markdown(
            f"Referral decision: **{decision}** (P(grade ≥ 2) = {result.referable_probability:.3f}, "
            f"threshold {threshold:.3f} chosen on validation)"
        )
        if loaded.gates is None:
            st.caption("This model was saved without the gradability gate: the photograph was "
                       "not checked. Re-run `kedro run --pipelines ensemble` to fit it.")
    review = loaded.referral.get("review_entropy_threshold")
    st.markdown(
        f"Uncertainty: entropy **{result.entropy:.3f}** nats, head disagreement "
        f"{result.disagreement:.4f}. Needs review: **{'yes' if result.needs_review else 'no'}**"
        + (f" (review above entropy {review:.3f})" if review is not None else "")
    )
    st.markdown("**Probabilities per head and for the ensemble** (calibrated)")
    st.table(_probability_table(result))
    st.markdown("**Gate weights**")
    st.table(pd.DataFrame(
        {"weight": [f"{result.gate_weights[h]:.3f}" for h in result.gate_weights]},
        index=[HEAD_LABELS[h] for h in result.gate_weights],
    ))
    left, right = st.columns(2)
    left.image(photograph, caption=name, width="stretch")
    right.image(overlay_image(photograph, result.heatmap), caption="Grad-CAM heatmap",
                width="stretch")
    st.caption(f"Latency {result.latency_ms['total']:.1f} ms on {loaded.device}.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(sys.argv[1:])
    st.set_page_config(page_title="QSight: grade a fundus photograph")
    st.title("QSight: grade one fundus photograph")
    st.caption(f"Model: {args.output_dir}. A research prototype, not a medical device.")
    try:
        loaded = _model(args.output_dir, args.device)
    except UserError as error:  # a missing, damaged or crafted file: its one message, no trace
        st.error(f"Cannot load the model: {error}")
        return
    max_pixels, where = _upload_limit(str(Path.cwd()))
    st.caption(f"Photographs over {max_pixels:,} pixels are refused ({where}).")
    upload = st.file_uploader("Fundus photograph (JPEG or PNG)")
    if upload is None:
        return
    try:
        photograph = decode_upload(upload.getvalue(), max_pixels)
    except ValueError as error:
        reason = str(error).rstrip(".")
        st.error(f"Cannot grade {upload.name}: {reason}. Upload a fundus photograph.")
        return
    _show(loaded, upload.name, photograph)


main()

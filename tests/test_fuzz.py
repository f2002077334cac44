"""Property-based fuzzing: every input ends in a valid result or a UserError, never another
exception (hypothesis; few examples each, so the file runs in seconds)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from qsight_pipeline.constants import NUM_GRADES
from qsight_pipeline.data.image_cache import load_image
from qsight_pipeline.data.layouts.tanlikesmath import _read_labels_csv
from qsight_pipeline.errors import UserError
from qsight_pipeline.training.stages import Stage, parse_stages

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _ends_well(call):
    """Run ``call``; a UserError is a fine ending, anything else propagates and fails."""
    try:
        return call()
    except UserError as error:
        assert str(error), "a user error must say what is wrong"
        return None


# --------------------------------------------------------------------------- labels CSV

cells = st.one_of(st.text(max_size=8), st.integers(-3, 9).map(str), st.sampled_from(["", " 2 ", "4.0", "nan"]))
rows = st.lists(st.lists(cells, min_size=0, max_size=4), max_size=6)


@FUZZ
@given(header=st.sampled_from(["image,level", "level,image", "image", "img,lvl", "", "image,level,x"]),
       rows=rows, junk=st.binary(max_size=40))
def test_labels_csv_parser(header, rows, junk):
    text = header + "\n" + "\n".join(",".join(f'"{c}"' if "," in c else c for c in row) for row in rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trainLabels.csv"
        path.write_bytes(text.encode("utf-8", "surrogatepass") + junk)
        labels = _ends_well(lambda: _read_labels_csv(path))
    if labels is not None:
        assert list(labels.columns) == ["image", "level"]
        assert labels["level"].between(0, NUM_GRADES - 1).all()


# --------------------------------------------------------------------------- stage schedule

values = st.one_of(st.none(), st.booleans(), st.integers(-5, 50), st.floats(allow_nan=True),
                   st.text(max_size=6), st.lists(st.integers(-1, 2), max_size=4))
stage_keys = st.sampled_from(["name", "num_epochs", "learning_rate", "weight_decay", "patience",
                              "active_mask", "loss_weights", "trainable", "grad_accum_steps", "zzz"])
stages = st.one_of(
    st.dictionaries(stage_keys, values, max_size=7),
    st.fixed_dictionaries({"name": st.sampled_from(["classical", "quantum", "ensemble", "x"]),
                           "num_epochs": st.integers(-1, 3),
                           "learning_rate": st.floats(-1, 1, allow_nan=False)},
                          optional={"active_mask": st.lists(st.integers(0, 1), max_size=4),
                                    "loss_weights": st.dictionaries(st.sampled_from(
                                        ["classical_a", "quantum", "ensemble", "bogus"]), values),
                                    "trainable": st.lists(st.sampled_from(
                                        ["encoder", "head_a", "quantum_head", "ensemble", "x"]))}),
)
schedules = st.one_of(st.lists(stages, max_size=3), values,
                      st.dictionaries(st.sampled_from(["stages", "other"]), st.lists(stages, max_size=2)))


@FUZZ
@given(raw=schedules)
def test_stage_schedule_parser(raw):
    parsed = _ends_well(lambda: parse_stages(raw))
    if parsed is not None:
        assert parsed and all(isinstance(stage, Stage) and stage.num_epochs >= 1 for stage in parsed)


# --------------------------------------------------------------------------- image loader


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


VALID_PNG = _png_bytes()


@FUZZ
@given(data=st.one_of(
    st.binary(max_size=200),
    # A real PNG with bytes flipped or cut: truncated and corrupt files.
    st.tuples(st.integers(0, len(VALID_PNG) - 1), st.binary(min_size=1, max_size=8)).map(
        lambda edit: VALID_PNG[: edit[0]] + edit[1] + VALID_PNG[edit[0] + len(edit[1]):]),
    st.integers(0, len(VALID_PNG)).map(lambda n: VALID_PNG[:n]),
), suffix=st.sampled_from([".png", ".jpeg", ".jpg"]))
def test_image_loader(data, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"image{suffix}"
        path.write_bytes(data)
        pixels = _ends_well(lambda: load_image(path, 16, max_pixels=1_000_000))
    if pixels is not None:
        assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8

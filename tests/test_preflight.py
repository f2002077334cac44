"""Folders and weights are checked before the first node, with messages that name the setting."""

from __future__ import annotations

import os

import pytest

from qsight_pipeline.config import validate_parameters
from qsight_pipeline.errors import UserError
from qsight_pipeline.kedro_app import preflight
from qsight_pipeline.kedro_app.preflight import PreflightError

MODEL = {"encoder_type": "resnet", "encoder_name": "test_resnet", "pretrained": False,
         "pretrained_weights": None}


def check_run_environment(parameters, pipeline_names):
    """The check the run checks make, on the typed parameters (``run`` keys given at the top)."""
    run = {key: parameters[key] for key in ("output_dir", "checkpoint_dir") if key in parameters}
    typed = validate_parameters({"run": run, "model": parameters["model"]})
    preflight.check_run_environment(typed, pipeline_names)


def test_an_output_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("not a folder")
    with pytest.raises(PreflightError) as info:
        check_run_environment({"output_dir": str(target), "model": MODEL}, ["__default__"])
    assert "`run.output_dir`" in str(info.value) and str(target) in str(info.value)
    assert isinstance(info.value, UserError)
    with pytest.raises(PreflightError, match=r"`run\.checkpoint_dir`.*results\.txt"):
        check_run_environment({"output_dir": str(tmp_path / "out"), "model": MODEL,
                               "checkpoint_dir": str(target / "ckpt")}, ["classical"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_dir_is_refused(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    with pytest.raises(PreflightError, match=r"`run\.output_dir`.*locked"):
        check_run_environment({"output_dir": str(folder), "model": MODEL}, ["quantum"])


def test_folders_are_created_and_predict_does_not_need_them(tmp_path):
    check_run_environment({"output_dir": str(tmp_path / "a" / "b"), "model": MODEL}, ["ensemble"])
    assert (tmp_path / "a" / "b").is_dir()
    check_run_environment({"output_dir": str(tmp_path / "x.txt"), "model": MODEL}, ["predict"])


def test_a_missing_local_weights_file_is_refused(tmp_path):
    model = {**MODEL, "pretrained_weights": str(tmp_path / "vit.safetensors")}
    with pytest.raises(PreflightError, match=r"`model\.pretrained_weights`.*vit\.safetensors"):
        check_run_environment({"model": model}, ["classical"])


def test_pretrained_weights_that_cannot_be_downloaded_fail_before_ingestion(monkeypatch):
    model = {**MODEL, "pretrained": True}
    monkeypatch.setattr(preflight, "_in_download_cache", lambda name: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PreflightError) as info:
        check_run_environment({"model": model}, ["__default__"])
    message = str(info.value)
    assert "`model.pretrained: true`" in message and "`model.pretrained_weights`" in message
    assert "HF_HUB_OFFLINE" in message
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(preflight, "_download_host_reachable", lambda: False)
    with pytest.raises(PreflightError, match=r"huggingface\.co"):
        check_run_environment({"model": model}, ["classical"])
    monkeypatch.setattr(preflight, "_in_download_cache", lambda name: True)
    assert preflight.check_pretrained_weights(model) == "cache"
    # The quantum and ensemble pipelines never build an encoder: no weights needed.
    monkeypatch.setattr(preflight, "_in_download_cache", lambda name: False)
    check_run_environment({"model": model}, ["quantum", "ensemble"])

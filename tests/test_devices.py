"""Device fallbacks on a machine without GPUs: every GPU request degrades with a clear log line."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from qsight_pipeline.errors import ConfigError
from qsight_pipeline.training.devices import (
    autocast_enabled,
    maybe_data_parallel,
    parse_device_ids,
    resolve_device,
)
from qsight_pipeline.training.trainer import TrainerSettings


def _warnings(caplog) -> list[tuple]:
    """The arguments of the records logged, which must all be warnings of the devices module."""
    records = [r for r in caplog.records if r.name == "qsight_pipeline.training.devices"]
    assert len(records) == len(caplog.records) and {r.levelno for r in records} == {logging.WARNING}
    return [r.args for r in records]


def _one_warning(caplog) -> tuple:
    (args,) = _warnings(caplog)
    return args


def test_device_strings(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    with caplog.at_level(logging.WARNING):
        assert resolve_device("cuda:1") == torch.device("cpu")
    assert _one_warning(caplog) == ("cuda:1",)
    with pytest.raises(ValueError, match="`device`"):
        resolve_device("gpu1")


def test_cuda_index_is_kept_or_clamped_when_gpus_exist(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("CUDA") == torch.device("cuda")
    with caplog.at_level(logging.WARNING):
        assert resolve_device("cuda:3") == torch.device("cuda", 0)
    assert _one_warning(caplog) == ("cuda:3", 2, 1)


def test_device_ids_forms():
    assert parse_device_ids("0,1") == [0, 1]
    assert parse_device_ids([2, 3]) == [2, 3]
    assert parse_device_ids(1) == [1]
    assert parse_device_ids(None) is None
    with pytest.raises(ValueError, match="device_ids"):
        parse_device_ids("a,b")


def test_data_parallel_on_cpu_warns_and_returns_the_model(caplog):
    model = nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING):
        wrapped = maybe_data_parallel(model, True, [0, 1], torch.device("cpu"))
    assert wrapped is model
    assert _one_warning(caplog) == (torch.device("cpu"),)
    assert maybe_data_parallel(model, False, None, torch.device("cpu")) is model


def test_data_parallel_with_fewer_gpus_than_asked(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    model = nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING):
        wrapped = maybe_data_parallel(model, True, "0,1,2", torch.device("cuda", 0))
    assert wrapped is model
    assert _warnings(caplog) == [([1, 2], 1, [0]), (1,)]  # the GPUs dropped, then the fallback


def test_mixed_precision_on_cpu_is_logged_off(caplog):
    with caplog.at_level(logging.WARNING):
        assert autocast_enabled(True, torch.device("cpu")) is False
    assert _one_warning(caplog) == (torch.device("cpu"),)
    caplog.clear()
    assert autocast_enabled(None, torch.device("cpu")) is False
    assert caplog.text == ""  # the default is quiet
    assert autocast_enabled(None, torch.device("cuda")) is True
    assert autocast_enabled(False, torch.device("cuda")) is False


def test_trainer_settings_from_run_parameters():
    params = {
        "seed": 7,
        "grad_clip": 0,
        "device": "cuda:1",
        "multi_gpu": True,
        "device_ids": [0, 1],
        "mixed_precision": False,
        "latency_tracking": False,
        "checkpoint_dir": "/tmp/ck",
        "batch_size": 16,
    }
    settings = TrainerSettings.from_params(params)
    assert (settings.seed, settings.grad_clip, settings.device) == (7, 0, "cuda:1")
    assert settings.multi_gpu and settings.device_ids == [0, 1]
    assert settings.mixed_precision is False and settings.latency_tracking is False
    with pytest.raises(ConfigError, match=r"run\.grad_clip"):
        TrainerSettings.from_params({"grad_clip": -1})
    with pytest.raises(ConfigError, match=r"run\.optimizer"):
        TrainerSettings.from_params({"optimizer": "adam"})


def test_device_ids_from_the_command_line_forms():
    from qsight_pipeline.training.devices import parse_device_ids

    # `kedro run --params` splits on commas, so spaces and semicolons separate ids too.
    assert parse_device_ids("0 1") == parse_device_ids("0;1") == parse_device_ids("[0,1]") == [0, 1]
    assert parse_device_ids(3) == [3]


# --- one rule for `device` and `device_ids`, checked before the run (issue 18, item 9) ---------

GOOD_DEVICES = ["auto", "cpu", "mps", "cuda", "cuda:0", "cuda:12", "CUDA:1", " cpu "]
BAD_DEVICES = ["cuda:abc", "cuda:", "cuda:-1", "gpu", "gpu1", "cpu:0", "mps:1", "auto:0", ""]


@pytest.mark.parametrize("device", GOOD_DEVICES)
def test_the_device_rule_accepts_the_documented_forms(device, monkeypatch):
    from qsight_pipeline.config import PredictParams, validate_parameters
    from qsight_pipeline.config.devices import parse_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    parse_device(device)
    assert validate_parameters({"run": {"device": device}}).run.device == device  # kept as written
    assert PredictParams(device=device).device == device
    assert resolve_device(device).type in ("cpu", "mps")  # no CUDA here: a logged fallback


@pytest.mark.parametrize("device", BAD_DEVICES)
def test_a_malformed_device_is_refused_by_the_run_checks_and_by_resolve_device(device):
    from qsight_pipeline.config import validate_parameters
    from qsight_pipeline.errors import ConfigError, UserError

    with pytest.raises(ConfigError) as caught:
        validate_parameters({"run": {"device": device}, "predict": {"device": device}})
    lines = str(caught.value).splitlines()
    for key in ("run.device", "predict.device"):  # one line each, naming the value given
        named = [line for line in lines if line.startswith(f"  {key}:")]
        assert len(named) == 1 and repr(device) in named[0]
    with pytest.raises(UserError, match="^`device`") as caught:
        resolve_device(device)
    assert repr(device) in str(caught.value)


def test_resolve_device_takes_torch_devices():
    assert resolve_device(torch.device("cpu", 0)) == torch.device("cpu")


@pytest.mark.parametrize(
    ("device_ids", "ids"),
    [(None, None), ("", None), (1, [1]), ([0, 1], [0, 1]), ("0,1", [0, 1]), ("0 1", [0, 1]),
     ("0;1", [0, 1]), ("[0, 1]", [0, 1]), (" 2 ", [2])],
)
def test_the_device_ids_rule_accepts_the_documented_forms(device_ids, ids):
    from qsight_pipeline.config import validate_parameters

    assert parse_device_ids(device_ids) == ids
    assert validate_parameters({"run": {"device_ids": device_ids}}).run.device_ids == device_ids


@pytest.mark.parametrize(
    "device_ids",
    ["x", "x y", "0,a", "-1", [0, -1], [0, "a"], ["0"], "1.5", 1.5, True, [True], {"a": 0}],
)
def test_malformed_device_ids_are_refused_by_the_run_checks_and_by_the_parser(device_ids):
    from qsight_pipeline.config import validate_parameters
    from qsight_pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        validate_parameters({"run": {"device_ids": device_ids}})
    assert "\n  run.device_ids:" in str(caught.value)
    with pytest.raises(ConfigError, match="^`device_ids`"):
        parse_device_ids(device_ids)

"""The typed configuration: one source of defaults, every error at once, nodes take typed blocks."""

from __future__ import annotations

import logging
import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from qsight_pipeline.config import QSightParameters, validate_parameters
from qsight_pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def base_parameters() -> dict:
    merged: dict = {}
    for path in sorted((ROOT / "conf" / "base").glob("parameters*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    # resolved by Kedro from globals.yml
    merged["run"]["output_dir"] = yaml.safe_load(
        (ROOT / "conf/base/globals.yml").read_text())["output_dir"]
    return merged


def leaf_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        # A block that may be null (``Block | None``) lists its own keys too.
        blocks = [a for a in (typing.get_args(annotation) or (annotation,))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if blocks:
            keys |= leaf_keys(blocks[0], f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def test_base_yaml_equals_the_models_defaults():
    """conf/base holds exactly the models' defaults: one source, no drift."""
    assert validate_parameters(base_parameters()).model_dump() == QSightParameters().model_dump()


@pytest.mark.parametrize("env", ["smoke", "tanlikesmath", "sovitrath"])
def test_every_environment_validates(env: str):
    merged = base_parameters()
    for path in sorted((ROOT / "conf" / env).glob("parameters*.yml")):
        for key, value in (yaml.safe_load(path.read_text()) or {}).items():
            merged[key] = {**merged[key], **value} if isinstance(value, dict) else value
    validate_parameters(merged)


def test_readme_configuration_table_lists_every_key_and_only_real_ones():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n\n", 2)[1]
    names = re.findall(r"`([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)`", table)
    listed = {name for name in names if not name.endswith((".onnx", ".json", ".yml", ".csv"))}
    known = leaf_keys(QSightParameters)
    missing = known - listed
    assert not missing, f"README configuration table misses {sorted(missing)}"
    unknown = {key for key in listed if "." in key} - known  # globals.yml's `output_dir` aside
    assert not unknown, f"README lists keys that do not exist: {sorted(unknown)}"


def test_every_problem_in_every_block_is_reported_at_once():
    bad = {
        **base_parameters(),
        "run": {**base_parameters()["run"], "batchsize": 8, "seed": "42"},
        "augmentation": {"hue": 3.0, "rotation": 5},
        "ingestion": {"on_bad_image": "ignore"},
        "quantum": {"n_qubits": 40},
        "tracking": {"wandb": {"projet": "x"}},
        "predict": {"batch_size": 0},
    }
    with pytest.raises(ConfigError) as error:
        validate_parameters(bad)
    message = str(error.value)
    for line in (
        "run.batchsize: unknown key",
        "run.seed: Input should be a valid integer, got '42'",
        "augmentation.hue: Input should be less than or equal to 0.5, got 3.0",
        "augmentation.rotation: unknown key",
        "ingestion.on_bad_image: Input should be 'fail' or 'skip', got 'ignore'",
        "quantum.n_qubits: Input should be less than or equal to 16, got 40",
        "tracking.wandb.projet: unknown key",
        "predict.batch_size: Input should be greater than or equal to 1, got 0",
    ):
        assert line in message
    # Pinned: the opening of the list of every invalid parameter (the lines above are pinned too).
    assert message.startswith("8 invalid parameter(s)")


def test_training_nodes_take_typed_blocks_not_the_whole_parameter_dict():
    from kedro.framework.project import find_pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(ROOT)
    pipelines = find_pipelines(raise_errors=True)
    for name in ("classical", "features", "quantum", "ensemble", "predict", "ingestion"):
        for node in pipelines[name].nodes:
            if node.name == "ensemble.summarise_training":
                continue  # records the run's configuration in training_summary.json
            assert "parameters" not in node.inputs, (name, node.name)
    schedule_nodes = {n.name for p in pipelines.values() for n in p.nodes if "run_config" in n.outputs}
    assert schedule_nodes == {"resolve_run_settings"}


@pytest.mark.slow
def test_kedro_run_with_bad_parameters_fails_before_any_node_with_every_problem(kedro_project):
    result = kedro_project.run(
        params={
            "batchsize": "8",
            "augmentation.hue": "3.0",
            "tracking.wandb.projet": "x",
            "ingestion.max_workers": "2",
        },
        check=False,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error: 4 invalid parameter(s)" in output
    for key in ("batchsize", "augmentation.hue", "tracking.wandb.projet", "ingestion.max_workers"):
        assert f"  {key}: " in output
    assert "Traceback (most recent call last)" not in output
    written = [p for p in (kedro_project.path / "data").rglob("*") if p.is_file()
               and "01_raw" not in p.parts and p.name != ".gitkeep"]
    assert written == [], "no node may run"


# --- `--params` into a list (issue 18, item 9): `stages.0.learning_rate=...` --------------------

def load_parameters(env: str, runtime_params: dict) -> dict:
    """``conf/<env>`` merged over conf/base with ``runtime_params``, as ``kedro run`` loads it."""
    from qsight_pipeline.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    return CONFIG_LOADER_CLASS(
        str(ROOT / "conf"), env=env, runtime_params=runtime_params, **CONFIG_LOADER_ARGS
    )["parameters"]


def test_a_params_override_sets_one_field_of_one_stage_and_the_schema_checks_it():
    from qsight_pipeline.kedro_app.run_checks import check_parameters

    # What `kedro run --env smoke --params run.stages.0.learning_rate=1000` passes to the loader.
    parameters = load_parameters("smoke", {"run": {"stages": {"0": {"learning_rate": 1000}}}})
    smoke = yaml.safe_load((ROOT / "conf/smoke/parameters.yml").read_text())["run"]["stages"]
    assert parameters["run"]["stages"] == [{**smoke[0], "learning_rate": 1000}, *smoke[1:]]
    check_parameters(parameters)  # a large rate, but a valid one

    bad = load_parameters("smoke", {"run": {"stages": {"0": {"learning_rate": -1}}}})
    with pytest.raises(ConfigError, match="`learning_rate`"):
        check_parameters(bad)
    nested = load_parameters("smoke", {"run": {"stages": {"1": {"loss_weights": {"quantum": 0.5}}}},
                                       "quantum_study": {"n_qubits": {"1": 4}}})
    assert nested["run"]["stages"][1]["loss_weights"]["quantum"] == 0.5
    assert nested["quantum_study"]["n_qubits"] == [2, 4]
    assert load_parameters("smoke", {"quantum": {"n_qubits": 5}})["quantum"]["n_qubits"] == 5


@pytest.mark.parametrize(
    ("env", "runtime_params", "why"),
    [
        ("smoke", {"run": {"stages": {"3": {"learning_rate": 0.1}}}},
         "--params run.stages.3.learning_rate=0.1: `run.stages` has 3 item(s), indices 0 to 2."),
        # conf/base has `run.stages: null`: the schedule comes from run.stages_config.
        ("local", {"run": {"stages": {"0": {"learning_rate": 0.1}}}},
         "--params run.stages.0.learning_rate=0.1: `run.stages` is not set (null), so there is "
         "no list to index into."),
        ("smoke", {"run": {"stages": {"name": "x"}}}, "--params run.stages.name=x cannot be merged"),
        # The old top-level name is read as run.stages, and the message names the new key.
        ("smoke", {"stages": {"3": {"learning_rate": 0.1}}},
         "--params run.stages.3.learning_rate=0.1: `run.stages` has 3 item(s), indices 0 to 2."),
    ],
)
def test_a_params_override_that_cannot_be_applied_is_an_error_that_says_how(
    env, runtime_params, why
):
    from qsight_pipeline.errors import ParameterError

    with pytest.raises(ParameterError) as caught:
        load_parameters(env, runtime_params)
    message = str(caught.value)
    assert message.startswith(why)
    if "stages." in why:
        assert "`run.stages`" in message and "conf/local/parameters.yml" in message
        assert "run.stages_config=FILE" in message  # the other way out


# --- the `run` block and the old top-level names of its keys ---------------------------------

def test_the_old_top_level_names_still_work_on_the_command_line_and_in_files(tmp_path, caplog):
    import shutil

    from qsight_pipeline.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    # The old CLI's `--params seed=7,stages.0.learning_rate=0.5` sets run.seed and run.stages.
    with caplog.at_level(logging.WARNING):
        parameters = load_parameters(
            "smoke", {"seed": 7, "stages": {"0": {"learning_rate": 0.5}}, "output_dir": "out/x"}
        )
    assert "seed" not in parameters and "stages" not in parameters
    assert parameters["run"]["seed"] == 7 and parameters["run"]["output_dir"] == "out/x"
    assert parameters["run"]["stages"][0]["learning_rate"] == 0.5
    assert parameters["run"]["batch_size"] == 32  # conf/smoke's, kept
    told = _moved_names(caplog)
    assert told == [("--params", "`seed`, `output_dir`, `stages`")]

    # A conf/local file in the old form wins over conf/base, and the command line's run.* wins
    # over both; the catalog's artifact folder follows the old --params output_dir too.
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    (conf / "local" / "parameters.yml").write_text("seed: 5\nbatch_size: 4\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        loader = CONFIG_LOADER_CLASS(
            str(conf), env="local", runtime_params={"run": {"seed": 9}, "output_dir": "out/y"},
            **CONFIG_LOADER_ARGS,
        )
        parameters = loader["parameters"]
        catalog = loader["catalog"]
    assert parameters["run"]["seed"] == 9 and parameters["run"]["batch_size"] == 4
    assert "seed" not in parameters and "batch_size" not in parameters
    assert catalog["complete_checkpoint"]["filepath"] == "out/y/complete_checkpoint.pth"
    assert any(where.endswith("local/parameters.yml") and names == "`seed`, `batch_size`"
               for where, names in _moved_names(caplog))
    validate_parameters(parameters)  # the moved keys are valid keys of the run block


def _moved_names(caplog) -> list[tuple[str, str]]:
    """(where, the old names) of each warning the config loader logged about old names."""
    return [r.args[:2] for r in caplog.records
            if r.name == "qsight_pipeline.kedro_app.config_loader" and r.levelno == logging.WARNING]


def _local_conf(tmp_path, files: dict[str, str]):
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    for name, text in files.items():
        (conf / "local" / name).write_text(text)
    return conf


def test_a_run_key_given_both_ways_in_one_source_is_refused(tmp_path):
    from qsight_pipeline.errors import ParameterError
    from qsight_pipeline.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    with pytest.raises(ParameterError, match=r"^--params.*`seed`.*`run\.seed`"):
        load_parameters("smoke", {"seed": 7, "run": {"seed": 8}})
    conf = _local_conf(tmp_path, {"parameters.yml": "seed: 2\nrun:\n  seed: 1\n"})
    with pytest.raises(ParameterError, match=r"local/parameters\.yml.*`seed`"):
        CONFIG_LOADER_CLASS(str(conf), env="local", **CONFIG_LOADER_ARGS)["parameters"]
    # In two files of one environment it is the same key twice, as Kedro refuses any other.
    conf = _local_conf(tmp_path / "two", {"parameters.yml": "batch_size: 4\n",
                                          "parameters_more.yml": "run:\n  batch_size: 8\n"})
    with pytest.raises(ValueError, match=r"run\.batch_size"):
        CONFIG_LOADER_CLASS(str(conf), env="local", **CONFIG_LOADER_ARGS)["parameters"]


def test_an_old_file_that_interpolates_a_run_key_still_resolves(tmp_path):
    from qsight_pipeline.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    conf = _local_conf(tmp_path, {"parameters.yml": (
        "output_dir: outputs/exp\ncheckpoint_dir: ${output_dir}/ckpt\n"
        "quantum:\n  seed: ${seed}\nseed: 5\n")})
    parameters = CONFIG_LOADER_CLASS(str(conf), env="local", **CONFIG_LOADER_ARGS)["parameters"]
    assert parameters["run"]["checkpoint_dir"] == "outputs/exp/ckpt"
    assert parameters["quantum"]["seed"] == 5


def test_a_run_key_at_the_top_level_of_the_typed_model_is_unknown():
    # The loader moves the old names; the typed model itself knows only the `run` block.
    with pytest.raises(ConfigError, match=r"\n  seed:"):
        validate_parameters({"seed": 3})
    assert validate_parameters({"run": {"seed": 3}}).run.seed == 3


def test_a_bad_value_is_named_once_with_its_value_once():
    with pytest.raises(ConfigError) as error:
        validate_parameters({"referral": {"target_sensitivity": 1.5}})
    line = next(row for row in str(error.value).splitlines() if "target_sensitivity" in row)
    assert line.count("referral.target_sensitivity") == 1 and line.count("got 1.5") == 1
    assert line.strip().startswith("referral.target_sensitivity:")  # the key first
    with pytest.raises(ConfigError) as error:  # pydantic's own bound: the key is put first
        validate_parameters({"quantum_study": {"hardware": {"device": "fake_torino", "shots": 0}}})
    (line,) = [row for row in str(error.value).splitlines() if "shots" in row]
    assert line.strip().startswith("quantum_study.hardware.shots:") and line.endswith("got 0")


def test_every_rule_is_one_pydantic_message_per_key_and_allowed_values_are_shared():
    with pytest.raises(ConfigError) as error:
        validate_parameters({
            "quantum_study": {"n_qubits": [2, 4, 2], "hardware": {"device": "fake_torino",
                                                                 "mitigation": "mthree"}},
            "quantum_hardware": {"mitigation": ["none", "mthree"], "zne": {"scale_factors": [1, 2]}},
            "referral": {"review_fraction": 1.0},
        })
    lines = [line.strip() for line in str(error.value).splitlines()[1:]]
    allowed = "Input should be 'none', 'readout', 'zne' or 'readout_zne', got 'mthree'"
    assert lines == [
        "quantum_study.n_qubits: lists 2 more than once",
        f"quantum_study.hardware.mitigation: {allowed}",
        f"quantum_hardware.mitigation.1: {allowed}",
        "quantum_hardware.zne.scale_factors: must be odd (gate folding scales the noise by 1, 3, 5, ...), got [2]",
        "referral.review_fraction: Input should be less than 1, got 1.0",
    ]

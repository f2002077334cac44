"""Kedro's config loader, with ``--params`` overrides that index into a list.

``kedro run --params stages.0.learning_rate=1e-3`` reaches the config loader as
``{"stages": {"0": {"learning_rate": 0.001}}}``, and Kedro's OmegaConf merge of that mapping
into the ``stages`` list fails with ``TypeError: Cannot merge incompatible container types`` and a
page of traceback. :class:`QSightConfigLoader` (``settings.CONFIG_LOADER_CLASS``) takes such
overrides out of Kedro's merge and applies them to the merged parameters itself: a numeric key
indexes into a list (``stages.0.learning_rate`` is the first stage's learning rate, which the
stage schema then validates with the rest of the schedule). An index past the end of the list,
or a list that is not there (``stages: null``, the schedule coming from ``stages_config``), is a
:class:`~qsight_pipeline.errors.ParameterError` naming the key and saying how to change the
schedule instead. Any other override that cannot be merged is a ParameterError too, not a
traceback, and so is ``${oc.env:VAR}`` in any file but a credentials file (which OmegaConf refuses
with a page of traceback): the message names the file and the key.

The run-wide settings live in the ``run`` block (``run.seed``, ``run.batch_size``, ...). Their old
top-level names still work, in a parameters file (``seed: 7``) and on the command line
(``--params seed=7``, ``--params stages.0.learning_rate=...``): the loader moves them into
``run`` (:func:`qsight_pipeline.config.run.move_run_keys`) and logs one line naming the new keys.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from qsight_pipeline.config.run import RUN_KEYS, move_run_keys
from qsight_pipeline.errors import ParameterError

logger = logging.getLogger(__name__)

# Kedro 1.7's OmegaConfigLoader, which this loader extends, registers its `globals` and
# `runtime_params` resolvers with OmegaConf.register_new_resolver, deprecated in OmegaConf 2.4: a
# UserWarning of several lines on every command, about code that is Kedro's, not ours. Hidden by its
# message and Kedro's module only, until Kedro calls OmegaConf.register_resolver.
warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning,
    module=r"kedro\.config\.omegaconf_config",
)

__all__ = ["QSightConfigLoader", "apply_overrides", "split_index_overrides"]

Path_ = tuple[str, ...]  # the keys of one --params override, e.g. ("stages", "0", "learning_rate")

_HOW_TO_CHANGE_STAGES = (
    "To change a stage, give the whole schedule: a `run.stages` list in conf/local/parameters.yml "
    "(or conf/<env>/parameters.yml), or a JSON file passed with `--params run.stages_config=FILE`; "
    "once `run.stages` is a list, `--params run.stages.<index>.<field>=<value>` changes one field."
)


def _leaves(tree: Mapping[str, Any], prefix: Path_ = ()) -> list[tuple[Path_, Any]]:
    leaves: list[tuple[Path_, Any]] = []
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            leaves.extend(_leaves(value, path))
        else:
            leaves.append((path, value))
    return leaves


def _insert(tree: dict[str, Any], path: Path_, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def split_index_overrides(
    runtime_params: Mapping[str, Any],
) -> tuple[dict[str, Any], list[tuple[Path_, Any]]]:
    """``(the overrides Kedro can merge, [(path, value) of those with a numeric key])``."""
    plain: dict[str, Any] = {}
    indexed: list[tuple[Path_, Any]] = []
    for path, value in _leaves(runtime_params):
        if any(key.isdigit() for key in path[1:]):
            indexed.append((path, value))
        else:
            _insert(plain, path, value)
    return plain, indexed


def _dotted(path: Path_) -> str:
    return ".".join(path)


def _names_stages(path: Path_) -> bool:
    return path[:1] == ("stages",) or path[:2] == ("run", "stages")


def _refuse(path: Path_, value: Any, why: str) -> ParameterError:
    hint = f" {_HOW_TO_CHANGE_STAGES}" if _names_stages(path) else ""
    return ParameterError(f"--params {_dotted(path)}={value}: {why}.{hint}")


def apply_overrides(parameters: dict[str, Any], overrides: list[tuple[Path_, Any]]) -> None:
    """Set each ``(path, value)`` in ``parameters``; a numeric key indexes into a list."""
    for path, value in overrides:
        node: Any = parameters
        for depth, key in enumerate(path):
            last = depth == len(path) - 1
            where = _dotted(path[:depth]) or "the parameters"
            if isinstance(node, list):
                if not key.isdigit():
                    raise _refuse(path, value, f"`{where}` is a list; index it with a number")
                index = int(key)
                if index >= len(node):
                    size = (f"has {len(node)} item(s), indices 0 to {len(node) - 1}" if node
                            else "is an empty list")
                    raise _refuse(path, value, f"`{where}` {size}")
            elif isinstance(node, dict):
                index = key
                if key not in node and key.isdigit() and int(key) in node:
                    index = int(key)  # a YAML mapping with integer keys
                if not last and node.get(index) is None:
                    if path[depth + 1].isdigit():
                        what = "not set (null)" if index in node else "not set"
                        raise _refuse(
                            path, value,
                            f"`{_dotted(path[:depth + 1])}` is {what}, so there is no list to "
                            "index into",
                        )
                    node[index] = {}
            else:
                raise _refuse(
                    path, value, f"`{where}` is {node!r}, not a list or a mapping",
                )
            if last:
                node[index] = value
            else:
                node = node[index]


def _tell_moved(moved: list[str], where: str) -> None:
    logger.warning(
        "%s: %s %s the old top-level name of %s; read as such. The old names keep working; "
        "rename them to the `run` block (`run: {%s: ...}` in a parameters file, "
        "`--params run.%s=...` on the command line).",
        where, ", ".join(f"`{n}`" for n in moved), "is" if len(moved) == 1 else "are",
        ", ".join(f"`run.{n}`" for n in moved), moved[0], moved[0],
    )


# `${seed}` or `${output_dir}/ckpt` in an old file: the key now lives under `run`.
_OLD_INTERPOLATION = re.compile(r"\$\{(" + "|".join(RUN_KEYS) + r")(?=[}.\[])")


def _follow_moved_keys(value: Any) -> Any:
    if isinstance(value, str):
        return _OLD_INTERPOLATION.sub(r"${run.\1", value)
    if isinstance(value, dict):
        return {key: _follow_moved_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_follow_moved_keys(item) for item in value]
    return value


def _moved_in_file(config: DictConfig, path: Path) -> tuple[DictConfig, list[str]]:
    """One parameters file with its old top-level run-wide keys moved into ``run`` (and its
    interpolations of them, ``${seed}``, pointed at ``${run.seed}``)."""
    if not isinstance(config, DictConfig):
        return config, []
    plain = OmegaConf.to_container(config, resolve=False)  # interpolations stay as written
    moved = move_run_keys(plain, where=str(path))
    followed = _follow_moved_keys(plain)
    if not moved and followed == plain:
        return config, []
    return OmegaConf.create(followed), moved


_ENV_INTERPOLATION = re.compile(r"\$\{oc\.env:([^,}]*)[^}]*\}")


def _env_interpolation(tree: Any, prefix: Path_ = ()) -> tuple[Path_, str] | None:
    """``(key, value)`` of the first value of ``tree`` that reads ``${oc.env:...}``, or None."""
    if isinstance(tree, str):
        return (prefix, tree) if _ENV_INTERPOLATION.search(tree) else None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        found = _env_interpolation(value, (*prefix, str(key)))
        if found:
            return found
    return None


def check_no_env_interpolation(key: str, config_per_file: Mapping[Path, Any]) -> None:
    """Kedro reads environment variables (``${oc.env:VAR}``) in credentials files only; anywhere
    else OmegaConf fails with a page of traceback that names neither the file nor the way out."""
    if key == "credentials" or OmegaConf.has_resolver("oc.env"):
        return
    for path, config in config_per_file.items():
        plain = OmegaConf.to_container(config, resolve=False) if isinstance(config, DictConfig) else config
        found = _env_interpolation(plain)
        if found is None:
            continue
        where, value = found
        shown = Path(path)
        if shown.is_absolute() and shown.is_relative_to(Path.cwd()):
            shown = shown.relative_to(Path.cwd())
        expanded = _ENV_INTERPOLATION.sub(r"$\1", value)
        command_line = (
            ", or give it on the command line, where the shell expands it: `kedro run --params "
            f"{_dotted(where)}={expanded}`" if key == "parameters" else ""
        )
        raise ParameterError(
            f"{shown}: `{_dotted(where)}` is {value!r}, which reads an environment variable; "
            "Kedro reads environment variables only in credentials files "
            f"(conf/<env>/credentials*.yml), not in a {key} file. Write the value itself into "
            f"{shown}{command_line}."
        )


class QSightConfigLoader(OmegaConfigLoader):
    """``OmegaConfigLoader`` whose ``--params`` may index into lists (``run.stages.0.learning_rate``),
    whose ``--params`` that cannot be merged are a ParameterError, not a traceback, and which
    reads the run-wide keys' old top-level names as keys of the ``run`` block."""

    def __init__(
        self, conf_source: str | Path, env: str | None = None,
        runtime_params: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        # Before Kedro keeps them, so that `${runtime_params:run.output_dir}` in the catalog also
        # follows the old `--params output_dir=...`.
        runtime_params = dict(runtime_params or {})
        moved = move_run_keys(runtime_params, where="--params")
        self._told: set[str] = set()
        super().__init__(conf_source, env=env, runtime_params=runtime_params, **kwargs)
        if moved:
            self._tell_once(moved, "--params")

    def _tell_once(self, moved: list[str], where: str) -> None:
        if where not in self._told:
            self._told.add(where)
            _tell_moved(moved, where)

    def _merge_and_resolve(self, key: str, config_per_file: dict[Path, DictConfig]) -> dict[str, Any]:
        # Kedro merges one environment's files here (then base with env, softly): moving the old
        # names file by file keeps Kedro's precedence, conf/local over conf/base, --params over all.
        check_no_env_interpolation(key, config_per_file)
        if key == "parameters":
            config_per_file = dict(config_per_file)
            for path, config in config_per_file.items():
                config_per_file[path], moved = _moved_in_file(config, path)
                if moved:
                    self._tell_once(moved, str(path))
            # Kedro refused a key set in two files of one environment before the move; a key
            # written `run.seed` in one file and `seed` in another is the same key: refused too.
            self._check_duplicates(key, config_per_file)
        return super()._merge_and_resolve(key, config_per_file)

    def __getitem__(self, key: str) -> dict[str, Any]:
        if key != "parameters" or not self.runtime_params:
            return super().__getitem__(key)
        full = self.runtime_params
        plain, indexed = split_index_overrides(full)
        self.runtime_params = plain
        try:
            parameters = super().__getitem__(key)
        except (TypeError, OmegaConfBaseException) as error:
            leaves = _leaves(plain)
            given = ",".join(f"{_dotted(path)}={value}" for path, value in leaves)
            hint = f" {_HOW_TO_CHANGE_STAGES}" if any(_names_stages(p) for p, _ in leaves) else ""
            raise ParameterError(
                f"--params {given} cannot be merged into the parameters ({error}). Each "
                "--params key=value sets one setting: a key inside a block (quantum.n_qubits=6) "
                f"or one item of a list by its index (run.stages.0.learning_rate=0.001).{hint}"
            ) from error
        finally:
            self.runtime_params = full
        apply_overrides(parameters, indexed)
        return parameters

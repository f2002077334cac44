"""The folders a run reads and writes, checked before anything is written.

- ``run.output_dir`` and ``run.checkpoint_dir`` are folders of the user's, never a file and never
  a folder of the system (``/``, ``/dev``, ``/proc``, ``/sys``, ``/etc``, ``/usr`` ..., or the
  home folder itself): :func:`check_output_folders`, when the context is created, before the run
  locks write into them.
- A folder a run reads (``dataset.root``, ``predict.input_dir``, ``evaluate.dataset.root``, each
  only when a node of this run reads its block) is not a folder of the kernel (``/proc``,
  ``/sys``, ``/dev``), can be read, and neither holds nor lies inside a folder the run writes: the
  folders of the catalog entries its nodes write, ``run.output_dir`` and ``run.checkpoint_dir``
  (:func:`check_run_folders`). Otherwise heatmaps overwrite the photographs they were made from,
  and the next run reads its own outputs as inputs.

Paths are compared resolved (symbolic links followed); relative ones start at the project folder,
as Kedro's catalog reads them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from qsight_pipeline.config import QSightParameters
from qsight_pipeline.kedro_app.preflight import PreflightError, check_not_a_file

# Folders of the system, refused as output folders with everything inside them ...
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
    "/sys", "/usr", "/System", "/Library", "/private/etc",
)
# ... and folders refused themselves (what is inside them may be the user's).
SYSTEM_FOLDERS = (
    "/", "/home", "/root", "/var", "/opt", "/srv", "/mnt", "/media", "/run", "/private",
    "/private/var", "/Users", "/Volumes", "/Applications",
)
# Folders of the kernel, refused as input folders: their files are not photographs.
KERNEL_TREES = ("/dev", "/proc", "/sys")

# The folders a pipeline reads: (its parameter block, the setting, its value).
READ_FOLDERS: tuple[tuple[str, str, Callable[[QSightParameters], str]], ...] = (
    ("dataset", "dataset.root", lambda p: p.dataset.root),
    ("predict", "predict.input_dir", lambda p: p.predict.input_dir),
    ("evaluate", "evaluate.dataset.root", lambda p: p.evaluate.dataset.root),
)


def absolute(value: Any, project: Path) -> Path:
    """``value`` as an absolute, normalised path (``~`` expanded, relative to ``project``)."""
    path = Path(str(value)).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else project / path))


def _within(path: Path, trees: Iterable[str]) -> str | None:
    text = path.as_posix()
    return next((tree for tree in trees if text == tree or text.startswith(tree + "/")), None)


def system_folder(path: Path) -> str | None:
    """How ``path`` (as written or resolved) is a folder of the system: ``"is the system folder
    /"``, ``"lies inside the system folder /usr"``, ``"is your home folder itself"``; None for a
    folder of the user's."""
    home = Path.home()
    for candidate in dict.fromkeys((path, path.resolve())):
        if candidate in (home, home.resolve()):
            return f"is your home folder ({home}) itself"
        if candidate.as_posix() in SYSTEM_FOLDERS:
            return f"is the system folder {candidate.as_posix()}"
        tree = _within(candidate, SYSTEM_TREES)
        if tree:
            where = "is" if candidate.as_posix() == tree else "lies inside"
            return f"{where} the system folder {tree}"
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_folders(parameters: QSightParameters, project: Path) -> None:
    """``run.output_dir`` and ``run.checkpoint_dir`` are neither system folders nor files.

    A folder inside the project is the project's, wherever the project lies (``/usr/src/app``).
    """
    run = parameters.run
    for setting, value in (("run.output_dir", run.output_dir),
                           ("run.checkpoint_dir", run.checkpoint_dir)):
        if value in (None, ""):
            continue
        path = absolute(value, project)
        system = None if _inside(path.resolve(), project.resolve()) else system_folder(path)
        if system is not None:
            raise PreflightError(
                f"`{setting}` is {str(value)!r}, which {system}; a run writes its lock, its "
                "model and its temporary files into this folder. Point "
                f"{setting} at a folder of your own, e.g. `kedro run --params "
                f"{setting}=outputs/my_run`."
            )
        check_not_a_file(path, setting)


def _reads(pipeline: Any, block: str) -> bool:
    names = pipeline.inputs()
    return any(name == f"params:{block}" or name.startswith(f"params:{block}.") for name in names)


def _dataset_folder(config: Any) -> str | None:
    """The local folder a catalog entry writes into: its ``path``, or its ``filepath``'s parent
    (the ``filepath`` itself when versioned); None for memory and remote datasets."""
    while isinstance(config, dict):
        for key in ("path", "filepath"):
            value = config.get(key)
            if isinstance(value, str) and value and "://" not in value:
                if key == "path" or config.get("versioned"):
                    return value
                return str(PurePosixPath(value).parent)
        config = config.get("dataset")
    return None


def written_folders(parameters: QSightParameters, pipeline: Any, catalog: Any,
                    project: Path) -> dict[Path, str]:
    """``{resolved folder: what the run writes there}``: ``run.output_dir``,
    ``run.checkpoint_dir`` and the folder of every catalog entry a node of ``pipeline`` writes."""
    folders: dict[Path, str] = {}
    for setting, value in (("run.output_dir", parameters.run.output_dir),
                           ("run.checkpoint_dir", parameters.run.checkpoint_dir)):
        if value:
            folders.setdefault(absolute(value, project).resolve(), f"`{setting}`")
    resolver = getattr(catalog, "config_resolver", None)
    if resolver is None:
        return folders
    for name in sorted(pipeline.all_outputs()):
        folder = _dataset_folder(resolver.resolve_pattern(name))
        if folder:
            folders.setdefault(absolute(folder, project).resolve(), f"`{name}`")
    return folders


def _check_readable(setting: str, value: str, path: Path) -> None:
    kernel = _within(path, KERNEL_TREES) or _within(path.resolve(), KERNEL_TREES)
    if kernel is not None:
        where = "is" if kernel in (path.as_posix(), path.resolve().as_posix()) else "lies inside"
        raise PreflightError(
            f"`{setting}` is {value!r}, which {where} {kernel}, a folder of the operating system "
            f"whose files are not photographs. Point {setting} at a folder of photographs: "
            f"`kedro run --params {setting}=/path/to/photographs`."
        )
    if path.is_dir() and not os.access(path, os.R_OK | os.X_OK):
        raise PreflightError(
            f"`{setting}` is {value!r}, a folder that cannot be read (permission denied). Give "
            f"yourself read access to it, or point {setting} at another folder."
        )


def _check_apart(setting: str, value: str, path: Path, folder: Path, what: str) -> None:
    """``path`` (read through ``setting``) and ``folder`` (written, ``what``) do not overlap."""
    read = path.resolve()
    if read == folder:
        relation = ""
    elif folder in read.parents:
        relation = f" which lies inside {folder},"
    elif read in folder.parents:
        relation = f" which holds {folder},"
    else:
        return
    shown = repr(value) if read.as_posix() == str(value) else f"{value!r} ({read})"
    change = f" (or change {what})" if what.startswith("`run.") else ""
    raise PreflightError(
        f"`{setting}` is {shown},{relation} where this run writes {what}: the run would "
        "overwrite what it reads, or read its own outputs. Keep inputs and outputs apart: point "
        f"{setting} at a folder outside the run's output folders{change}."
    )


def check_output_dir_agrees(parameters: QSightParameters, catalog: Any, project: Path) -> None:
    """``run.output_dir`` is where the catalog puts the model: a value written in a parameters
    file (not through ``globals.yml`` or ``--params``) would move the parameter but not the
    files, and the run's checks and locks would guard another folder than the one written."""
    resolver = getattr(catalog, "config_resolver", None)
    if resolver is None or not parameters.run.output_dir:
        return
    folder = _dataset_folder(resolver.resolve_pattern("model_info"))
    configured = absolute(parameters.run.output_dir, project).resolve()
    if folder is None or absolute(folder, project).resolve() == configured:
        return
    raise PreflightError(
        f"`run.output_dir` is {parameters.run.output_dir!r}, but the catalog writes the model to "
        f"{folder}: a parameters file sets run.output_dir without moving the catalog's files. "
        "Set `output_dir` in conf/<env>/globals.yml instead (conf/local/globals.yml for your "
        "own machine), or pass `--params run.output_dir=...`; both move the parameter and the files."
    )


def check_run_folders(parameters: QSightParameters, pipeline: Any, catalog: Any,
                      project: Path) -> None:
    """``run.output_dir`` agrees with the catalog, and each folder ``pipeline`` reads is a
    readable folder of photographs, apart from every folder the run writes."""
    if pipeline is None:  # a bare hook in a test
        return
    check_output_dir_agrees(parameters, catalog, project)
    reads = [(setting, value(parameters)) for block, setting, value in READ_FOLDERS
             if _reads(pipeline, block)]
    if not reads:
        return
    written = written_folders(parameters, pipeline, catalog, project)
    for setting, value in reads:
        path = absolute(value, project)
        _check_readable(setting, value, path)
        for folder, what in written.items():
            _check_apart(setting, value, path, folder, what)

"""What a run may write and delete (qsight_pipeline.files.storage): journaled temporary files that are
the only thing the clean-up removes, outputs committed together or not at all, data before its
lineage record, one clear line on a full disk, and model_info.json that must match its checkpoint.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qsight_pipeline.files import lineage, storage
from qsight_pipeline.kedro_app.datasets import AtomicDataset, NpyDataset, TorchDataset
from qsight_pipeline.kedro_app.user_errors import find_user_error
from tests.conftest import plant_look_alikes

HERE_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _killed_writer(folder: Path, names: list[str]) -> list[Path]:
    """A process SIGKILLed while it writes ``names`` under ``folder``; returns what it left."""
    code = (
        "import os, sys, threading, time\n"
        "from qsight_pipeline.files.storage import atomic_write\n"
        "def stall(handle):\n"
        "    handle.write(b'half'); handle.flush(); os.write(1, b'writing\\n'); time.sleep(60)\n"
        f"for name in {names!r}:\n"
        f"    threading.Thread(target=atomic_write, args=({str(folder)!r} + '/' + name, stall),"
        " daemon=True).start()\n"
        "time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], env=HERE_ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        for _ in names:
            assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.kill()
        writer.wait()
    return sorted(p for p in folder.rglob(".*") if storage.TEMP_NAME.match(p.name)
                  and p.read_text() == "half")


@pytest.mark.slow  # starts a Python subprocess
def test_the_clean_up_removes_what_a_killed_run_left_and_nothing_else(tmp_path):
    out = tmp_path / "u"
    look_alikes = plant_look_alikes(out) + plant_look_alikes(out / "notes")
    left = _killed_writer(out, ["model_info.json", "sub/quantum_head.pth"])
    assert len(left) == 2

    outside = storage.recover([tmp_path / "elsewhere"])  # not the folder it wrote to: untouched
    assert outside.removed == [] and all(path.exists() for path in left)

    report = storage.recover([out])
    assert sorted(report.removed) == left
    assert not any(path.exists() for path in left)
    assert all(path.read_text() == "mine" for path in look_alikes)
    assert not (out / "model_info.json").exists()  # the interrupted write never landed
    assert storage.recover([out]).removed == []  # the journal is gone once handled


@pytest.mark.slow  # starts a Python subprocess
def test_the_clean_up_keeps_entries_outside_its_folders_for_a_later_run(tmp_path):
    left = _killed_writer(tmp_path, ["a/x.json", "b/y.json"])
    assert [p.parent.name for p in storage.recover([tmp_path / "a"]).removed] == ["a"]
    assert [p.parent.name for p in storage.recover([tmp_path / "b"]).removed] == ["b"]
    assert not any(path.exists() for path in left)


def test_a_live_process_journal_is_not_touched(tmp_path):
    with storage.writing(tmp_path / "model.json") as tmp:
        tmp.write_text("{}")
        assert storage.recover([tmp_path]).removed == []  # our own journal: still writing
        assert tmp.exists()
    assert (tmp_path / "model.json").read_text() == "{}"


def test_outputs_are_committed_together_or_not_at_all(tmp_path):
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text("old")
    with storage.transaction([tmp_path]):
        storage.atomic_write(tmp_path / "a.json", lambda h: h.write(b"new"))
        assert (tmp_path / "a.json").read_text() == "old"  # staged, not yet visible
        assert storage.readable_path(tmp_path / "a.json").read_text() == "new"  # but readable
        storage.atomic_write(tmp_path / "b.json", lambda h: h.write(b"new"))
    assert [(tmp_path / n).read_text() for n in ("a.json", "b.json")] == ["new", "new"]

    with pytest.raises(RuntimeError), storage.transaction([tmp_path]):
        storage.atomic_write(tmp_path / "a.json", lambda h: h.write(b"newer"))
        raise RuntimeError("the run fails after the first output")
    assert [(tmp_path / n).read_text() for n in ("a.json", "b.json")] == ["new", "new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_unstaged_writes_and_excluded_folders_land_at_once(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    storage.begin([tmp_path], exclude=[checkpoints])
    try:
        storage.atomic_write(tmp_path / "classical.pth", lambda h: h.write(b"x"), staged=False)
        storage.atomic_write(checkpoints / "epoch_1.pth", lambda h: h.write(b"x"))
        storage.atomic_write(tmp_path / "summary.json", lambda h: h.write(b"x"))
        assert (tmp_path / "classical.pth").exists() and (checkpoints / "epoch_1.pth").exists()
        assert not (tmp_path / "summary.json").exists()
    finally:
        storage.end(commit=False)
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.slow  # starts a Python subprocess
def test_a_kill_during_the_commit_is_rolled_forward(tmp_path):
    code = (
        "import os\n"
        "from qsight_pipeline.files import storage\n"
        f"folder = {str(tmp_path)!r}\n"
        "with storage.transaction([folder]):\n"
        "    for name in ('a.json', 'b.json', 'c.json'):\n"
        "        storage.atomic_write(folder + '/' + name, lambda h: h.write(b'new'))\n"
        "    real = os.replace\n"
        "    calls = []\n"
        "    def dying(src, dst):\n"
        "        calls.append(src)\n"
        "        if len(calls) == 2: os._exit(9)  # killed between two renames of the commit\n"
        "        real(src, dst)\n"
        "    os.replace = dying\n"
    )
    for name in ("a.json", "b.json", "c.json"):
        (tmp_path / name).write_text("old")
    assert subprocess.run([sys.executable, "-c", code], env=HERE_ENV).returncode == 9
    assert sorted((tmp_path / n).read_text() for n in ("a.json", "b.json", "c.json")) == [
        "new", "old", "old"]
    report = storage.recover([tmp_path])
    assert len(report.rolled_forward) == 2
    assert [(tmp_path / n).read_text() for n in ("a.json", "b.json", "c.json")] == ["new"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "c.json"]


class _FullDisk:
    """A file object that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, handle, room: int) -> None:
        self._handle, self._room = handle, room

    def write(self, data) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()


@pytest.mark.parametrize("room", [0, 3000])
def test_a_full_disk_is_one_clear_error_and_the_old_file_survives(tmp_path, monkeypatch, room):
    import torch

    target = tmp_path / "complete_checkpoint.pth"
    TorchDataset(str(target)).save({"w": torch.zeros(4)})
    real_fdopen = os.fdopen
    monkeypatch.setattr(storage.os, "fdopen",
                        lambda fd, mode: _FullDisk(real_fdopen(fd, mode), room))
    with pytest.raises(Exception) as info:  # Kedro wraps it in a DatasetError
        TorchDataset(str(target)).save({"w": torch.ones(100_000)})
    error = find_user_error(info.value)  # what `kedro run` prints as its one `Error:` line
    assert isinstance(error, storage.DiskFullError)
    message = str(error)
    assert f"No space left on device while writing {target}" in message
    assert "\n" not in message and "inline_container" not in message
    assert "weights_only" not in message
    monkeypatch.undo()
    assert torch.equal(TorchDataset(str(target)).load()["w"], torch.zeros(4))
    assert [p.name for p in tmp_path.iterdir()] == ["complete_checkpoint.pth"]


# --------------------------------------------------------------------------- data, then record

SPLITS = ("train", "val", "test")


class _Killed(BaseException):
    pass


def _ingest(folder: Path, ingestion: str, value: int, kill_at: int | None) -> None:
    """Save three image caches and the manifest as ingestion does, SIGKILL-like at step
    ``kill_at`` (every rename or removal of a file is a step)."""
    steps = itertools.count()

    def step() -> None:
        if next(steps) == kill_at:
            raise _Killed

    real_place, real_write_sidecar = storage._place, lineage.write_sidecar

    def place(tmp, target, staged=True):
        step()
        real_place(tmp, target, staged)

    def write_sidecar(path, record):
        if record is None and lineage.sidecar_path(path).exists():
            step()
        real_write_sidecar(path, record)

    storage._place, lineage.write_sidecar = place, write_sidecar
    try:
        for split in SPLITS:
            array = np.full((2, 4, 4, 3), value, dtype=np.uint8)
            NpyDataset(str(folder / f"image_cache_{split}.npy")).save(
                lineage.tag(array, {"ingestion_id": ingestion}))
        _manifest(folder).save(pd.DataFrame({"image_id": ["1"], "ingestion_id": [ingestion]}))
    except _Killed:
        pass
    finally:
        storage._place, lineage.write_sidecar = real_place, real_write_sidecar


def _manifest(folder: Path) -> AtomicDataset:
    return AtomicDataset(str(folder / "manifest.csv"), {
        "type": "pandas.CSVDataset", "load_args": {"dtype": str}, "save_args": {"index": False}})


def test_a_kill_at_any_save_point_of_ingestion_never_mixes_two_ingestions(tmp_path):
    """Step 1: a complete ingestion; step 2: another one (seed 7) killed at save point i; step 3:
    the first one again, killed at save point j. Every later reader either refuses the caches
    or reads exactly the pixels of the ingestion the manifest names."""
    values = {"ing-A": 1, "ing-B": 2}
    outcomes = {"refused": 0, "consistent": 0}
    for first_kill, second_kill in itertools.product(range(11), repeat=2):
        folder = tmp_path / f"{first_kill}_{second_kill}"
        _ingest(folder, "ing-A", 1, None)
        _ingest(folder, "ing-B", 2, first_kill)
        _ingest(folder, "ing-A", 1, second_kill)
        manifest = _manifest(folder).load()
        caches = {s: NpyDataset(str(folder / f"image_cache_{s}.npy")).load() for s in SPLITS}
        try:
            ingestion = lineage.check_image_caches(manifest, caches)
        except lineage.LineageError:
            outcomes["refused"] += 1
            continue
        assert all(np.all(np.asarray(c) == values[ingestion]) for c in caches.values()), (
            first_kill, second_kill)
        outcomes["consistent"] += 1
    assert outcomes["refused"] > 0 and outcomes["consistent"] > 0


# --------------------------------------------------------------------------- the model's files


@pytest.fixture
def trained_folder(smoke_project, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(smoke_project.data("06_models/trained_model"), folder)
    return folder


def test_an_edited_model_info_is_refused_naming_both_files(trained_folder):
    from qsight_pipeline.errors import ArtifactError
    from qsight_pipeline.inference.loading import load_model

    honest = load_model(trained_folder)
    info_path = trained_folder / "model_info.json"
    info = json.loads(info_path.read_text())
    info["calibration"]["temperatures"] = {k: 0.02 for k in info["calibration"]["temperatures"]}
    info["calibration"]["referral"]["threshold"] = 0.0
    info_path.write_text(json.dumps(info, indent=2))
    with pytest.raises(ArtifactError) as error:
        load_model(trained_folder)
    message = str(error.value)
    assert str(info_path) in message and str(trained_folder / "complete_checkpoint.pth") in message
    assert "calibration." in message

    info_path.unlink()  # without the readable copy, the checkpoint's own copy is used
    assert load_model(trained_folder).temperatures == honest.temperatures


def test_a_summary_from_another_run_is_refused(trained_folder):
    from qsight_pipeline.errors import ArtifactError
    from qsight_pipeline.inference.loading import load_model

    summary_path = trained_folder / "training_summary.json"
    summary = json.loads(summary_path.read_text())
    config = summary.get("config") or {}
    summary["config"] = {**config, "run": {**(config.get("run") or {}), "seed": 12345}}
    summary_path.write_text(json.dumps(summary))
    with pytest.raises(ArtifactError, match="training_summary.json does not belong"):
        load_model(trained_folder)


def test_a_figure_folder_removes_only_the_figures_it_wrote(tmp_path):
    from PIL import Image

    from qsight_pipeline.kedro_app.datasets import FileSetDataset

    folder = tmp_path / "figures"
    mine = plant_look_alikes(folder) + [folder / "my_own_plot.png"]
    mine[-1].write_text("mine")
    dataset = FileSetDataset(str(folder), filename_suffix=".png")
    image = Image.new("RGB", (4, 4), "red")
    dataset.save({"a": image, "b": image, "c": image})
    assert sorted(dataset.load()) == ["a.png", "b.png", "c.png"]
    dataset.save({"a": image})  # b and c were ours and are gone; the user's files stay
    assert sorted(dataset.load()) == ["a.png"]
    assert not (folder / "b.png").exists() and not (folder / "c.png").exists()
    assert all(path.read_text() == "mine" for path in mine)
    assert Image.open(folder / "a.png").size == (4, 4)
    for name in ("../escape", "sub/c", "/abs/c"):  # a file of the folder has a plain name
        with pytest.raises(Exception, match="refusing to write"):
            dataset.save({name: image})
    assert not (tmp_path / "escape.png").exists()


def _plant_index(folder: Path, victims: dict[str, Path]) -> None:
    """A forged index that lists ``victims`` by the names given, with their true hashes."""
    files = {name: storage.file_sha256(path) for name, path in victims.items()}
    (folder / ".qsight-files.json").write_text(json.dumps({"format": 2, "files": files}))


def test_a_forged_or_stale_index_deletes_nothing_it_cannot_prove(tmp_path):
    from PIL import Image

    from qsight_pipeline.kedro_app.datasets import FileSetDataset

    folder, outside = tmp_path / "figures", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("v")
    edited = folder / "edited.png"
    dataset = FileSetDataset(str(folder), filename_suffix=".png")
    image = Image.new("RGB", (4, 4), "red")
    dataset.save({"edited": image, "kept": image})
    edited.write_bytes(b"the user's own version now")  # written by us once, changed since
    index = json.loads((folder / ".qsight-files.json").read_text())
    index["files"].update({str(victim): storage.file_sha256(victim),
                           "../elsewhere/victim.txt": storage.file_sha256(victim)})
    (folder / ".qsight-files.json").write_text(json.dumps(index))
    dataset.save({"new": image})
    assert victim.read_text() == "v"  # absolute and `..` entries are not names of the folder
    assert edited.read_bytes() == b"the user's own version now"  # its hash no longer matches
    assert not (folder / "kept.png").exists()  # ours, unchanged since: removed
    # An index of an older release (names without hashes) proves nothing: nothing is removed.
    (folder / "old.png").write_text("mine")
    (folder / ".qsight-files.json").write_text(json.dumps({"files": ["old.png", "new.png"]}))
    dataset.save({"other": image})
    assert (folder / "old.png").read_text() == "mine" and (folder / "new.png").is_file()
    # A name whose file became a link is not followed, even with the target's hash.
    (folder / "link.png").symlink_to(victim)
    _plant_index(folder, {"link.png": victim})
    dataset.save({"other": image})
    assert victim.read_text() == "v" and (folder / "link.png").is_symlink()


def test_the_killed_run_clean_up_needs_the_file_it_created(tmp_path):
    """A journal that names a file QSight did not create (a forged or stale entry, or the file
    replaced after the kill) removes nothing, even when the name is QSight's temporary name."""
    folder = tmp_path / "out"
    folder.mkdir()
    journals = storage.state_dir() / "journal"
    journals.mkdir(parents=True, exist_ok=True)
    planted = folder / ".model.qsight-0123abcd.tmp.pth"
    planted.write_text("mine")
    created = folder / "the file the dead run created"  # still there: its inode is taken
    created.write_text("first")
    first_id = [os.lstat(created).st_dev, os.lstat(created).st_ino]
    replaced = folder / ".x.qsight-89abcdef.tmp.pth"
    replaced.write_text("a user's file put at that name later")
    records = [{"op": "open", "pid": 2**22 + 11, "host": __import__("socket").gethostname()},
               {"op": "tmp", "path": str(planted)},
               {"op": "tmp", "path": str(replaced)},
               {"op": "made", "path": str(replaced), "id": first_id}]
    (journals / "forged.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert storage.recover([folder]).removed == []
    assert planted.read_text() == "mine"
    assert replaced.read_text() == "a user's file put at that name later"


def test_a_failed_run_keeps_the_previous_figures(tmp_path):
    from PIL import Image

    from qsight_pipeline.kedro_app.datasets import FileSetDataset

    dataset = FileSetDataset(str(tmp_path), filename_suffix=".png")
    dataset.save({"a": Image.new("RGB", (2, 2)), "b": Image.new("RGB", (2, 2))})
    with pytest.raises(RuntimeError), storage.transaction([tmp_path]):
        dataset.save({"c": Image.new("RGB", (3, 3))})
        raise RuntimeError("the run fails later")
    assert sorted(dataset.load()) == ["a.png", "b.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".qsight-files.json", "a.png", "b.png"]

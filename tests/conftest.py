"""Shared fixtures.

- ``make_sample``: writes a tiny synthetic data set (either Kaggle layout) under ``tmp_path``.
- ``kedro_project``: a throw-away copy of the project in ``tmp_path`` in which ``kedro run`` can
  write its outputs without touching the repository's ``data/``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qsight_pipeline.data.sample import generate_sample
from tests.fixtures import warm_python

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_LAYERS = (
    "01_raw", "02_intermediate", "03_primary", "04_feature",
    "05_model_input", "06_models", "07_model_output", "08_reporting",
)
QUIET_ENV = {"KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "WANDB_MODE": "offline"}

os.environ.update(QUIET_ENV)
# pytest-xdist's workers share the cores with each other's runs: torch's idle OpenMP threads in a
# worker (and in every process it starts) sleep instead of spinning, as QSIGHT_THREAD_POLICY=auto
# chooses on a busy machine (qsight_pipeline/threads.py). Spinning made an in-process training
# test 3-4x slower beside the other worker's runs. Set before torch is first imported here.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The write journals (qsight_pipeline.files.storage) of the tests and their kedro subprocesses go to a
# folder of the test session, not to the developer's ~/.local/state/qsight.
os.environ.setdefault("QSIGHT_STATE_DIR", tempfile.mkdtemp(prefix="qsight-test-state-"))

# Browser tests (pytest-playwright's ``page``) drive the system's Chromium, Debian's package,
# never a browser Playwright would download: the machine may be offline.
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None
)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
BROWSER_FIXTURES = frozenset({"page", "context", "browser"})


@pytest.fixture
def make_sample(tmp_path: Path) -> Callable[..., Path]:
    """``make_sample(layout="tanlikesmath", patients=12, seed=0, size=48) -> dataset root``."""

    def make(layout: str = "tanlikesmath", patients: int = 12, seed: int = 0, size: int = 48) -> Path:
        root = tmp_path / f"sample_{layout}_{patients}_{seed}_{size}"
        if not root.exists():
            generate_sample(root, layout=layout, patients=patients, seed=seed, size=size)
        return root

    return make


@dataclass
class KedroProject:
    """A copy of the project's ``conf/`` and ``pyproject.toml`` with its own empty ``data/``.

    The code is the repository's (``src/`` there is put on ``PYTHONPATH``; the copy's ``src/`` is
    an empty folder because Kedro insists on one inside the project), and ``data/01_raw`` links
    to the repository's bundled sample, which the pipelines only read. Everything a run writes
    lands under :attr:`path`. ``conf/local`` starts empty so a developer's own settings do not
    leak into tests.
    """

    path: Path

    def run(
        self,
        *args: str,
        params: dict[str, Any] | None = None,
        env: str | None = None,
        check: bool = True,
        timeout: float = 600,
        wandb: bool = False,
    ) -> subprocess.CompletedProcess:
        """``kedro run *args [--env env] [--params k=v,...]`` in the copy; output in the result.

        With ``check`` a failed run fails the test and shows the end of kedro's output. Without
        ``wandb`` the run does not log to W&B (``tracking.wandb.enabled=false``, unless ``params``
        set ``tracking.wandb`` themselves): the smoke environment turns it on, and starting
        wandb's offline service costs ~4.5 s a run. The shared smoke run and the tests of W&B keep
        it on.
        """
        command = [sys.executable, "-m", "kedro", "run", *args]
        if env:
            command += ["--env", env]
        params = dict(params or {})
        if not wandb and "--params" not in args and not any(
                key.startswith("tracking.wandb") for key in params):
            params["tracking.wandb.enabled"] = "false"
        if params:
            command += ["--params", ",".join(f"{key}={value}" for key, value in params.items())]
        # Forked from a warm interpreter that imported torch, timm, MLflow and Kedro once
        # (tests/fixtures/warm_python.py): the same `kedro run`, without ~10 s of imports each.
        result = warm_python.run(command, self.path, self.environment(), timeout)
        if check and result.returncode != 0:
            output = (result.stdout + result.stderr)[-6000:]
            pytest.fail(f"`{' '.join(command[2:])}` exited with {result.returncode}:\n{output}")
        return result

    def environment(self) -> dict[str, str]:
        python_path = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")]))
        return {**os.environ, **QUIET_ENV, "PYTHONPATH": python_path, "COLUMNS": "200"}

    def data(self, relative: str) -> Path:
        """A path under the copy's ``data/``, e.g. ``project.data("03_primary/manifest.csv")``."""
        return self.path / "data" / relative


def create_project_copy(project: Path) -> KedroProject:
    """Lay out a throw-away project at ``project`` (see :class:`KedroProject`)."""
    project.mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(REPO_ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "src").mkdir()
    for layer in DATA_LAYERS:
        if layer == "01_raw":
            (project / "data").mkdir(exist_ok=True)
            (project / "data" / layer).symlink_to(REPO_ROOT / "data" / layer, target_is_directory=True)
        else:
            (project / "data" / layer).mkdir(parents=True)
    return KedroProject(project)


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Each test leaves ``os.environ`` as it found it.

    Some libraries write it in-process by design: Kedro's ``bootstrap_project`` prepends the
    project's ``src`` to ``PYTHONPATH``, MLflow's ``set_tracking_uri`` sets
    ``MLFLOW_TRACKING_URI``. Left over, they reach every later test's ``kedro run`` (an earlier
    test's database, a stranger's folder on the path). A leak of the project's own, like Dask's
    ``OMP_NUM_THREADS=1`` after a study, is a bug its own test catches inside the test.
    """
    before = dict(os.environ)
    yield
    for name in set(os.environ) - set(before) - {"PYTEST_CURRENT_TEST"}:
        del os.environ[name]
    for name, value in before.items():
        if os.environ.get(name) != value and name != "PYTEST_CURRENT_TEST":
            os.environ[name] = value


@pytest.fixture
def kedro_project(tmp_path: Path) -> KedroProject:
    return create_project_copy(tmp_path / "project")


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> KedroProject:
    """One ``kedro run --env smoke`` (all five training pipelines, tiny) shared by many tests.

    Under pytest-xdist the workers share one run: the first that needs it builds it in their
    common temporary folder while holding a lock, the others wait for it (pytest-xdist's recipe
    for a session fixture built once). Treat it as read-only; tests that change files take a
    :func:`smoke_copy`.
    """
    if worker_id == "master":  # no xdist: this process's own run
        return _smoke_run(tmp_path_factory.mktemp("smoke") / "project")
    shared = tmp_path_factory.getbasetemp().parent / "smoke"
    shared.mkdir(exist_ok=True)
    built = shared / "built"  # the path of the finished run, written once it has finished
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():  # a worker whose build failed left no mark: build it here
            project = _smoke_run(shared / f"project-{worker_id}")
            built.write_text(str(project.path))
    return KedroProject(Path(built.read_text()))


def _smoke_run(project: Path) -> KedroProject:
    copy = create_project_copy(project)
    copy.run("--env", "smoke", wandb=True)
    return copy


@pytest.fixture
def smoke_copy(smoke_project: KedroProject, tmp_path: Path) -> KedroProject:
    """A private copy of :func:`smoke_project` with all its outputs."""
    target = tmp_path / "project"
    shutil.copytree(smoke_project.path, target, symlinks=True)
    return KedroProject(target)


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    """pytest-playwright's launch options: the system Chromium, headless, nothing fetched."""
    if CHROMIUM is None:
        pytest.skip("needs Chromium on PATH or at /usr/bin/chromium: apt-get install chromium "
                    "(.ci/run installs it)")
    return {"executable_path": CHROMIUM, "headless": True, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def base_url() -> None:
    """No base URL: the browser tests open full URLs. (pytest-playwright's own fixture, a method
    of a plugin object, is deprecated by pytest 9 and warns.)"""
    return None


@pytest.fixture
def page(page):
    """pytest-playwright's page, with waits long enough for a loaded 2-core machine."""
    page.set_default_timeout(120_000)
    return page


# Fixtures that run `kedro run` in a subprocess or a browser: every test that uses one (directly or
# through another fixture) is `slow`, so `pytest -m "not slow"` is the quick in-process suite.
KEDRO_FIXTURES = frozenset({"smoke_project", "smoke_copy", "kedro_project"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if (KEDRO_FIXTURES | BROWSER_FIXTURES) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def plant_look_alikes(folder: Path) -> list[Path]:
    """Files of a user's that look like temporary files, at several depths (content "mine"):
    a run must never delete them, whatever it does."""
    paths = [folder / ".thesis.tmp", folder / "notes" / "deep" / ".budget.tmp.xlsx",
             folder / ".quantum_head.pth.x8y9z0.tmp", folder / ".model.qsight-0a1b2c3d.tmp.pth",
             folder / "notes" / ".manifest.1a2b3c4d.tmp.csv"]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    return paths


# The suite works in temporary folders: the repository's own data, configuration and kedro-viz
# folders must look the same after it as before (an in-process Kedro session run from the
# repository once left kedro-viz's `.viz/stats.json` there). Checked by the controlling process,
# after every xdist worker has finished.
WATCHED = ("data", "conf", ".viz")
_BEFORE = pytest.StashKey[dict[str, int] | None]()


def _repository_files() -> dict[str, int] | None:
    """{path: mtime_ns} of every file under :data:`WATCHED` (None outside a git checkout)."""
    if not (REPO_ROOT / ".git").exists():
        return None
    found = {}
    for top in WATCHED:
        for path in (REPO_ROOT / top).rglob("*"):
            if path.is_file() and "01_raw" not in path.parts and "__pycache__" not in path.parts:
                found[str(path.relative_to(REPO_ROOT))] = path.stat().st_mtime_ns
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without xdist)
        session.config.stash[_BEFORE] = _repository_files()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_BEFORE, None)
    if before is None:
        return
    after = _repository_files() or {}
    changed = sorted(p for p in after.keys() | before.keys() if after.get(p) != before.get(p))
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"The suite changed files of the repository: {', '.join(changed[:10])}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""Start-up: `kedro` commands do not load the model stack until a node needs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, KedroProject

HEAVY = ("torch", "timm", "torchvision", "qiskit", "mlflow", "sklearn", "matplotlib")

_PROBE = f"""
import json, sys
import qsight_pipeline.settings
import qsight_pipeline.config, qsight_pipeline.kedro_app.hooks, qsight_pipeline.kedro_app.run_checks
from kedro.framework.project import configure_project, pipelines
configure_project("qsight_pipeline")
names = sorted(pipelines)  # imports every pipeline module and its nodes module
print(json.dumps({{"pipelines": names, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


@pytest.mark.slow  # starts a Python subprocess
def test_settings_hooks_and_pipelines_import_no_model_stack(tmp_path):
    environment = KedroProject(tmp_path).environment()
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO_ROOT, env=environment,
                            capture_output=True, text=True, timeout=300, check=True)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"ingestion", "classical", "features", "quantum", "ensemble", "predict"} <= set(
        found["pipelines"]
    )
    assert found["heavy"] == []

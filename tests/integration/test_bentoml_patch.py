"""The BentoML patch checked by its effect: the service's real ASGI app, built by BentoML's own factory, runs
textclf's pass-through where BentoML's leaking request timer was (and, without the patch, the timer is back and
the service says so at startup).

Each case runs in a fresh interpreter: the patch and BentoML's configuration are process-wide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving import PROJECT_ROOT
from textclf.config import Config

BENTOML_TIMER = "bentoml._internal.server.http.traffic.TimeoutMiddleware"
PASS_THROUGH = "textclf.serving.bentoml_patch.PassThroughTimeout"

# Builds the app as `bentoml serve` does (Service.to_asgi), runs its startup (the service's __init__ loads the
# model) and prints the classes of the built middleware stack, outermost first.
SCRIPT = """
import json, logging, sys
logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
if sys.argv[1] == "unpatched":
    import textclf.serving.bentoml_patch
    textclf.serving.bentoml_patch.replace_bentoml_request_timer = lambda: False
import service
from starlette.testclient import TestClient

app = service.TextClassifier.to_asgi()
with TestClient(app) as client:
    livez = client.get("/livez").status_code
layer, stack = app.middleware_stack, []
while layer is not None and len(stack) < 64:
    stack.append(f"{type(layer).__module__}.{type(layer).__qualname__}")
    layer = getattr(layer, "app", None)
print(json.dumps({"stack": stack, "livez": livez}))
"""


def _built_stack(run_dir: Path, home: Path, mode: str) -> tuple[dict[str, object], str]:
    env = {**os.environ, "TEXTCLF_ARTIFACTS": str(run_dir), "BENTOML_HOME": str(home), "TEXTCLF_WORKERS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.fixture(scope="module")
def patched(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], str]:
    return _built_stack(exported_run.run_dir, tmp_path_factory.mktemp("home"), "patched")


def test_the_pass_through_replaces_bentoml_timer_in_the_served_app(patched: tuple[dict[str, object], str]) -> None:
    built, log = patched
    stack = built["stack"]
    assert isinstance(stack, list) and PASS_THROUGH in stack, stack
    assert BENTOML_TIMER not in stack
    assert stack.index(PASS_THROUGH) < stack.index("textclf.serving.guard.RequestGuard")  # where BentoML put its timer
    assert built["livez"] == 200
    assert "PassThroughTimeout" not in log  # the startup check found it: no error


def test_without_the_patch_bentoml_timer_is_there_and_startup_says_so(exported_run: Config, tmp_path: Path) -> None:
    built, log = _built_stack(exported_run.run_dir, tmp_path / "home", "unpatched")
    stack = built["stack"]
    assert isinstance(stack, list) and BENTOML_TIMER in stack and PASS_THROUGH not in stack, stack
    assert "without textclf's PassThroughTimeout" in log

"""`make run` stays true: the demo starts Envoy + dev IdP + backend, and every curl it prints returns the
status it claims."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_demo_runs_and_every_printed_request_behaves(meshgate_wasm):
    out = subprocess.run([sys.executable, str(HERE / "demo.py"), "--once", "--port", "0"], cwd=HERE.parent.parent,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("[ok]") == 5, out.stdout
    assert "UNEXPECTED" not in out.stdout

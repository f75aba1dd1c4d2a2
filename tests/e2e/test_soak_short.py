"""`make soak` in short (20 s, two JWKS rotations, one of them unpublishing keys), so the soak tool and its
expectations stay right between full runs: every response as expected, meshgate's counters matching the
traffic, memory flat. The full 10 minutes: `make soak` (figures in the README)."""

from __future__ import annotations

import json
import subprocess
import sys

import harness

SOAK = harness.REPO / "tests" / "bench" / "soak.py"


def test_short_soak(meshgate_wasm, tmp_path):
    out = tmp_path / "soak.json"
    cmd = [sys.executable, str(SOAK), "--seconds", "20", "--unique", "2000", "--rotate-every", "4",
           "--grace", "2", "--warmup", "3", "--connections", "8", "--wasm", meshgate_wasm, "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=str(harness.REPO))
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(out.read_text())
    assert report["unexpected"] == 0 and report["valid"], report["problems"]
    assert len(report["rotations"]) >= 2 and any(x["drop_old"] for x in report["rotations"])
    for cls in ("cached", "unique", "realm", "expired", "bad_signature", "unknown_kid", "removed_key", "missing",
                "post"):
        assert report["counts"].get(cls, 0) > 0, f"no {cls} request was sent: {report['counts']}"

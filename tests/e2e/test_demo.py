"""`make run` stays true: the demo starts Envoy + an IdP + backend, and every curl it prints returns the
status it claims. With the dev IdP (`make run IDP=dev`) and with a real Keycloak (the session's, through
--keycloak-url; `make run` itself starts its own the same way, with keycloak.launch)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = 6


def run_demo(*args: str) -> str:
    out = subprocess.run([sys.executable, str(HERE / "demo.py"), "--once", "--port", "0", *args],
                         cwd=HERE.parent.parent, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("[ok]") == CASES, out.stdout
    assert out.stdout.count("[sso ok]") == 5, out.stdout  # the single sign-on gateway (demo_sso.py)
    assert "UNEXPECTED" not in out.stdout and f"{CASES} requests, all as expected." in out.stdout
    return out.stdout


def test_demo_with_the_dev_idp(meshgate_wasm):
    out = run_demo("--idp", "dev")
    assert "the dev IdP on 127.0.0.1:" in out
    assert "(issuer http://keycloak.keycloak.svc.cluster.local/realms/myrealm)" in out


def test_demo_with_a_real_keycloak(meshgate_wasm, keycloak):
    out = run_demo("--keycloak-url", keycloak.base_url)
    assert f"Keycloak at {keycloak.base_url} on 127.0.0.1:{keycloak.port}" in out
    assert "(issuer http://keycloak.keycloak.svc.cluster.local/realms/myrealm)" in out
    assert f"{keycloak.base_url}/realms/myrealm/protocol/openid-connect/token" in out

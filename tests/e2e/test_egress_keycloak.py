"""Issue "egress" against the real Keycloak (tests/e2e/keycloak.py, session fixture `keycloak`).

The same two Envoys as tests/e2e/test_egress.py: a plain request to the frontend's sidecar (outbound
listener, WasmPlugin `match: [{mode: CLIENT}]`, `egress` target for the backend) reaches the backend's
sidecar (jwtRules + a policy on the service account's claims) and the echo backend. Keycloak issues the
frontend's service-account token (client_credentials with HTTP Basic, realm export `istio/keycloak/
realm-myrealm.json`: audience mapper my-backend-client, `service_account` scope for client_id); its
lifespan is lowered for the refresh test through Keycloak's Admin REST API (client attribute
`access.token.lifespan`), and restored afterwards.
"""

from __future__ import annotations

import time

import pytest

import harness
import render
from test_egress import BACKEND_HOST, backend_plugin, counters, frontend_plugin, get, seen_by_backend

LIFESPAN = 10


@pytest.fixture()
def short_lifespan(keycloak):
    """The frontend client's access tokens live LIFESPAN seconds (Admin REST API), for this test only."""
    keycloak.set_client_attribute("frontend", "access.token.lifespan", str(LIFESPAN))
    assert keycloak.get_client("frontend")["attributes"]["access.token.lifespan"] == str(LIFESPAN)
    yield LIFESPAN
    keycloak.set_client_attribute("frontend", "access.token.lifespan", "300")


@pytest.fixture()
def keycloak_mesh(envoy_factory, meshgate_wasm, echo, real_keycloak_clusters):
    backend = envoy_factory(render.render_wasmplugin_envoy(backend_plugin(), meshgate_wasm, 0, 0, echo.port,
                                                           real_keycloak_clusters))

    def start(wp: dict) -> harness.EnvoyProcess:
        return envoy_factory(render.render_sidecar_outbound(
            [wp], meshgate_wasm, 0, 0, {BACKEND_HOST: (80, ("127.0.0.1", backend.listen_port))},
            real_keycloak_clusters))

    return start


def test_frontend_reaches_backend_with_keycloaks_token_and_refreshes_it(keycloak, keycloak_mesh, short_lifespan):
    front = keycloak_mesh(frontend_plugin())
    r = harness.wait_until(lambda: (x := get(front)).status_code == 200 and x, timeout=20, desc="first 200")
    claims = seen_by_backend(r)["claims"]
    # What Keycloak's mappers and scopes put into the frontend's service-account token.
    assert claims["iss"] == harness.ISSUER
    assert claims["azp"] == "frontend" and claims["client_id"] == "frontend"
    aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert harness.AUDIENCE in aud, aud
    assert claims["preferred_username"] == "service-account-frontend" and claims["typ"] == "Bearer"
    assert claims["exp"] - claims["iat"] == LIFESPAN, "the lifespan set through the Admin REST API"

    # Two and a half lifespans of traffic: refreshed at 80 % (8 s) each time, never a failed request, never a
    # paused one (a first request may have waited for the configure-time fetch), never a token past its exp.
    before = counters(front)
    statuses, tokens, late = [], set(), []
    t_end = time.time() + 2.5 * LIFESPAN
    while time.time() < t_end:
        r = get(front)
        statuses.append(r.status_code)
        if r.status_code == 200:
            seen = seen_by_backend(r)
            tokens.add(seen["headers"]["authorization"])
            if seen["claims"]["exp"] < time.time() - 1:
                late.append(seen["claims"]["exp"])
        time.sleep(0.2)
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert not late
    assert 3 <= len(tokens) <= 5, len(tokens)
    c = counters(front)
    assert c["waited"] == before["waited"] and c["denied"] == 0 and c["fetch_failed"] == 0, (before, c)


def test_wrong_secret_is_refused_by_keycloak(keycloak, keycloak_mesh):
    front = keycloak_mesh(frontend_plugin(secret="not-the-frontend-secret"))
    harness.wait_until(lambda: counters(front).get("fetch_rejected", 0) >= 1, timeout=20, desc="rejected fetch")
    r = get(front)
    assert r.status_code == 503
    assert r.text.startswith('meshgate egress: no access token for target "backend": token endpoint answered HTTP '
                             '401 unauthorized_client'), r.text
    assert "not-the-frontend-secret" not in front.log()

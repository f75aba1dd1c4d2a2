"""`make run`: meshgate in a local Envoy, with a real Keycloak and an echo backend.

Envoy gets the filter exactly as istiod renders the backend WasmPlugin (the reference policy: GET only,
token from realm myrealm, audience my-backend-client, email user@example.com). The script obtains tokens
the way a client would, runs the curl commands it prints, shows the status each one returned, and then
keeps everything running until Ctrl-C. A second Envoy plays the ingress gateway with browser single sign-on
(demo_sso.py): the script prints the URL to open in a browser and the users to log in with.

Identity provider:
  --idp keycloak       (default) start the pinned Keycloak that `make setup` installed (tests/e2e/keycloak.py):
                       start-dev on 127.0.0.1, realm istio/keycloak/realm-myrealm.json imported, issuer
                       http://keycloak.keycloak.svc.cluster.local/realms/myrealm. Takes 20-60 s to start.
  --idp dev            the Python dev IdP (tests/e2e/idp.py): same realm, same token shapes, starts at once
                       (`make run IDP=dev`).
  --keycloak-url URL   use a Keycloak that is already running (with the realm imported) instead; the issuer
                       is read from its discovery document unless --issuer says otherwise, e.g.
                       `make run DEMO_ARGS="--keycloak-url http://127.0.0.1:8080"`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

import demo_sso
import harness
import keycloak as kc
import render
from conftest import make_wasmplugin

REALM_ISSUER = "http://keycloak.keycloak.svc.cluster.local/realms/myrealm"


def plugin_config(issuer: str) -> dict:
    return {
        "jwtRules": [{
            "issuer": issuer,
            "jwksUri": issuer + "/protocol/openid-connect/certs",
            "audiences": ["my-backend-client"],
            "outputClaimToHeaders": [{"header": "x-user-email", "claim": "email"}],
        }],
        "policies": [{
            "name": "backend-reference",
            "action": "ALLOW",
            "rules": [{
                "to": [{"operation": {"methods": ["GET"]}}],
                "when": [
                    {"key": "request.auth.claims[iss]", "values": [issuer]},
                    {"key": "request.auth.claims[aud]", "values": ["my-backend-client"]},
                    {"key": "request.auth.claims[email]", "values": ["user@example.com"]},
                ],
            }],
        }],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=10000, help="Envoy listener port (0: any free port)")
    ap.add_argument("--idp", choices=("keycloak", "dev"), default="keycloak",
                    help="start a real Keycloak (default) or the dev IdP")
    ap.add_argument("--keycloak-url", help="use this running Keycloak instead of starting one")
    ap.add_argument("--issuer", default=None, help="realm issuer (default: what the IdP's discovery document says)")
    ap.add_argument("--once", action="store_true", help="exit after the demo requests (used by tests)")
    args = ap.parse_args()

    wasm = harness.require_meshgate_wasm()
    # SIGTERM (e.g. from `timeout`) unwinds through `finally` like Ctrl-C: Keycloak runs in its own session
    # and would outlive a Python killed outright.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    work = Path(tempfile.mkdtemp(prefix="meshgate-run-"))
    started: list = []
    real: kc.KeycloakProcess | None = None
    try:
        if args.idp == "keycloak" and not args.keycloak_url:
            jdk = kc.java_home()
            print(f"Starting Keycloak {kc.VERSION} (JDK {kc.java_version(jdk)}, start-dev, realm myrealm imported) "
                  f"on 127.0.0.1; this takes 20-60 s ...", flush=True)
            real = kc.launch(work / "keycloak")
            started.append(real)
            real.wait_ready()
            print(f"Keycloak ready after {real.ready_after:.0f} s (RSS {real.rss_bytes() / 2**20:.0f} MiB).",
                  flush=True)
            args.keycloak_url = real.base_url
        if args.keycloak_url:
            base_url = args.keycloak_url.rstrip("/")
            issuer = args.issuer or requests.get(f"{base_url}/realms/myrealm/.well-known/openid-configuration",
                                                 timeout=10).json()["issuer"]
            ku = urlsplit(args.keycloak_url)
            keycloak = (ku.hostname or "127.0.0.1", ku.port or (443 if ku.scheme == "https" else 80))
            token_url = base_url + "/realms/myrealm/protocol/openid-connect/token"
            idp = None
        else:
            issuer = args.issuer or REALM_ISSUER
            idp = harness.start_idp(workdir=work / "idp", issuer_base=issuer.rsplit("/realms/", 1)[0])
            started.append(idp)
            keycloak = ("127.0.0.1", idp.port)
            token_url = idp.local_url(path="/protocol/openid-connect/token")
        iu = urlsplit(issuer)
        cluster = f"outbound|{iu.port or (443 if iu.scheme == 'https' else 80)}||{iu.hostname}"
        echo = harness.start_echo(workdir=work / "echo")
        started.append(echo)
        wp = make_wasmplugin(plugin_config(issuer), name="backend-auth", namespace="demo")
        cfg = render.render_wasmplugin_envoy(wp, wasm, args.port, 0, echo.port, {cluster: keycloak})
        envoy = harness.start_envoy(cfg, workdir=work / "envoy")
        started.append(envoy)
        base = f"http://127.0.0.1:{envoy.listen_port}"

        def token(user: str) -> str:
            r = requests.post(token_url, data={"grant_type": "password", "client_id": "demo-cli",
                                               "username": user, "password": user, "scope": "openid"}, timeout=10)
            r.raise_for_status()
            return r.json()["access_token"]

        def service_token() -> str:
            r = requests.post(token_url, data={"grant_type": "client_credentials"},
                              auth=("frontend", "frontend-secret"), timeout=10)
            r.raise_for_status()
            return r.json()["access_token"]

        alice, bob, frontend = token("alice"), token("bob"), service_token()
        what = ("the dev IdP" if idp else f"Keycloak {kc.VERSION}" if real else "Keycloak at " + args.keycloak_url)
        print(f"\nmeshgate is running: Envoy {base} (admin http://127.0.0.1:{envoy.admin_port}), "
              f"{what} on {keycloak[0]}:{keycloak[1]} (issuer {issuer}), "
              f"echo backend on 127.0.0.1:{echo.port}. Envoy log: {envoy.log_path}")
        print("Realm myrealm: users alice/alice (email user@example.com) and bob/bob; clients demo-cli (public, "
              "password grant), frontend/frontend-secret (client_credentials), meshgate-gateway (code + PKCE).")
        if real:
            print(f"Keycloak admin REST API: {real.base_url}/admin/realms (user admin, password {real.admin_password}"
                  f"); log {real.log_path}.\nLogin pages and the admin console use the hostname "
                  f"{kc.HOSTNAME_URL}: open them in Chromium started with\n  {real.chromium_host_rule()}")
        print("\nGet a token (Keycloak password grant, user alice/alice, public client demo-cli):")
        print(f"  TOKEN=$(curl -s -d grant_type=password -d client_id=demo-cli -d username=alice -d password=alice \\\n"
              f"          {token_url} | python3 -c 'import sys,json; print(json.load(sys.stdin)[\"access_token\"])')\n"
              "  (BOB_TOKEN: the same with username=bob password=bob; bob's email is bob@example.com;\n"
              "   SA_TOKEN: curl -s -u frontend:frontend-secret -d grant_type=client_credentials <same URL>)\n")
        cases = [
            ("valid token, GET (reference policy allows)", "GET", {"Authorization": f"Bearer {alice}"}, 200, "$TOKEN"),
            ("no token (policy needs claims: Istio's 403)", "GET", {}, 403, None),
            ("garbage token (invalid: 401 + WWW-Authenticate)", "GET", {"Authorization": "Bearer not.a.jwt"}, 401,
             "not.a.jwt"),
            ("valid token, POST (policy allows GET only)", "POST", {"Authorization": f"Bearer {alice}"}, 403, "$TOKEN"),
            ("bob's token (email bob@example.com)", "GET", {"Authorization": f"Bearer {bob}"}, 403, "$BOB_TOKEN"),
            ("frontend service account (client_credentials; valid, but no email)", "GET",
             {"Authorization": f"Bearer {frontend}"}, 403, "$SA_TOKEN"),
        ]
        ok = True
        for what, method, headers, want, shown in cases:
            r = requests.request(method, base + "/data", headers=headers, timeout=10)
            cmd = "curl -i" + (f" -X {method}" if method != "GET" else "") + \
                  (f" -H \"Authorization: Bearer {shown}\"" if shown else "") + f" {base}/data"
            mark = "ok" if r.status_code == want else f"UNEXPECTED (wanted {want})"
            print(f"# {what}\n  {cmd}\n  -> {r.status_code} {r.text.strip()[:60]!r}  [{mark}]")
            if r.status_code == 401:
                print(f"     WWW-Authenticate: {r.headers.get('www-authenticate')}")
            ok &= r.status_code == want
        stats = {k.removeprefix("wasmcustom."): v for k, v in envoy.stats("wasmcustom.meshgate").items() if v}
        print(f"\nmeshgate counters: {json.dumps(stats)}")
        print(f"Stats: curl -s http://127.0.0.1:{envoy.admin_port}/stats | grep meshgate")
        gateway = demo_sso.start_gateway(wasm, work, issuer, cluster, keycloak, echo,
                                         port=args.port + 1 if args.port else 0)
        started.append(gateway)
        ok &= demo_sso.show_and_check(gateway, issuer, keycloak)
        print(f"\n{len(cases)} requests, {'all as expected' if ok else 'SOME UNEXPECTED'}.", flush=True)
        if args.once:
            return 0 if ok else 1
        print("Ctrl-C stops Envoy, the IdP and the backend.", flush=True)
        while envoy.alive():
            time.sleep(1)
        print("Envoy exited:\n" + harness.tail(envoy.log_path))
        return 1
    except KeyboardInterrupt:
        return 0
    except kc.KeycloakError as e:
        print(f"Keycloak could not be started: {e}\n(`make setup` installs it; `make run IDP=dev` uses the dev "
              "IdP instead)", file=sys.stderr)
        return 1
    finally:
        for p in reversed(started):
            p.stop()


if __name__ == "__main__":
    sys.exit(main())

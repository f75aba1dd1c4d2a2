#!/usr/bin/env python3
"""Keycloak-compatible development identity provider for meshgate's end-to-end tests.

Stdlib HTTP server + `cryptography` (key generation, signing) + PyJWT (verifying its own tokens at the
userinfo/introspection endpoints). It is deliberately independent of the Rust verifier: every JWS it emits
is assembled and signed here, byte for byte, the way Keycloak does it.

    python tests/e2e/idp.py --port 0 --realm-file istio/keycloak/realm-myrealm.json \
        [--issuer-base http://keycloak.keycloak.svc.cluster.local] [--public-base http://127.0.0.1:P] \
        [--extra-realm otherrealm ...] [--state-file /tmp/idp.json] [--host 127.0.0.1]

It reads the same realm export that a real Keycloak imports (`kc.sh start-dev --import-realm`): clients,
secrets, public/bearer-only/service-account flags, redirect URIs, PKCE attribute, audience mappers,
users, passwords, realm and client roles. `--extra-realm NAME` clones the realm under another name (own keys,
own issuer) for cross-issuer tests.

Issuer of realm R: `<issuer-base>/realms/R` (what Keycloak puts in `iss` in-cluster). The server listens on
`--host:--port` (port 0 = pick a free one; the chosen port is written to --state-file). Envoy reaches it
through a STATIC cluster, so the Host header it receives is irrelevant.

Keycloak endpoints (per realm R, under /realms/R):
  GET  /.well-known/openid-configuration
  GET  /protocol/openid-connect/certs                 JWKS: RSA-OAEP `enc` key first, then one `sig` key per alg
                                                      (RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA)
  POST /protocol/openid-connect/token                 client_credentials | password | refresh_token |
                                                      authorization_code (PKCE S256/plain checked)
  GET  /protocol/openid-connect/auth                  authorization-code flow: HTML login form (Keycloak
                                                      element ids: kc-form-login, username, password, kc-login)
  POST /login-actions/authenticate?session_code=...   form post -> 302 redirect_uri?state&session_state&iss&code
  GET|POST /protocol/openid-connect/logout            end session (post_logout_redirect_uri, state)
  GET|POST /protocol/openid-connect/userinfo          Bearer access token -> user claims
  POST /protocol/openid-connect/token/introspect      RFC 7662 (client authentication required)
  GET  /                                              (realm JSON like Keycloak's /realms/R)

Test-control endpoints (development only; no authentication; loopback only):
  GET  /_admin/health                                 {"ok": true}
  GET  /_admin/stats                                  {"jwks_fetches": {realm: n}, "discovery_fetches": {...},
                                                       "token_requests": {...}, "userinfo_requests": {...}}
  POST /_admin/reset-stats
  GET  /_admin/realms                                 {realm: {issuer, active_kid, published_kids, jwks_mode}}
  POST /_admin/rotate?realm=R[&drop_old=1][&publish=0]
        new RSA-2048 RS256 key becomes the active signer; published next to the old one unless drop_old=1
        (old key(s) unpublished); publish=0 keeps the new key OUT of the JWKS (publish it later with
        /_admin/publish). Returns {"kid": new, "previous_kid": old}.
  POST /_admin/publish?realm=R&kid=K                  publish a key that was created with publish=0
  POST /_admin/unpublish?realm=R&kid=K                remove a key from the JWKS (it keeps signing if active)
  POST /_admin/jwks-mode?realm=R&mode=M[&delay=S]     M = normal | keycloak_default (RS256 sig + RSA-OAEP
        enc only, what a fresh Keycloak realm publishes) | sig_first (normal, but sig keys before the enc key)
        | sig_only (no enc key) | empty ({"keys": []}) | error500 | slow (normal after `delay` s, default 5,
        max 60) | slow_error500 (500 after `delay` s) | reset (connection closed, no response) | huge (a valid
        JWKS padded to 10 MB) | many_keys / many_keys_last (the realm's keys before / after 1,000 extra keys) | garbage (200 application/json with a non-JSON body) | notfound (404)
        | weak_rsa (normal, plus an RSA key of 1024 bits and one with the exponent 2^33+1)
  POST /_admin/token-mode?realm=R&mode=M[&delay=S][&lifespan=N]   the token endpoint (every grant):
        M = normal | error500 (500 {"error": "unknown_error"}) | reset (connection closed, no response) |
        slow (normal after `delay` s, default 5, max 60) | garbage (200 application/json, non-JSON body).
        lifespan=N (seconds, 1..86400; 0 = back to the default) sets `expires_in` and `exp` of
        client_credentials tokens, for refresh tests. Without it the lifespan is the client's
        `access.token.lifespan` attribute, else the realm's accessTokenLifespan (as Keycloak does).
  POST /_admin/mint   JSON body, all optional:
        realm          "myrealm" (default: the realm of --realm-file)
        user           "alice" (default) - Keycloak claims for that user, as the `password` grant builds them
        service_account true -> client_credentials-shaped token for `client` (default client "frontend")
        client         "demo-cli" (default) - azp, audience mappers, scope
        scope          requested scope (default "openid email profile")
        audience       override `aud` (string or list; null removes the claim)
        claims         {name: value} overrides; a null value removes the claim
        alg            RS256 (default) | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384 | ES512 |
                       EdDSA (each with its own published key, as Keycloak key providers publish them) |
                       HS256 | HS384 | HS512 (with `hmac_secret`) |
                       HS256-with-rsa-public-key (alg-confusion: HMAC keyed with the active RSA public key
                       PEM; `hmac_key_form`: "pem" (default) | "der") | none (empty signature)
        signing_key    sign with the published key of another alg of the same family, e.g. alg RS512 with
                       signing_key RS256: the JWK says alg RS256 but the token RS512 (kid/alg mismatch case)
        kid            override the header kid; null omits it (default: the signing key's kid)
        sign_with      "active" (default: the published key for that alg) | "unpublished" (a fresh key that
                       is not in the JWKS; the kid still defaults to the PUBLISHED key's kid, so a verifier
                       finds a key and the signature check fails - pass `kid` for an unknown kid)
        exp_in         seconds from now (default: realm accessTokenLifespan, 300; negative -> expired)
        iat_in         seconds from now for iat (default 0)
        nbf_in         seconds from now; adds an `nbf` claim (Keycloak itself never sets nbf)
        header         {name: value} JOSE header overrides (null removes); then the header is compact JSON
                       instead of Keycloak's exact `{"alg":"RS256","typ" : "JWT","kid" : "..."}` spelling
     -> {"token": ..., "header": {...}, "claims": {...}, "kid": ..., "alg": ...}

Logs one line per request to stderr: method, path, query parameter NAMES (never values), status, size.
Tokens, secrets, passwords and codes are never logged.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

DEFAULT_ISSUER_BASE = "http://keycloak.keycloak.svc.cluster.local"
REFRESH_LIFESPAN = 1800
CODE_LIFESPAN = 60
LOGIN_SESSION_LIFESPAN = 1800
MAX_BODY = 1 << 20

# Keycloak's built-in roles (created on realm import when the export does not list them).
ACCOUNT_CLIENT = "account"
BUILTIN_CLIENT_COMPOSITES = {ACCOUNT_CLIENT: {"manage-account": ["manage-account-links"]}}


# ----------------------------------------------------------------------------------------------------------
# encoding helpers
# ----------------------------------------------------------------------------------------------------------
def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def int_b64u(value: int) -> str:
    return b64u(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def compact_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def keycloak_header(alg: str, typ: str | None, kid: str | None) -> str:
    """The JOSE header exactly as Keycloak's JWSBuilder writes it (note the spaces around ':')."""
    out = '{"alg":"' + alg + '"'
    if typ is not None:
        out += ',"typ" : "' + typ + '"'
    if kid is not None:
        out += ',"kid" : "' + kid + '"'
    return out + "}"


# ----------------------------------------------------------------------------------------------------------
# keys
# ----------------------------------------------------------------------------------------------------------
class Key:
    """One asymmetric key with its Keycloak-style JWK."""

    def __init__(self, alg: str, use: str, realm: str, published: bool = True):
        self.alg = alg
        self.use = use
        self.published = published
        if alg in RSA_ALGS or alg == "RSA-OAEP":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg in EC_CURVES:
            self.private = ec.generate_private_key(EC_CURVES[alg][1])
        elif alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(f"unsupported key alg {alg}")
        self.public = self.private.public_key()
        self.spki_der = self.public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.spki_pem = self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # Keycloak: kid = base64url(SHA-256(encoded public key)).
        self.kid = b64u(hashlib.sha256(self.spki_der).digest())
        self.cert_der = self._self_signed_cert(realm) if isinstance(self.public, rsa.RSAPublicKey) else None

    def _self_signed_cert(self, realm: str) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, realm)])
        now = datetime.now(timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=3650))
            .sign(self.private, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.DER)

    def jwk(self) -> dict:
        jwk: dict[str, Any] = {"kid": self.kid}
        if isinstance(self.public, rsa.RSAPublicKey):
            nums = self.public.public_numbers()
            jwk.update({"kty": "RSA", "alg": self.alg, "use": self.use, "n": int_b64u(nums.n),
                        "e": int_b64u(nums.e)})
            if self.cert_der:
                jwk["x5c"] = [base64.b64encode(self.cert_der).decode("ascii")]
                jwk["x5t"] = b64u(hashlib.sha1(self.cert_der).digest())
                jwk["x5t#S256"] = b64u(hashlib.sha256(self.cert_der).digest())
        elif isinstance(self.public, ec.EllipticCurvePublicKey):
            nums = self.public.public_numbers()
            crv, _, size = EC_CURVES[self.alg]
            jwk.update({"kty": "EC", "alg": self.alg, "use": self.use, "crv": crv,
                        "x": b64u(nums.x.to_bytes(size, "big")), "y": b64u(nums.y.to_bytes(size, "big"))})
        else:
            raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            jwk.update({"kty": "OKP", "alg": self.alg, "use": self.use, "crv": "Ed25519", "x": b64u(raw)})
        return jwk

    def sign(self, alg: str, data: bytes) -> bytes:
        priv = self.private
        if alg in ("RS256", "RS384", "RS512"):
            return priv.sign(data, padding.PKCS1v15(), _hash(alg))
        if alg in ("PS256", "PS384", "PS512"):
            h = _hash(alg)
            return priv.sign(data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
        if alg in EC_CURVES:
            size = EC_CURVES[alg][2]
            r, s = decode_dss_signature(priv.sign(data, ec.ECDSA(_hash(alg))))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if alg == "EdDSA":
            return priv.sign(data)
        raise ValueError(f"key {self.alg} cannot sign {alg}")


def _hash(alg: str) -> hashes.HashAlgorithm:
    return {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[-3:]]


RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_CURVES = {"ES256": ("P-256", ec.SECP256R1(), 32), "ES384": ("P-384", ec.SECP384R1(), 48),
             "ES512": ("P-521", ec.SECP521R1(), 66)}
# Every JWS algorithm Keycloak can sign access tokens with (realm key providers), one published key each.
SIGNING_ALGS = RSA_ALGS + tuple(EC_CURVES) + ("EdDSA",)


# ----------------------------------------------------------------------------------------------------------
# realm model (from a Keycloak realm export)
# ----------------------------------------------------------------------------------------------------------
class Realm:
    def __init__(self, export: dict, issuer_base: str, public_base: str):
        self.export = export
        self.name = export["realm"]
        self.issuer = f"{issuer_base.rstrip('/')}/realms/{self.name}"
        self.public_issuer = f"{public_base.rstrip('/')}/realms/{self.name}"
        self.enabled = export.get("enabled", True)
        self.access_lifespan = int(export.get("accessTokenLifespan", 300))
        self.default_role = f"default-roles-{self.name}"
        self.clients: dict[str, dict] = {c["clientId"]: c for c in export.get("clients", [])}
        self.users: dict[str, dict] = {}
        self.service_accounts: dict[str, dict] = {}
        for u in export.get("users", []):
            u = dict(u)
            u.setdefault("id", str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.name}/{u['username']}")))
            self.users[u["username"].lower()] = u
            if u.get("serviceAccountClientId"):
                self.service_accounts[u["serviceAccountClientId"]] = u
        # Role composites: realm role name -> {"realm": [...], "client": {client: [...]}}
        self.realm_composites: dict[str, dict] = {
            self.default_role: {"realm": ["offline_access", "uma_authorization"],
                                "client": {ACCOUNT_CLIENT: ["view-profile", "manage-account"]}},
        }
        self.client_composites: dict[str, dict[str, list[str]]] = copy.deepcopy(BUILTIN_CLIENT_COMPOSITES)
        roles = export.get("roles", {}) or {}
        for r in roles.get("realm", []) or []:
            if r.get("composite") and r.get("composites"):
                self.realm_composites[r["name"]] = r["composites"]
        for cid, rl in (roles.get("client", {}) or {}).items():
            for r in rl:
                if r.get("composite") and r.get("composites", {}).get("client"):
                    self.client_composites.setdefault(cid, {})[r["name"]] = r["composites"]
        self.lock = threading.RLock()
        self.keys: list[Key] = []
        self.active: dict[str, Key] = {}
        self.keys.append(Key("RSA-OAEP", "enc", self.name))
        for alg in SIGNING_ALGS:
            k = Key(alg, "sig", self.name)
            self.keys.append(k)
            self.active[alg] = k
        self.hmac_secret = secrets.token_bytes(64)  # refresh tokens (HS512, like Keycloak's hmac-generated)
        self.hmac_kid = str(uuid.uuid4())
        self.jwks_mode = "normal"
        self.jwks_delay = 5.0
        self.token_mode = "normal"
        self.token_delay = 5.0
        self.token_lifespan: int | None = None

    # -- keys ---------------------------------------------------------------------------------------------
    def find_key(self, kid: str) -> Key | None:
        with self.lock:
            for k in self.keys:
                if k.kid == kid:
                    return k
        return None

    def jwks(self, mode: str) -> dict:
        with self.lock:
            pub = [k for k in self.keys if k.published]
        enc = [k for k in pub if k.use == "enc"]
        sig = [k for k in pub if k.use == "sig"]
        if mode == "keycloak_default":
            chosen = enc + [k for k in sig if k.alg == "RS256"]
        elif mode == "sig_first":
            chosen = sig + enc
        elif mode == "sig_only":
            chosen = sig
        elif mode == "empty":
            chosen = []
        else:
            chosen = enc + sig
        return {"keys": [k.jwk() for k in chosen]}

    def rotate(self, drop_old: bool, publish: bool) -> tuple[str, str]:
        new = Key("RS256", "sig", self.name, published=publish)
        with self.lock:
            old = self.active["RS256"]
            if drop_old:
                for k in self.keys:
                    if k.alg == "RS256":
                        k.published = False
            self.keys.insert(0, new)
            self.active["RS256"] = new
        return new.kid, old.kid

    # -- clients & users ----------------------------------------------------------------------------------
    def client(self, client_id: str | None) -> dict | None:
        if not client_id:
            return None
        c = self.clients.get(client_id)
        if c is None or not c.get("enabled", True):
            return None
        return c

    def check_password(self, username: str, password: str) -> dict | None:
        u = self.users.get((username or "").lower())
        if u is None:
            for cand in self.users.values():  # loginWithEmailAllowed
                if cand.get("email", "").lower() == (username or "").lower():
                    u = cand
                    break
        if u is None or not u.get("enabled", True) or u.get("serviceAccountClientId"):
            return None
        for cred in u.get("credentials", []) or []:
            if cred.get("type") == "password" and "value" in cred and hmac.compare_digest(
                    str(cred["value"]).encode(), (password or "").encode()):
                return u
        return None

    def service_account_user(self, client_id: str) -> dict:
        u = self.service_accounts.get(client_id)
        if u is None:
            u = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.name}/sa/{client_id}")),
                 "username": f"service-account-{client_id}", "enabled": True,
                 "serviceAccountClientId": client_id, "realmRoles": [self.default_role]}
            self.service_accounts[client_id] = u
        return u

    def effective_roles(self, user: dict) -> tuple[list[str], dict[str, list[str]]]:
        realm_roles: set[str] = set()
        client_roles: dict[str, set[str]] = {}

        def add_client(cid: str, role: str) -> None:
            s = client_roles.setdefault(cid, set())
            if role in s:
                return
            s.add(role)
            comp = self.client_composites.get(cid, {}).get(role)
            if isinstance(comp, list):
                for r in comp:
                    add_client(cid, r)
            elif isinstance(comp, dict):
                for r in comp.get("realm", []) or []:
                    add_realm(r)
                for c2, rs in (comp.get("client", {}) or {}).items():
                    for r in rs:
                        add_client(c2, r)

        def add_realm(role: str) -> None:
            if role in realm_roles:
                return
            realm_roles.add(role)
            comp = self.realm_composites.get(role, {})
            for r in comp.get("realm", []) or []:
                add_realm(r)
            for cid, rs in (comp.get("client", {}) or {}).items():
                for r in rs:
                    add_client(cid, r)

        for r in user.get("realmRoles", []) or []:
            add_realm(r)
        for cid, rs in (user.get("clientRoles", {}) or {}).items():
            for r in rs:
                add_client(cid, r)
        return sorted(realm_roles), {c: sorted(rs) for c, rs in sorted(client_roles.items()) if rs}

    def allowed_scopes(self, client: dict) -> tuple[list[str], list[str]]:
        default = client.get("defaultClientScopes") or ["web-origins", "acr", "profile", "roles", "basic",
                                                         "email"]
        optional = client.get("optionalClientScopes") or ["address", "phone", "offline_access",
                                                          "microprofile-jwt"]
        return list(default), list(optional)

    def resolve_scope(self, client: dict, requested: str | None) -> tuple[str | None, list[str]]:
        """Returns (error, granted scope names as they appear in the `scope` claim)."""
        default, optional = self.allowed_scopes(client)
        req = [s for s in (requested or "").split() if s]
        bad = [s for s in req if s != "openid" and s not in default and s not in optional]
        if bad:
            return "Invalid scopes: " + " ".join(req), []
        out = []
        if "openid" in req:
            out.append("openid")
        # Scopes with include.in.token.scope=false in Keycloak's defaults do not appear in `scope`.
        hidden = {"web-origins", "acr", "roles", "basic", "service_account"}
        for s in default:
            if s not in hidden and s not in out:
                out.append(s)
        for s in req:
            if s in optional and s not in out:
                out.append(s)
        # Keycloak's order is not stable; use "openid" first, then alphabetical ("openid email profile").
        return None, [s for s in out if s == "openid"] + sorted(s for s in out if s != "openid")

    def audience(self, client: dict, resource_access: dict) -> list[str]:
        aud: list[str] = []
        for m in client.get("protocolMappers", []) or []:
            if m.get("protocolMapper") != "oidc-audience-mapper":
                continue
            cfg = m.get("config", {}) or {}
            if str(cfg.get("access.token.claim", "true")).lower() != "true":
                continue
            for key in ("included.client.audience", "included.custom.audience"):
                v = cfg.get(key)
                if v and v not in aud:
                    aud.append(v)
        # Keycloak's "audience resolve" mapper: every client whose roles are in the token, except azp.
        for cid in resource_access:
            if cid != client["clientId"] and cid not in aud:
                aud.append(cid)
        return aud

    def allowed_origins(self, client: dict) -> list[str] | None:
        origins = client.get("webOrigins") or []
        if not origins:
            return None
        out: list[str] = []
        for o in origins:
            if o == "+":
                for ru in client.get("redirectUris", []) or []:
                    if "*" in ru.split("//", 1)[-1].split("/", 1)[0]:
                        continue
                    p = urlsplit(ru)
                    if p.scheme and p.netloc:
                        out.append(f"{p.scheme}://{p.netloc}")
            else:
                out.append(o)
        return sorted(set(out)) or None

    def client_lifespan(self, client: dict, override: bool = True) -> int:
        """Access-token lifespan for a client-credentials token: the test override, else the client's
        `access.token.lifespan` attribute, else the realm's (Keycloak's precedence). User tokens
        (`override=False`) get the client's attribute or the realm's, as in Keycloak."""
        if self.token_lifespan and override:
            return self.token_lifespan
        attr = (client.get("attributes") or {}).get("access.token.lifespan")
        try:
            return int(attr) if attr and int(attr) > 0 else self.access_lifespan
        except ValueError:
            return self.access_lifespan

    # -- token construction -------------------------------------------------------------------------------
    def access_claims(self, client: dict, user: dict | None, scope: list[str], sid: str | None,
                      service_account: bool, auth_time: int | None = None, client_address: str = "127.0.0.1",
                      acr: str = "1", lifespan: int | None = None) -> dict:
        now = int(time.time())
        if service_account:
            user = self.service_account_user(client["clientId"])
        assert user is not None
        realm_roles, client_roles = self.effective_roles(user)
        resource_access = {c: {"roles": rs} for c, rs in client_roles.items()}
        if not client.get("fullScopeAllowed", True):
            realm_roles, resource_access = [], {}
        claims: dict[str, Any] = {"exp": now + (lifespan or self.access_lifespan), "iat": now}
        if auth_time is not None:
            claims["auth_time"] = auth_time
        claims["jti"] = str(uuid.uuid4())
        claims["iss"] = self.issuer
        aud = self.audience(client, resource_access)
        if len(aud) == 1:
            claims["aud"] = aud[0]
        elif aud:
            claims["aud"] = aud
        claims["sub"] = user["id"]
        claims["typ"] = "Bearer"
        claims["azp"] = client["clientId"]
        if sid:
            claims["sid"] = sid
        claims["acr"] = acr
        origins = self.allowed_origins(client)
        if origins:
            claims["allowed-origins"] = origins
        if realm_roles:
            claims["realm_access"] = {"roles": realm_roles}
        if resource_access:
            claims["resource_access"] = resource_access
        claims["scope"] = " ".join(scope)
        if service_account:
            # clientHost / clientAddress / client_id come from the `service_account` client scope, which
            # Keycloak gives a client created with service accounts enabled; an import must list it.
            with_sa_scope = "service_account" in self.allowed_scopes(client)[0]
            if with_sa_scope:
                claims["clientHost"] = client_address
            claims["email_verified"] = False
            claims["preferred_username"] = user["username"]
            if with_sa_scope:
                claims["clientAddress"] = client_address
                claims["client_id"] = client["clientId"]
        else:
            claims.update(self.profile_claims(user, scope))
        return claims

    @staticmethod
    def profile_claims(user: dict, scope: list[str]) -> dict:
        out: dict[str, Any] = {}
        if "email" in scope:
            out["email_verified"] = bool(user.get("emailVerified", False))
        if "profile" in scope:
            full = " ".join(x for x in (user.get("firstName"), user.get("lastName")) if x)
            if full:
                out["name"] = full
            out["preferred_username"] = user["username"]
            if user.get("firstName"):
                out["given_name"] = user["firstName"]
            if user.get("lastName"):
                out["family_name"] = user["lastName"]
        if "email" in scope and user.get("email"):
            out["email"] = user["email"]
        return out

    def sign(self, claims: dict, alg: str = "RS256", typ: str = "JWT") -> str:
        key = self.active[alg]
        header = keycloak_header(alg, typ, key.kid)
        return jws(header, claims, lambda data: key.sign(alg, data))

    def sign_refresh(self, claims: dict) -> str:
        header = keycloak_header("HS512", "JWT", self.hmac_kid)
        return jws(header, claims, lambda data: hmac.new(self.hmac_secret, data, hashlib.sha512).digest())

    def verify_own(self, token: str, expect_typ: str) -> dict | None:
        """Verify a token this realm issued (PyJWT). Returns claims or None."""
        try:
            header = pyjwt.get_unverified_header(token)
            if header.get("alg") == "HS512":
                if header.get("kid") != self.hmac_kid:
                    return None
                claims = pyjwt.decode(token, self.hmac_secret, algorithms=["HS512"],
                                      options={"verify_aud": False})
            else:
                key = self.find_key(header.get("kid", ""))
                if key is None or key.use != "sig":
                    return None
                claims = pyjwt.decode(token, key.public, algorithms=[header["alg"]],
                                      options={"verify_aud": False})
        except Exception:  # noqa: BLE001 - any failure means "not a valid token of ours"
            return None
        if claims.get("iss") != self.issuer or claims.get("typ") != expect_typ:
            return None
        return claims


def jws(header_json: str, claims: dict, signer) -> str:
    signing_input = b64u(header_json.encode()) + "." + b64u(compact_json(claims).encode())
    return signing_input + "." + b64u(signer(signing_input.encode("ascii")))


def redirect_uri_valid(client: dict, redirect_uri: str, key: str = "redirectUris") -> bool:
    """Keycloak RedirectUtils semantics: exact match, or prefix match when the registered value ends with
    '*' ('*' alone allows everything); for http://localhost and http://127.0.0.1 the port is ignored when
    the registered URI has none (RFC 8252 loopback redirects). Query strings are compared too (Keycloak
    >= 19 does not strip them)."""
    if key == "post.logout.redirect.uris":
        raw = (client.get("attributes", {}) or {}).get(key, "")
        allowed = [x for x in raw.split("##") if x]
        if "+" in allowed:
            allowed = [x for x in allowed if x != "+"] + list(client.get("redirectUris", []) or [])
    else:
        allowed = list(client.get(key, []) or [])
    if not allowed or not redirect_uri:
        return False
    p = urlsplit(redirect_uri)
    if p.fragment:
        return False
    # lower-case scheme and host like Keycloak
    norm = redirect_uri
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)(.*)$", redirect_uri)
    if m:
        norm = m.group(1).lower() + m.group(2)

    def matches(r: str) -> bool:
        for v in allowed:
            if v.endswith("*"):
                prefix = v[:-1]
                if r.startswith(prefix):
                    return True
                if prefix.endswith("/") and len(prefix) > 1 and r == prefix[:-1]:
                    return True
            elif v == r:
                return True
        return False

    if matches(norm):
        return True
    for loop in ("http://localhost", "http://127.0.0.1"):
        if norm.startswith(loop + ":"):
            rest = norm[len(loop) + 1:]
            i = rest.find("/")
            stripped = loop + (rest[i:] if i >= 0 else "")
            return matches(stripped)
    return False


# ----------------------------------------------------------------------------------------------------------
# server state
# ----------------------------------------------------------------------------------------------------------
class IdP:
    def __init__(self, exports: list[dict], issuer_base: str, public_base: str):
        self.realms: dict[str, Realm] = {}
        for e in exports:
            r = Realm(e, issuer_base, public_base)
            self.realms[r.name] = r
        self.default_realm = exports[0]["realm"]
        self.lock = threading.Lock()
        self.stats: dict[str, dict[str, int]] = {}
        self.reset_stats()
        self.login_sessions: dict[str, dict] = {}
        self.codes: dict[str, dict] = {}
        self.sso_sessions: dict[str, dict] = {}

    def reset_stats(self) -> None:
        with self.lock:
            self.stats = {k: {r: 0 for r in self.realms} for k in
                          ("jwks_fetches", "discovery_fetches", "token_requests", "userinfo_requests")}

    def count(self, what: str, realm: str) -> None:
        with self.lock:
            self.stats[what][realm] = self.stats[what].get(realm, 0) + 1

    def gc(self) -> None:
        now = time.time()
        with self.lock:
            for table in (self.login_sessions, self.codes):
                for k in [k for k, v in table.items() if v["expires"] < now]:
                    del table[k]


def clone_realm(export: dict, new_name: str) -> dict:
    old = export["realm"]
    text = json.dumps(export).replace(f"default-roles-{old}", f"default-roles-{new_name}")
    out = json.loads(text)
    out["realm"] = new_name
    for u in out.get("users", []):
        if "id" in u:  # distinct subjects per realm, still deterministic
            u["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{new_name}/{u['id']}"))
    return out


# ----------------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------------
class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str, headers: dict | None = None):
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers = headers or {}


LOGIN_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in to {realm_title}</title></head>
<body id="keycloak-bg">
<h1 id="kc-page-title">Sign in to your account</h1>
{error}
<form id="kc-form-login" action="{action}" method="post">
  <label for="username">Username or email</label>
  <input id="username" name="username" type="text" value="{username}" autofocus autocomplete="username">
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password">
  <input type="hidden" id="id-hidden-input" name="credentialId" value="">
  <input id="kc-login" name="login" type="submit" value="Sign In">
</form>
</body></html>
"""

ERROR_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1 id="kc-page-title">{title}</h1><p id="kc-error-message" class="instruction">{message}</p></body></html>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "meshgate-dev-idp"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    idp: IdP  # set on the subclass by make_server

    # ---- plumbing ---------------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # replaced by _log

    def _log(self, status: int, size: int) -> None:
        parts = urlsplit(self.path)
        qnames = sorted(parse_qs(parts.query, keep_blank_values=True))
        q = ("?" + "&".join(qnames)) if qnames else ""
        sys.stderr.write(f"idp {time.strftime('%H:%M:%S')} {self.client_address[0]} "
                         f"\"{self.command} {parts.path}{q}\" {status} {size}\n")
        sys.stderr.flush()

    def _send(self, status: int, body: bytes | str, ctype: str = "application/json",
              headers: dict | None = None) -> None:
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            if isinstance(v, list):
                for item in v:
                    self.send_header(k, item)
            else:
                self.send_header(k, v)
        self.end_headers()
        self._log(status, len(body))  # before the body: once a client has the response, the line is logged
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        self._send(status, compact_json(obj), "application/json", headers)

    def _html(self, status: int, text: str, headers: dict | None = None) -> None:
        self._send(status, text, "text/html;charset=utf-8", headers)

    def _redirect(self, location: str, headers: dict | None = None) -> None:
        h = {"Location": location}
        h.update(headers or {})
        self._send(302, b"", "text/html;charset=utf-8", h)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise OAuthError(413, "invalid_request", "request body too large")
        return self.rfile.read(n) if n > 0 else b""

    def _form(self) -> dict[str, str]:
        raw = self._body()
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if raw and ctype not in ("application/x-www-form-urlencoded", ""):
            raise OAuthError(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
        return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}

    def _query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}

    def _cookies(self) -> dict[str, str]:
        out = {}
        for part in (self.headers.get("Cookie") or "").split(";"):
            if "=" in part:
                k, v = part.split("=", 1)
                out[k.strip()] = v.strip()
        return out

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        try:
            if path.startswith("/_admin/"):
                self._admin(method, path[len("/_admin/"):])
                return
            m = re.match(r"^/realms/([^/]+)(/.*)?$", path)
            if not m or m.group(1) not in self.idp.realms:
                if method == "POST":
                    self._body()
                self._json(404, {"error": "Realm does not exist"} if m else {"error": "Unable to find matching target resource method"})
                return
            realm = self.idp.realms[m.group(1)]
            sub = m.group(2) or "/"
            self._realm(method, realm, sub)
        except OAuthError as e:
            self._json(e.status, {"error": e.error, "error_description": e.description}, e.headers)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001 - a dev server must answer, not die
            sys.stderr.write(f"idp: internal error on {method} {path}: {type(e).__name__}: {e}\n")
            try:
                self._json(500, {"error": "server_error", "error_description": type(e).__name__})
            except Exception:  # noqa: BLE001
                pass

    # ---- realm endpoints --------------------------------------------------------------------------------
    def _realm(self, method: str, realm: Realm, sub: str) -> None:
        oidc = "/protocol/openid-connect"
        if sub == "/.well-known/openid-configuration" and method == "GET":
            self.idp.count("discovery_fetches", realm.name)
            self._json(200, discovery(realm))
        elif sub == f"{oidc}/certs" and method == "GET":
            self._certs(realm)
        elif sub == f"{oidc}/token" and method == "POST":
            self.idp.count("token_requests", realm.name)
            self._token(realm)
        elif sub == f"{oidc}/token/introspect" and method == "POST":
            self._introspect(realm)
        elif sub == f"{oidc}/auth" and method == "GET":
            self._auth(realm, self._query())
        elif sub == f"{oidc}/auth" and method == "POST":
            self._auth(realm, self._form())
        elif sub == "/login-actions/authenticate" and method == "POST":
            self._login_post(realm)
        elif sub == f"{oidc}/userinfo" and method in ("GET", "POST"):
            if method == "POST":
                self._body()
            self.idp.count("userinfo_requests", realm.name)
            self._userinfo(realm)
        elif sub == f"{oidc}/logout" and method in ("GET", "POST"):
            params = self._query()
            if method == "POST":
                params.update(self._form())
            self._logout(realm, params)
        elif sub == "/" and method == "GET":
            key = realm.active["RS256"]
            self._json(200, {"realm": realm.name,
                             "public_key": base64.b64encode(key.spki_der).decode("ascii"),
                             "token-service": f"{realm.issuer}{oidc}",
                             "account-service": f"{realm.issuer}/account", "tokens-not-before": 0})
        else:
            if method == "POST":
                self._body()
            self._json(404, {"error": "Unable to find matching target resource method"})

    def _certs(self, realm: Realm) -> None:
        self.idp.count("jwks_fetches", realm.name)
        mode = realm.jwks_mode
        if mode in ("slow", "slow_error500"):
            time.sleep(max(0.0, min(realm.jwks_delay, 60.0)))
        if mode == "reset":
            # Close the connection without a response (a crashed or reset upstream).
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if mode == "huge":
            # A valid JWKS padded to 10 MB (a misconfigured or malicious endpoint).
            body = compact_json(realm.jwks("normal"))
            self._send(200, body[:-1] + ',"padding":"' + "x" * (10 * 1024 * 1024) + '"}')
            return
        if mode in ("many_keys", "many_keys_last"):
            # 1,000 keys: the realm's own keys first, or after 1,000 keys that match no token.
            own = realm.jwks("normal")["keys"]
            es = next(k for k in own if k.get("alg") == "ES256")
            junk = [dict(es, kid=f"junk-{i}") for i in range(1000)]
            self._json(200, {"keys": own + junk if mode == "many_keys" else junk + own})
            return
        if mode == "weak_rsa":
            # Signature keys a verifier must refuse (RFC 7518 §3.3 minimum size; BoringSSL's e cap).
            own = realm.jwks("normal")["keys"]
            rs = next(k for k in own if k.get("alg") == "RS256")
            n1024 = b64u(bytes([0xC7]) * 128)
            big_e = b64u(((1 << 33) + 1).to_bytes(5, "big"))
            weak = [dict(rs, kid="weak-1024", n=n1024), dict(rs, kid="weak-big-e", e=big_e)]
            self._json(200, {"keys": own + weak})
            return
        if mode in ("error500", "slow_error500"):
            self._json(500, {"error": "unknown_error"})
        elif mode == "notfound":
            self._json(404, {"error": "Unable to find matching target resource method"})
        elif mode == "garbage":
            self._send(200, b'{"keys": [ this is not json', "application/json")
        else:
            self._json(200, realm.jwks(mode))

    # ---- client authentication --------------------------------------------------------------------------
    def _authenticate_client(self, realm: Realm, form: dict[str, str], allow_public: bool = True) -> dict:
        client_id, secret = None, None
        auth = self.headers.get("Authorization") or ""
        if auth[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
                cid, _, sec = decoded.partition(":")
                from urllib.parse import unquote_plus
                client_id, secret = unquote_plus(cid), unquote_plus(sec)
            except Exception:  # noqa: BLE001
                raise OAuthError(400, "invalid_request", "Invalid Authorization header") from None
        else:
            client_id = form.get("client_id")
            secret = form.get("client_secret")
        if not client_id:
            raise OAuthError(400, "invalid_client", "Missing parameter: client_id")
        if form.get("client_id") and form["client_id"] != client_id:
            raise OAuthError(400, "invalid_request", "client_id parameter does not match authenticated client")
        client = realm.client(client_id)
        if client is None:
            raise OAuthError(401, "invalid_client", "Invalid client or Invalid client credentials")
        if client.get("publicClient"):
            if not allow_public:
                raise OAuthError(401, "unauthorized_client", "Public client not allowed")
            return client
        expected = client.get("secret")
        # A bearer-only client cannot authenticate at all in Keycloak (token endpoint and introspection alike).
        if (not secret or not expected or client.get("bearerOnly")
                or not hmac.compare_digest(secret.encode(), str(expected).encode())):
            raise OAuthError(401, "unauthorized_client", "Invalid client or Invalid client credentials")
        return client

    # ---- token endpoint ---------------------------------------------------------------------------------
    def _token(self, realm: Realm) -> None:
        form = self._form()
        mode = realm.token_mode
        if mode == "slow":
            time.sleep(max(0.0, min(realm.token_delay, 60.0)))
        elif mode == "error500":
            self._json(500, {"error": "unknown_error"})
            return
        elif mode == "garbage":
            self._send(200, b'{"access_token": this is not json', "application/json")
            return
        elif mode == "reset":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        grant = form.get("grant_type")
        if not grant:
            raise OAuthError(400, "invalid_request", "Missing form parameter: grant_type")
        device = "urn:ietf:params:oauth:grant-type:device_code"
        if grant not in ("client_credentials", "password", "refresh_token", "authorization_code", device):
            raise OAuthError(400, "unsupported_grant_type", "Unsupported grant_type")
        client = self._authenticate_client(realm, form)
        if grant == device:  # Keycloak knows the grant; no client of the export enables it
            raise OAuthError(400, "invalid_grant", "Client not allowed OAuth 2.0 Device Authorization Grant")
        client_address = self.client_address[0]
        if grant == "client_credentials":
            if client.get("publicClient"):
                raise OAuthError(401, "unauthorized_client", "Public client not allowed to retrieve service account")
            if not client.get("serviceAccountsEnabled"):
                raise OAuthError(401, "unauthorized_client", "Client not enabled to retrieve service account")
            err, scope = realm.resolve_scope(client, form.get("scope"))
            if err:
                raise OAuthError(400, "invalid_scope", err)
            lifespan = realm.client_lifespan(client)
            claims = realm.access_claims(client, None, scope, None, True, client_address=client_address,
                                         lifespan=lifespan)
            self._json(200, {"access_token": realm.sign(claims), "expires_in": lifespan,
                             "refresh_expires_in": 0, "token_type": "Bearer", "not-before-policy": 0,
                             "scope": claims["scope"]})
            return
        if grant == "password":
            if not client.get("directAccessGrantsEnabled"):
                raise OAuthError(400, "unauthorized_client", "Client not allowed for direct access grants")
            user = realm.check_password(form.get("username", ""), form.get("password", ""))
            if user is None:
                raise OAuthError(401, "invalid_grant", "Invalid user credentials")
            err, scope = realm.resolve_scope(client, form.get("scope"))
            if err:
                raise OAuthError(400, "invalid_scope", err)
            sid = str(uuid.uuid4())
            with self.idp.lock:
                self.idp.sso_sessions[sid] = {"realm": realm.name, "user": user["username"].lower(),
                                              "auth_time": int(time.time())}
            self._json(200, self._token_response(realm, client, user, scope, sid, None, None))
            return
        if grant == "refresh_token":
            rt = realm.verify_own(form.get("refresh_token", ""), "Refresh")
            if rt is None or rt.get("azp") != client["clientId"]:
                raise OAuthError(400, "invalid_grant", "Invalid refresh token")
            with self.idp.lock:
                sess = self.idp.sso_sessions.get(rt.get("sid", ""))
            if sess is None:
                raise OAuthError(400, "invalid_grant", "Session not active")
            user = realm.users.get(sess["user"])
            if user is None or not user.get("enabled", True):
                raise OAuthError(400, "invalid_grant", "User disabled")
            scope = rt.get("scope", "").split()
            self._json(200, self._token_response(realm, client, user, scope, rt["sid"], None,
                                                 sess.get("auth_time")))
            return
        # authorization_code
        code = form.get("code", "")
        with self.idp.lock:
            entry = self.idp.codes.pop(code, None)
        if entry is None or entry["expires"] < time.time() or entry["realm"] != realm.name:
            raise OAuthError(400, "invalid_grant", "Code not valid")
        if entry["client_id"] != client["clientId"]:
            raise OAuthError(400, "invalid_grant", "Auth error")
        if entry["redirect_uri"] != form.get("redirect_uri"):
            raise OAuthError(400, "invalid_grant", "Incorrect redirect_uri")
        challenge = entry.get("code_challenge")
        verifier = form.get("code_verifier")
        if challenge:
            if not verifier:
                raise OAuthError(400, "invalid_grant", "PKCE code verifier not specified")
            if not re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", verifier):
                raise OAuthError(400, "invalid_grant", "PKCE invalid code verifier")
            if entry["code_challenge_method"] == "S256":
                computed = b64u(hashlib.sha256(verifier.encode("ascii")).digest())
            else:
                computed = verifier
            if not hmac.compare_digest(computed, challenge):
                raise OAuthError(400, "invalid_grant", "PKCE verification failed: Code mismatch")
        elif verifier:
            raise OAuthError(400, "invalid_grant", "PKCE code verifier specified but challenge not present in authorization")
        user = realm.users[entry["user"]]
        self._json(200, self._token_response(realm, client, user, entry["scope"], entry["sid"],
                                             entry.get("nonce"), entry["auth_time"], acr=entry.get("acr", "1")))

    def _token_response(self, realm: Realm, client: dict, user: dict, scope: list[str], sid: str,
                        nonce: str | None, auth_time: int | None, acr: str = "1") -> dict:
        lifespan = realm.client_lifespan(client, override=False)
        claims = realm.access_claims(client, user, scope, sid, False, auth_time=auth_time, acr=acr,
                                     lifespan=lifespan)
        access = realm.sign(claims)
        now = claims["iat"]
        refresh_claims = {"exp": now + REFRESH_LIFESPAN, "iat": now, "jti": str(uuid.uuid4()),
                          "iss": realm.issuer, "aud": realm.issuer, "sub": user["id"], "typ": "Refresh",
                          "azp": client["clientId"], "sid": sid, "scope": " ".join(scope)}
        out = {"access_token": access, "expires_in": lifespan,
               "refresh_expires_in": REFRESH_LIFESPAN, "refresh_token": realm.sign_refresh(refresh_claims),
               "token_type": "Bearer"}
        if "openid" in scope:
            idc: dict[str, Any] = {"exp": claims["exp"], "iat": now}
            if auth_time is not None:
                idc["auth_time"] = auth_time
            idc.update({"jti": str(uuid.uuid4()), "iss": realm.issuer, "aud": client["clientId"],
                        "sub": user["id"], "typ": "ID", "azp": client["clientId"]})
            if nonce:
                idc["nonce"] = nonce
            idc["sid"] = sid
            idc["at_hash"] = b64u(hashlib.sha256(access.encode("ascii")).digest()[:16])
            idc["acr"] = acr
            idc.update(realm.profile_claims(user, scope))
            out["id_token"] = realm.sign(idc)
        out.update({"not-before-policy": 0, "session_state": sid, "scope": " ".join(scope)})
        return out

    # ---- introspection / userinfo -----------------------------------------------------------------------
    def _introspect(self, realm: Realm) -> None:
        form = self._form()
        self._authenticate_client(realm, form, allow_public=False)
        token = form.get("token", "")
        claims = realm.verify_own(token, "Bearer") or realm.verify_own(token, "Refresh")
        if claims is None:
            self._json(200, {"active": False})
            return
        out = dict(claims)
        out.update({"client_id": claims.get("azp"), "username": claims.get("preferred_username"),
                    "token_type": claims.get("typ"), "active": True})
        self._json(200, out)

    def _userinfo(self, realm: Realm) -> None:
        auth = self.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        claims = realm.verify_own(token, "Bearer") if token else None
        if claims is None:
            desc = "Token verification failed" if token else "Missing token"
            self._json(401, {"error": "invalid_token", "error_description": desc},
                       {"WWW-Authenticate": f'Bearer realm="{realm.name}", error="invalid_token", '
                                            f'error_description="{desc}"'})
            return
        user = next((u for u in realm.users.values() if u["id"] == claims.get("sub")), None)
        if user is None:
            sa = next((u for u in realm.service_accounts.values() if u["id"] == claims.get("sub")), None)
            self._json(200, {"sub": claims["sub"], "email_verified": False,
                             "preferred_username": (sa or {}).get("username", "")})
            return
        out = {"sub": user["id"]}
        out.update(realm.profile_claims(user, claims.get("scope", "").split()))
        self._json(200, out)

    # ---- browser flow -----------------------------------------------------------------------------------
    def _auth(self, realm: Realm, params: dict[str, str]) -> None:
        self.idp.gc()
        client = realm.client(params.get("client_id"))
        if client is None:
            self._html(400, ERROR_PAGE.format(title="We are sorry...", message="Client not found."))
            return
        redirect_uri = params.get("redirect_uri", "")
        if not redirect_uri_valid(client, redirect_uri):
            self._html(400, ERROR_PAGE.format(title="We are sorry...", message="Invalid parameter: redirect_uri"))
            return
        state = params.get("state")

        def err(code: str, desc: str) -> None:
            q = {"error": code, "error_description": desc}
            if state is not None:
                q["state"] = state
            q["iss"] = realm.issuer
            self._redirect(_append_query(redirect_uri, q))

        if params.get("response_type") != "code":
            return err("unsupported_response_type", "Client is not allowed to initiate browser login with given response_type. Standard flow is disabled for the client.")
        if not client.get("standardFlowEnabled", True) or client.get("bearerOnly"):
            return err("unauthorized_client", "Client is not allowed to initiate browser login with given response_type. Standard flow is disabled for the client.")
        scope_err, scope = realm.resolve_scope(client, params.get("scope"))
        if scope_err:
            return err("invalid_scope", "Invalid scopes: " + params.get("scope", ""))
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        required = (client.get("attributes", {}) or {}).get("pkce.code.challenge.method")
        if method and method not in ("plain", "S256"):
            return err("invalid_request", "Invalid parameter: code challenge method is not configured one")
        if required:
            if not challenge:
                return err("invalid_request", "Missing parameter: code_challenge_method")
            if (method or "plain") != required:
                return err("invalid_request", "Invalid parameter: code challenge method is not matching the configured one")
        if challenge and not re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", challenge):
            return err("invalid_request", "Invalid parameter: code_challenge")
        request = {"realm": realm.name, "client_id": client["clientId"], "redirect_uri": redirect_uri,
                   "state": state, "nonce": params.get("nonce"), "scope": scope,
                   "code_challenge": challenge, "code_challenge_method": (method or "plain") if challenge else None,
                   "expires": time.time() + LOGIN_SESSION_LIFESPAN}
        # SSO: an existing login session (cookie) skips the form unless prompt=login / max_age=0.
        sid = self._cookies().get(f"KEYCLOAK_SESSION_{realm.name}")
        prompt = params.get("prompt", "")
        with self.idp.lock:
            sess = self.idp.sso_sessions.get(sid or "")
        if sess and sess["realm"] == realm.name and "login" not in prompt.split() and params.get("max_age") != "0":
            self._issue_code(realm, request, sess["user"], sid, sess["auth_time"], acr="0")
            return
        if "none" in prompt.split():
            return err("login_required", "")
        session_code = secrets.token_urlsafe(24)
        with self.idp.lock:
            self.idp.login_sessions[session_code] = request
        self._login_form(realm, session_code, request, "", "")

    def _login_form(self, realm: Realm, session_code: str, request: dict, username: str, error: str) -> None:
        action = (f"{realm.public_issuer}/login-actions/authenticate?"
                  + urlencode({"session_code": session_code, "client_id": request["client_id"]}))
        # A relative action works whichever address the browser used to reach us.
        action = urlsplit(action)._replace(scheme="", netloc="").geturl()
        err_html = f'<span id="input-error" class="kc-feedback-text">{html.escape(error)}</span>' if error else ""
        self._html(200, LOGIN_PAGE.format(
            realm_title=html.escape(realm.export.get("displayName") or realm.name), error=err_html,
            action=html.escape(action, quote=True), username=html.escape(username, quote=True)))

    def _login_post(self, realm: Realm) -> None:
        form = self._form()
        session_code = self._query().get("session_code", "")
        with self.idp.lock:
            request = self.idp.login_sessions.get(session_code)
        if request is None or request["expires"] < time.time() or request["realm"] != realm.name:
            self._html(400, ERROR_PAGE.format(title="We are sorry...",
                                              message="Your login attempt timed out. Login will start from the beginning."))
            return
        user = realm.check_password(form.get("username", ""), form.get("password", ""))
        if user is None:
            self._login_form(realm, session_code, request, form.get("username", ""), "Invalid username or password.")
            return
        with self.idp.lock:
            self.idp.login_sessions.pop(session_code, None)
            sid = str(uuid.uuid4())
            auth_time = int(time.time())
            self.idp.sso_sessions[sid] = {"realm": realm.name, "user": user["username"].lower(),
                                          "auth_time": auth_time}
        path = f"/realms/{realm.name}/"
        cookies = [f"KEYCLOAK_SESSION_{realm.name}={sid}; Path={path}; HttpOnly; SameSite=Lax",
                   f"KEYCLOAK_IDENTITY_{realm.name}={secrets.token_urlsafe(16)}; Path={path}; HttpOnly; SameSite=Lax"]
        self._issue_code(realm, request, user["username"].lower(), sid, auth_time, set_cookies=cookies)

    def _issue_code(self, realm: Realm, request: dict, username: str, sid: str, auth_time: int,
                    set_cookies: list[str] | None = None, acr: str = "1") -> None:
        code = f"{uuid.uuid4()}.{sid}.{uuid.uuid4()}"
        entry = dict(request)
        entry.update({"user": username, "sid": sid, "auth_time": auth_time, "acr": acr,
                      "expires": time.time() + CODE_LIFESPAN})
        with self.idp.lock:
            self.idp.codes[code] = entry
        q = {}
        if request.get("state") is not None:
            q["state"] = request["state"]
        q.update({"session_state": sid, "iss": realm.issuer, "code": code})
        headers = {"Set-Cookie": set_cookies} if set_cookies else None
        self._redirect(_append_query(request["redirect_uri"], q), headers)

    def _logout(self, realm: Realm, params: dict[str, str]) -> None:
        sid = self._cookies().get(f"KEYCLOAK_SESSION_{realm.name}")
        hint = params.get("id_token_hint")
        client = realm.client(params.get("client_id"))
        if hint:
            claims = realm.verify_own(hint, "ID")
            if claims is None:
                self._html(400, ERROR_PAGE.format(title="We are sorry...", message="Invalid parameter: id_token_hint"))
                return
            sid = sid or claims.get("sid")
            client = client or realm.client(claims.get("azp"))
        with self.idp.lock:
            if sid:
                self.idp.sso_sessions.pop(sid, None)
        path = f"/realms/{realm.name}/"
        expire = [f"KEYCLOAK_SESSION_{realm.name}=; Path={path}; Max-Age=0",
                  f"KEYCLOAK_IDENTITY_{realm.name}=; Path={path}; Max-Age=0"]
        target = params.get("post_logout_redirect_uri")
        if target:
            if client is None or not redirect_uri_valid(client, target, "post.logout.redirect.uris"):
                self._html(400, ERROR_PAGE.format(title="We are sorry...", message="Invalid redirect uri"),
                           {"Set-Cookie": expire})
                return
            q = {"state": params["state"]} if params.get("state") else {}
            self._redirect(_append_query(target, q) if q else target, {"Set-Cookie": expire})
            return
        self._html(200, ERROR_PAGE.format(title="You are logged out", message="You are logged out"),
                   {"Set-Cookie": expire})

    # ---- admin ------------------------------------------------------------------------------------------
    def _admin_realm(self, q: dict[str, str]) -> Realm:
        name = q.get("realm") or self.idp.default_realm
        r = self.idp.realms.get(name)
        if r is None:
            raise OAuthError(404, "not_found", f"unknown realm {name!r}")
        return r

    def _admin(self, method: str, what: str) -> None:
        q = self._query()
        body = self._body() if method == "POST" else b""
        if what == "health" and method == "GET":
            self._json(200, {"ok": True, "realms": sorted(self.idp.realms)})
        elif what == "stats" and method == "GET":
            with self.idp.lock:
                self._json(200, copy.deepcopy(self.idp.stats))
        elif what == "reset-stats" and method == "POST":
            self.idp.reset_stats()
            self._json(200, {"ok": True})
        elif what == "realms" and method == "GET":
            out = {}
            for r in self.idp.realms.values():
                with r.lock:
                    out[r.name] = {"issuer": r.issuer, "active_kid": r.active["RS256"].kid,
                                   "active_kids": {a: k.kid for a, k in r.active.items()},
                                   "published_kids": [k.kid for k in r.keys if k.published],
                                   "jwks_mode": r.jwks_mode}
            self._json(200, out)
        elif what == "rotate" and method == "POST":
            r = self._admin_realm(q)
            kid, old = r.rotate(q.get("drop_old") in ("1", "true"), q.get("publish", "1") not in ("0", "false"))
            self._json(200, {"kid": kid, "previous_kid": old})
        elif what in ("publish", "unpublish") and method == "POST":
            r = self._admin_realm(q)
            k = r.find_key(q.get("kid", ""))
            if k is None:
                raise OAuthError(404, "not_found", "unknown kid")
            with r.lock:
                k.published = what == "publish"
            self._json(200, {"kid": k.kid, "published": k.published})
        elif what == "jwks-mode" and method == "POST":
            r = self._admin_realm(q)
            mode = q.get("mode", "normal")
            if mode not in ("normal", "keycloak_default", "sig_first", "sig_only", "empty", "error500", "slow", "slow_error500", "reset", "huge", "many_keys", "many_keys_last", "weak_rsa",
                            "garbage", "notfound"):
                raise OAuthError(400, "invalid_request", f"unknown mode {mode!r}")
            with r.lock:
                r.jwks_mode = mode
                if "delay" in q:
                    r.jwks_delay = max(0.0, min(float(q["delay"]), 60.0))
            self._json(200, {"realm": r.name, "mode": mode, "delay": r.jwks_delay})
        elif what == "token-mode" and method == "POST":
            r = self._admin_realm(q)
            mode = q.get("mode", "normal")
            if mode not in ("normal", "error500", "reset", "slow", "garbage"):
                raise OAuthError(400, "invalid_request", f"unknown token mode {mode!r}")
            with r.lock:
                r.token_mode = mode
                if "delay" in q:
                    r.token_delay = max(0.0, min(float(q["delay"]), 60.0))
                if "lifespan" in q:
                    n = int(q["lifespan"])
                    if not 0 <= n <= 86400:
                        raise OAuthError(400, "invalid_request", "lifespan must be 0..86400")
                    r.token_lifespan = n or None
            self._json(200, {"realm": r.name, "mode": mode, "delay": r.token_delay,
                             "lifespan": r.token_lifespan})
        elif what == "mint" and method == "POST":
            try:
                spec = json.loads(body or b"{}")
            except ValueError:
                raise OAuthError(400, "invalid_request", "body must be JSON") from None
            if not isinstance(spec, dict):
                raise OAuthError(400, "invalid_request", "body must be a JSON object")
            self._json(200, mint(self.idp, spec, self.client_address[0]))
        else:
            self._json(404, {"error": "not_found", "error_description": f"no admin endpoint {method} {what}"})


def _append_query(uri: str, params: dict[str, str]) -> str:
    sep = "&" if "?" in uri else "?"
    return uri + sep + urlencode(params, quote_via=quote)


def discovery(realm: Realm) -> dict:
    iss = realm.issuer
    front = realm.public_issuer
    oidc = "/protocol/openid-connect"
    algs = ["PS384", "RS384", "EdDSA", "ES384", "HS256", "HS512", "ES256", "RS256", "HS384", "ES512", "PS256",
            "PS512", "RS512"]
    return {
        "issuer": iss,
        "authorization_endpoint": f"{front}{oidc}/auth",
        "token_endpoint": f"{iss}{oidc}/token",
        "introspection_endpoint": f"{iss}{oidc}/token/introspect",
        "userinfo_endpoint": f"{iss}{oidc}/userinfo",
        "end_session_endpoint": f"{front}{oidc}/logout",
        "frontchannel_logout_session_supported": True,
        "frontchannel_logout_supported": True,
        "jwks_uri": f"{iss}{oidc}/certs",
        "grant_types_supported": ["authorization_code", "refresh_token", "password", "client_credentials"],
        "acr_values_supported": ["0", "1"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public", "pairwise"],
        "prompt_values_supported": ["none", "login", "consent"],
        "id_token_signing_alg_values_supported": algs,
        "id_token_encryption_alg_values_supported": ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"],
        "userinfo_signing_alg_values_supported": algs + ["none"],
        "request_object_signing_alg_values_supported": algs + ["none"],
        "response_modes_supported": ["query"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "claims_supported": ["aud", "sub", "iss", "auth_time", "name", "given_name", "family_name",
                             "preferred_username", "email", "acr"],
        "claim_types_supported": ["normal"],
        "claims_parameter_supported": True,
        "scopes_supported": ["openid", "profile", "email", "roles", "web-origins", "acr", "basic", "address",
                             "phone", "offline_access", "microprofile-jwt"],
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "require_request_uri_registration": True,
        "code_challenge_methods_supported": ["plain", "S256"],
        "tls_client_certificate_bound_access_tokens": True,
        "backchannel_logout_supported": False,
        "backchannel_logout_session_supported": False,
        "authorization_response_iss_parameter_supported": True,
    }


# ----------------------------------------------------------------------------------------------------------
# /_admin/mint
# ----------------------------------------------------------------------------------------------------------
def mint(idp: IdP, spec: dict, client_address: str) -> dict:
    realm = idp.realms.get(spec.get("realm") or idp.default_realm)
    if realm is None:
        raise OAuthError(404, "not_found", f"unknown realm {spec.get('realm')!r}")
    service_account = bool(spec.get("service_account"))
    client_id = spec.get("client") or ("frontend" if service_account else "demo-cli")
    client = realm.client(client_id)
    if client is None:
        raise OAuthError(400, "invalid_request", f"unknown client {client_id!r}")
    user = None
    if not service_account:
        uname = (spec.get("user") or "alice").lower()
        user = realm.users.get(uname)
        if user is None:
            raise OAuthError(400, "invalid_request", f"unknown user {uname!r}")
    err, scope = realm.resolve_scope(client, spec.get("scope", "openid email profile"))
    if err:
        raise OAuthError(400, "invalid_scope", err)
    sid = None if service_account else str(uuid.uuid4())
    claims = realm.access_claims(client, user, scope, sid, service_account, client_address=client_address)
    now = int(time.time())
    claims["iat"] = now + int(spec.get("iat_in", 0))
    claims["exp"] = now + int(spec.get("exp_in", realm.access_lifespan))
    if spec.get("nbf_in") is not None:
        claims["nbf"] = now + int(spec["nbf_in"])
    if "audience" in spec:
        if spec["audience"] is None:
            claims.pop("aud", None)
        else:
            claims["aud"] = spec["audience"]
    for k, v in (spec.get("claims") or {}).items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v

    alg = spec.get("alg", "RS256")
    sign_with = spec.get("sign_with", "active")
    header_alg = alg
    key: Key | None = None
    signer = None
    if alg in SIGNING_ALGS:
        key_alg = spec.get("signing_key") or alg
        if key_alg not in realm.active:
            raise OAuthError(400, "invalid_request", f"no key for signing_key {key_alg!r}")
        published = realm.active[key_alg]
        if (published.alg in RSA_ALGS) != (alg in RSA_ALGS) or (published.alg in EC_CURVES) != (alg in EC_CURVES):
            raise OAuthError(400, "invalid_request", f"a {published.alg} key cannot sign {alg}")
        if alg in EC_CURVES and published.alg != alg:
            raise OAuthError(400, "invalid_request", "ECDSA algs need their own curve")
        key = published
        if sign_with == "unpublished":
            key = Key(published.alg, "sig", realm.name, published=False)
        elif sign_with != "active":
            raise OAuthError(400, "invalid_request", "sign_with must be active|unpublished")
        default_kid = published.kid
        k = key
        signer = lambda data: k.sign(alg, data)  # noqa: E731
    elif alg == "HS256-with-rsa-public-key":
        header_alg = "HS256"
        rsa_key = realm.active["RS256"]
        form = spec.get("hmac_key_form", "pem")
        secret = rsa_key.spki_pem if form == "pem" else rsa_key.spki_der
        default_kid = rsa_key.kid
        signer = lambda data: hmac.new(secret, data, hashlib.sha256).digest()  # noqa: E731
    elif alg in ("HS256", "HS384", "HS512"):
        secret = str(spec.get("hmac_secret", "")).encode()
        if not secret:
            raise OAuthError(400, "invalid_request", "HS* needs hmac_secret")
        default_kid = None
        h = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        signer = lambda data: hmac.new(secret, data, h).digest()  # noqa: E731
    elif alg == "none":
        default_kid = None
        signer = lambda data: b""  # noqa: E731
    else:
        raise OAuthError(400, "invalid_request", f"unsupported alg {alg!r}")

    kid = spec["kid"] if "kid" in spec else default_kid
    header: dict[str, Any] = {"alg": header_alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    overrides = spec.get("header")
    if overrides:
        for k2, v in overrides.items():
            if v is None:
                header.pop(k2, None)
            else:
                header[k2] = v
        header_json = compact_json(header)
    else:
        header_json = keycloak_header(header_alg, "JWT", kid)
    token = jws(header_json, claims, signer)
    return {"token": token, "header": header, "claims": claims, "kid": kid, "alg": header_alg}


# ----------------------------------------------------------------------------------------------------------
# entry points
# ----------------------------------------------------------------------------------------------------------
def load_exports(realm_file: str, extra_realms: list[str]) -> list[dict]:
    with open(realm_file, encoding="utf-8") as f:
        base = json.load(f)
    exports = [base]
    for name in extra_realms:
        if name != base["realm"]:
            exports.append(clone_realm(base, name))
    return exports


def make_server(host: str, port: int, exports: list[dict], issuer_base: str = DEFAULT_ISSUER_BASE,
                public_base: str | None = None) -> ThreadingHTTPServer:
    """Build (not start) the server; call serve_forever() yourself (e.g. in a thread)."""
    idp = IdP(exports, issuer_base, public_base or issuer_base)
    handler = type("BoundHandler", (Handler,), {"idp": idp})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.idp = idp  # type: ignore[attr-defined]
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port (see --state-file)")
    ap.add_argument("--realm-file", required=True)
    ap.add_argument("--issuer-base", default=DEFAULT_ISSUER_BASE)
    ap.add_argument("--public-base", default=None,
                    help="base URL for browser-facing endpoints in discovery (default: --issuer-base)")
    ap.add_argument("--extra-realm", action="extend", nargs="+", default=[],
                    help="clone the realm under these names (repeatable)")
    ap.add_argument("--state-file", default=None, help="written (atomically) once listening: port, pid, issuers")
    args = ap.parse_args(argv)

    exports = load_exports(args.realm_file, args.extra_realm)
    server = make_server(args.host, args.port, exports, args.issuer_base, args.public_base)
    port = server.server_address[1]
    idp: IdP = server.idp  # type: ignore[attr-defined]
    state = {"pid": os.getpid(), "host": args.host, "port": port, "base_url": f"http://{args.host}:{port}",
             "issuer_base": args.issuer_base,
             "realms": {n: r.issuer for n, r in idp.realms.items()}}
    if args.state_file:
        tmp = args.state_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
        os.replace(tmp, args.state_file)
    sys.stderr.write(f"idp listening on http://{args.host}:{port} realms={sorted(idp.realms)} "
                     f"issuer_base={args.issuer_base}\n")
    sys.stderr.flush()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue "istio": the manifests under istio/ build with kustomize and are valid, offline.

* Build: `kubectl kustomize` (kustomize v5 is built into kubectl; the machine image ships kubectl) or a
  standalone `kustomize` ($KUSTOMIZE_BIN to choose).
* Kubernetes kinds: the PyPI package `kubernetes-validate` (JSON schemas of every Kubernetes release, strict
  variants reject unknown fields), against the oldest and newest Kubernetes a 1.2x Istio is run on here.
* Istio kinds: the npm package `@kubernetes-models/istio` (validators and TypeScript types generated from
  Istio's crd-all.gen.yaml; its package.json records the Istio release), pinned with a lockfile in
  istio/tools/schema-validation/ and installed with `npm ci` into a cache directory on first use
  ($MESHGATE_NODE_CACHE, else ~/.cache/meshgate). The CRDs' CEL rules (x-kubernetes-validations) are not
  in that package: the ones for the fields these manifests use are transcribed below.
* Cross-object checks an API server does not do but a working deployment needs (selectors, ports,
  Secret/ConfigMap references, the Keycloak issuer, the Istio cluster meshgate derives for its JWKS).
* Each WasmPlugin's pluginConfig is loaded by the real filter in Envoy, rendered the way istiod renders it
  (a config meshgate rejects makes Envoy refuse to start).

Helpers here (kustomize_build, service_clusters, jwks_cluster, ...) are also used by test_istiod_fidelity.py.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

import pytest

import harness

try:
    import yaml
except ImportError:  # pragma: no cover - reported by the fixtures below
    yaml = None

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover
    kubernetes_validate = None

ISTIO_DIR = harness.REPO / "istio"
OVERLAYS = ISTIO_DIR / "overlays"
IMAGE_COMPONENT = ISTIO_DIR / "image"
SCHEMA_TOOLS = ISTIO_DIR / "tools" / "schema-validation"
REALM_FILE = ISTIO_DIR / "keycloak" / "realm-myrealm.json"

# Kustomizations validated as they are. overlays/release builds only once `make push` has generated the
# component in istio/image/ (never committed); test_release_overlay_applies_the_image_component covers it
# either way, test_release_overlay_refuses_to_build_before_make_push the state of a fresh checkout.
BUILDS = {"base": ISTIO_DIR, "external-keycloak": OVERLAYS / "external-keycloak"}
if (IMAGE_COMPONENT / "kustomization.yaml").exists():
    BUILDS["release"] = OVERLAYS / "release"
KUBERNETES_VERSIONS = ("1.29", "1.35")
ISTIO_GROUPS = ("extensions.istio.io", "networking.istio.io", "security.istio.io", "telemetry.istio.io")

ISSUER = "http://keycloak.keycloak.svc.cluster.local/realms/myrealm"
JWKS_URI = f"{ISSUER}/protocol/openid-connect/certs"
KEYCLOAK_CLUSTER = "outbound|80||keycloak.keycloak.svc.cluster.local"
PLACEHOLDER_URL = "oci://registry.example.com/meshgate/meshgate:0.1.0"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# ----------------------------------------------------------------------------------------------------------
# kustomize
# ----------------------------------------------------------------------------------------------------------
def kustomize_command() -> list[str]:
    """$KUSTOMIZE_BIN (a kustomize binary), else `kustomize build`, else `kubectl kustomize`."""
    env = os.environ.get("KUSTOMIZE_BIN")
    if env:
        return [env, "build"]
    if shutil.which("kustomize"):
        return [shutil.which("kustomize"), "build"]
    if shutil.which("kubectl"):
        return [shutil.which("kubectl"), "kustomize"]
    pytest.fail("no kustomize: install kubectl (kustomize is built in) or kustomize, or set KUSTOMIZE_BIN",
                pytrace=False)


def require_yaml() -> None:
    if yaml is None:
        pytest.fail("PyYAML is missing: pip install -r tests/e2e/requirements.txt", pytrace=False)


def _build(path: Path) -> list[dict]:
    require_yaml()
    cmd = kustomize_command() + [str(path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@functools.lru_cache(maxsize=None)
def _build_cached(path: str) -> str:
    return json.dumps(_build(Path(path)))


def kustomize_build(path: Path | str = ISTIO_DIR) -> list[dict]:
    """The objects `kustomize build path` emits (a fresh deep copy on every call)."""
    return json.loads(_build_cached(str(path)))


def by_kind(docs: Iterable[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def find(docs: Iterable[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    hits = [d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name
            and (namespace is None or d["metadata"].get("namespace") == namespace)]
    assert len(hits) == 1, f"{kind} {namespace}/{name}: {len(hits)} objects"
    return hits[0]


def key(d: dict) -> tuple[str, str, str]:
    return d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]


# ----------------------------------------------------------------------------------------------------------
# Istio naming
# ----------------------------------------------------------------------------------------------------------
def service_clusters(docs: Iterable[dict]) -> dict[str, dict]:
    """Client-side (outbound) clusters Istio creates for the Services and ServiceEntries in `docs`:
    `outbound|<port>||<host>` -> {"kind", "namespace", "name", "host", "port", "targetPort"}.
    Kubernetes Services: host <name>.<namespace>.svc.cluster.local; ServiceEntries: each of spec.hosts."""
    out: dict[str, dict] = {}
    for d in docs:
        meta = d["metadata"]
        if d.get("kind") == "Service":
            host = f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
            for p in d["spec"].get("ports", []):
                out[f"outbound|{p['port']}||{host}"] = {
                    "kind": "Service", "namespace": meta["namespace"], "name": meta["name"], "host": host,
                    "port": p["port"], "targetPort": p.get("targetPort", p["port"])}
        elif d.get("kind") == "ServiceEntry":
            for host in d["spec"].get("hosts", []):
                for p in d["spec"].get("ports", []):
                    out[f"outbound|{p['number']}||{host}"] = {
                        "kind": "ServiceEntry", "namespace": meta.get("namespace"), "name": meta["name"],
                        "host": host, "port": p["number"], "targetPort": p.get("targetPort", p["number"]),
                        "protocol": p.get("protocol")}
    return out


def jwks_cluster(rule: dict) -> str:
    """The Envoy cluster meshgate sends a jwtRule's key requests to (src/config.rs http_target): jwksCluster
    if set, else `outbound|<port>||<host>` of jwksUri (port defaults to 80/443 by scheme), else of the
    issuer's OIDC discovery URL."""
    if rule.get("jwksCluster"):
        return rule["jwksCluster"]
    uri = rule.get("jwksUri") or rule["issuer"].rstrip("/") + "/.well-known/openid-configuration"
    u = urlsplit(uri)
    port = u.port or {"http": 80, "https": 443}[u.scheme]
    return f"outbound|{port}||{u.hostname.lower()}"


def egress_cluster(target: dict) -> str:
    """The Envoy cluster meshgate sends an egress target's token requests to: `cluster` if set, else
    `outbound|<port>||<host>` of tokenEndpoint."""
    if target.get("cluster"):
        return target["cluster"]
    u = urlsplit(target["tokenEndpoint"])
    port = u.port or {"http": 80, "https": 443}[u.scheme]
    return f"outbound|{port}||{u.hostname.lower()}"


def wasmplugins(docs: Iterable[dict]) -> list[dict]:
    return by_kind(docs, "WasmPlugin")


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"].get("labels", {})


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ----------------------------------------------------------------------------------------------------------
# Istio CRD CEL rules (x-kubernetes-validations), transcribed from Istio 1.29 crd-all.gen.yaml for the kinds
# and fields used here. Each check names the rule it stands for.
# ----------------------------------------------------------------------------------------------------------
def _has(d: dict, k: str) -> bool:
    return isinstance(d, dict) and k in d and d[k] is not None


def _selector_rules(where: str, labels: dict | None, errors: list[str]) -> None:
    for k, v in (labels or {}).items():
        if "*" in k:
            errors.append(f"{where}: wildcard not allowed in label key match")
        if len(k) == 0:
            errors.append(f"{where}: key must not be empty")
        if "*" in str(v):
            errors.append(f"{where}: wildcard not allowed in label value match")


def _duration_at_least_1ms(where: str, value: Any, errors: list[str]) -> None:
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns))+", str(value))
    if not m:
        errors.append(f"{where}: {value!r} is not a duration")
        return
    scale = {"h": 3600e9, "m": 60e9, "s": 1e9, "ms": 1e6, "us": 1e3, "µs": 1e3, "ns": 1}
    total = sum(float(n) * scale[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns)", str(value)))
    if total < 1e6:
        errors.append(f"{where}: duration(self) >= duration('1ms')")


def istio_cel_violations(doc: dict) -> list[str]:
    kind, spec, errors = doc.get("kind"), doc.get("spec") or {}, []
    if kind == "WasmPlugin":
        if sum(_has(spec, f) for f in ("selector", "targetRef", "targetRefs")) > 1:
            errors.append("spec: only one of targetRefs or selector can be set")
        url = str(spec.get("url", ""))
        scheme = urlsplit(url).scheme if "://" in url else ""
        if scheme not in ("", "http", "https", "oci", "file"):
            errors.append("spec.url: url must have schema one of [http, https, file, oci]")
        _selector_rules("spec.selector.matchLabels", (spec.get("selector") or {}).get("matchLabels"), errors)
        for i, env in enumerate((spec.get("vmConfig") or {}).get("env") or []):
            if env.get("valueFrom") == "HOST" and _has(env, "value"):
                errors.append(f"spec.vmConfig.env[{i}]: value may only be set when valueFrom is INLINE")
        for i, ref in enumerate(([spec["targetRef"]] if _has(spec, "targetRef") else []) + (spec.get("targetRefs") or [])):
            if ref.get("namespace"):
                errors.append(f"targetRef[{i}].namespace: cross namespace referencing is not currently supported")
    elif kind == "ServiceEntry":
        resolution = spec.get("resolution", "NONE")
        if _has(spec, "workloadSelector") and _has(spec, "endpoints"):
            errors.append("spec: only one of WorkloadSelector or Endpoints can be set")
        if any("/" in a for a in spec.get("addresses") or []) and resolution not in ("STATIC", "NONE"):
            errors.append("spec: CIDR addresses are allowed only for NONE/STATIC resolution types")
        if resolution == "NONE" and _has(spec, "endpoints"):
            errors.append("spec: endpoints must not be set with resolution NONE")
        if resolution == "DNS_ROUND_ROBIN" and len(spec.get("endpoints") or []) > 1:
            errors.append("spec: there must only be 0 or 1 endpoint for resolution DNS_ROUND_ROBIN")
        for i, h in enumerate(spec.get("hosts") or []):
            if h == "*":
                errors.append(f"spec.hosts[{i}]: global wildcard=* is not supported")
        numbers = [p.get("number") for p in spec.get("ports") or []]
        if len(numbers) != len(set(numbers)):
            errors.append("spec.ports: port number must be unique")
        for i, p in enumerate(spec.get("ports") or []):
            for f in ("number", "targetPort"):
                if _has(p, f) and not 0 < int(p[f]) <= 65535:
                    errors.append(f"spec.ports[{i}].{f}: port must be between 1-65535")
        for i, e in enumerate(spec.get("endpoints") or []):
            if not (_has(e, "address") or _has(e, "network")):
                errors.append(f"spec.endpoints[{i}]: Address is required")
        _selector_rules("spec.workloadSelector.labels", (spec.get("workloadSelector") or {}).get("labels"), errors)
    elif kind == "Gateway":
        for i, s in enumerate(spec.get("servers") or []):
            tls = s.get("tls") or {}
            if _has(tls, "credentialName") + _has(tls, "credentialNames") > 1:
                errors.append(f"spec.servers[{i}].tls: only one of credentialName or credentialNames can be set")
            if _has(tls, "tlsCertificates") + _has(tls, "credentialNames") > 1:
                errors.append(f"spec.servers[{i}].tls: only one of credentialNames or tlsCertificates can be set")
    elif kind == "VirtualService":
        for i, h in enumerate(spec.get("http") or []):
            for path in (("timeout",), ("retries", "perTryTimeout"), ("retries", "backoff"), ("corsPolicy", "maxAge"),
                         ("fault", "delay", "fixedDelay")):
                v: Any = h
                for p in path:
                    v = v.get(p) if isinstance(v, dict) else None
                if v is not None:
                    _duration_at_least_1ms(f"spec.http[{i}].{'.'.join(path)}", v, errors)
    elif kind == "DestinationRule":
        _selector_rules("spec.workloadSelector.matchLabels",
                        (spec.get("workloadSelector") or {}).get("matchLabels"), errors)
        policies = [("spec.trafficPolicy", spec.get("trafficPolicy") or {})]
        policies += [(f"spec.subsets[{i}].trafficPolicy", s.get("trafficPolicy") or {})
                     for i, s in enumerate(spec.get("subsets") or [])]
        for where, tp in list(policies):
            policies += [(f"{where}.portLevelSettings[{j}]", p) for j, p in enumerate(tp.get("portLevelSettings") or [])]
        for where, tp in policies:
            pool = tp.get("connectionPool") or {}
            for f in ("connectTimeout", "maxConnectionDuration"):
                if _has(pool.get("tcp") or {}, f):
                    _duration_at_least_1ms(f"{where}.connectionPool.tcp.{f}", pool["tcp"][f], errors)
            if _has(pool.get("http") or {}, "idleTimeout"):
                _duration_at_least_1ms(f"{where}.connectionPool.http.idleTimeout", pool["http"]["idleTimeout"], errors)
            for f in ("interval", "baseEjectionTime"):
                if _has(tp.get("outlierDetection") or {}, f):
                    _duration_at_least_1ms(f"{where}.outlierDetection.{f}", tp["outlierDetection"][f], errors)
    return errors


# ----------------------------------------------------------------------------------------------------------
# schema validators
# ----------------------------------------------------------------------------------------------------------
def validate_kubernetes(doc: dict, version: str) -> str | None:
    """None if `doc` is valid for Kubernetes `version` (strict: unknown fields are errors), else the error."""
    if kubernetes_validate is None:
        pytest.fail("kubernetes-validate is missing: pip install -r tests/e2e/requirements.txt", pytrace=False)
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as e:
        return e.message
    except kubernetes_validate.ValidationError as e:
        return f"{'/'.join(str(p) for p in e.path)}: {e.message}"
    return None


def is_istio(doc: dict) -> bool:
    return str(doc.get("apiVersion", "")).split("/")[0] in ISTIO_GROUPS


def _node_cache() -> Path:
    lock = (SCHEMA_TOOLS / "package.json").read_bytes() + (SCHEMA_TOOLS / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock).hexdigest()[:16]
    base = Path(os.environ.get("MESHGATE_NODE_CACHE") or Path.home() / ".cache" / "meshgate")
    return base / f"istio-schema-validation-{digest}"


class IstioSchemaValidator:
    """Runs istio/tools/schema-validation/validate.mjs (node) over a list of objects."""

    def __init__(self, node: str, prefix: Path):
        self.node, self.prefix = node, prefix

    def __call__(self, docs: list[dict]) -> dict:
        with tempfile.TemporaryDirectory(prefix="istio-validate-") as tmp:
            path = Path(tmp) / "docs.json"
            path.write_text(json.dumps(docs))
            r = subprocess.run([self.node, str(SCHEMA_TOOLS / "validate.mjs"), str(path), tmp], cwd=self.prefix,
                               capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise AssertionError(f"validate.mjs failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return json.loads(r.stdout)


@pytest.fixture(scope="session")
def istio_schema_validator() -> IstioSchemaValidator:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed to validate Istio resources (@kubernetes-models/istio)", pytrace=False)
    prefix = _node_cache()
    if not (prefix / "node_modules" / "@kubernetes-models" / "istio" / "package.json").exists():
        prefix.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=prefix.name + ".", dir=prefix.parent))
        for f in ("package.json", "package-lock.json"):
            shutil.copy(SCHEMA_TOOLS / f, staging / f)
        r = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=staging, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            pytest.fail(f"npm ci in {staging} failed:\n{r.stdout}\n{r.stderr}", pytrace=False)
        try:
            staging.rename(prefix)
        except OSError:  # another run got there first
            shutil.rmtree(staging, ignore_errors=True)
    return IstioSchemaValidator(node, prefix)


# ----------------------------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------------------------
EXPECTED_BASE = {
    ("Namespace", "", "keycloak"), ("Namespace", "", "demo"),
    ("Secret", "keycloak", "keycloak-admin"), ("Deployment", "keycloak", "keycloak"), ("Service", "keycloak", "keycloak"),
    ("ServiceAccount", "demo", "backend"), ("Deployment", "demo", "backend"), ("Service", "demo", "backend"),
    ("ServiceAccount", "demo", "frontend"), ("Deployment", "demo", "frontend"), ("Service", "demo", "frontend"),
    ("Secret", "demo", "frontend-client"),
    ("Gateway", "demo", "demo-gateway"), ("VirtualService", "demo", "demo"),
    ("WasmPlugin", "demo", "meshgate"), ("WasmPlugin", "istio-system", "meshgate-gateway"),
    ("WasmPlugin", "demo", "frontend-egress"),
}


def test_base_builds_the_reference_deployment():
    docs = kustomize_build()
    keys = {key(d) for d in docs}
    cms = [k for k in keys if k[0] == "ConfigMap"]
    assert keys - set(cms) == EXPECTED_BASE
    assert len(cms) == 1 and cms[0][1] == "keycloak" and re.fullmatch(r"keycloak-realm-[a-z0-9]{10}", cms[0][2]), cms
    assert len(docs) == len(keys), "duplicate objects"
    assert not any(k[0] in ("ServiceEntry", "DestinationRule") for k in keys), "the external-IdP example is opt-in"


def test_external_keycloak_overlay_builds_without_in_cluster_keycloak():
    docs = kustomize_build(BUILDS["external-keycloak"])
    keys = {key(d) for d in docs}
    assert ("ServiceEntry", "istio-system", "keycloak-external") in keys
    assert ("DestinationRule", "istio-system", "keycloak-external") in keys
    assert not any(k[1] == "keycloak" for k in keys), keys
    assert {k for k in keys if k[0] == "WasmPlugin"} == {("WasmPlugin", "demo", "meshgate"),
                                                        ("WasmPlugin", "istio-system", "meshgate-gateway"),
                                                        ("WasmPlugin", "demo", "frontend-egress")}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("build", sorted(BUILDS))
def test_kubernetes_objects_match_the_kubernetes_schemas(build, version):
    errors = {key(d): validate_kubernetes(d, version) for d in kustomize_build(BUILDS[build]) if not is_istio(d)}
    assert errors and not any(errors.values()), {k: e for k, e in errors.items() if e}


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_istio_objects_match_the_istio_crd_schemas(build, istio_schema_validator):
    docs = kustomize_build(BUILDS[build])
    report = istio_schema_validator(docs)
    assert any("istio/" in s and "crd-all.gen.yaml" in s for s in report["istioCrdSource"]), report["istioCrdSource"]
    checked = [r for r in report["results"] if r["status"] != "skipped"]
    assert len(checked) == sum(map(is_istio, docs)) > 0
    assert all(r["status"] == "ok" for r in checked), [r for r in checked if r["status"] != "ok"]
    cel = {key(d): istio_cel_violations(d) for d in docs if is_istio(d)}
    assert not any(cel.values()), cel


def _at(path: str, value: Any = None, delete: bool = False):
    """A function returning a copy of an object with `path` (dotted; list indices as numbers) set or deleted."""
    def apply(doc: dict) -> dict:
        doc = copy.deepcopy(doc)
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if delete:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return doc
    return apply


BROKEN_ISTIO_OBJECTS = {
    "misspelt-field": ("WasmPlugin", _at("spec.failStratgy", "FAIL_CLOSE")),
    "phase-enum": ("WasmPlugin", _at("spec.phase", "AUTH")),
    "envoy-spelling-of-fail-strategy": ("WasmPlugin", _at("spec.failStrategy", "FAIL_CLOSED")),
    "unquoted-zero-sha256": ("WasmPlugin", _at("spec.sha256", 0)),
    "sha256-pattern": ("WasmPlugin", _at("spec.sha256", "ABC")),
    "priority-type": ("WasmPlugin", _at("spec.priority", "10")),
    "url-required": ("WasmPlugin", _at("spec.url", delete=True)),
    "selector-labels-not-matchLabels": ("WasmPlugin", _at("spec.selector.labels", {"app": "backend"})),
    "match-mode-enum": ("WasmPlugin", _at("spec.match", [{"mode": "INBOUND"}])),
    "gateway-hosts-type": ("Gateway", _at("spec.servers.0.hosts", "*")),
    "gateway-unknown-field": ("Gateway", _at("spec.servers.0.port.numbr", 80)),
    "vs-port-type": ("VirtualService", _at("spec.http.0.route.0.destination.port.number", "80")),
    "vs-rewrite-field": ("VirtualService", _at("spec.http.0.rewrite.path", "/")),
}


@pytest.fixture(scope="module")
def broken_istio_report(istio_schema_validator) -> dict[str, dict]:
    """One validator run over every BROKEN_ISTIO_OBJECTS case (tsc takes seconds per run)."""
    base = kustomize_build()
    docs = [by_kind(base, kind)[0] for kind in ("WasmPlugin", "Gateway", "VirtualService")]
    names = [f"original-{d['kind']}" for d in docs]
    for name, (kind, mutate) in BROKEN_ISTIO_OBJECTS.items():
        docs.append(mutate(by_kind(base, kind)[0]))
        names.append(name)
    return dict(zip(names, istio_schema_validator(docs)["results"]))


@pytest.mark.parametrize("case", sorted(BROKEN_ISTIO_OBJECTS))
def test_istio_validator_rejects_broken_objects(case, broken_istio_report):
    for kind in ("WasmPlugin", "Gateway", "VirtualService"):
        assert broken_istio_report[f"original-{kind}"]["status"] == "ok"
    result = broken_istio_report[case]
    assert result["status"] == "invalid" and result["errors"], result


@pytest.mark.parametrize("kind,patch,expect", [
    ("WasmPlugin", {"url": "ftp://registry.example.com/x"}, "url must have schema"),
    ("WasmPlugin", {"targetRefs": [{"kind": "Gateway", "name": "gw"}]}, "only one of targetRefs or selector"),
    ("WasmPlugin", {"selector": {"matchLabels": {"app": "*"}}}, "wildcard not allowed"),
    ("WasmPlugin", {"vmConfig": {"env": [{"name": "X", "valueFrom": "HOST", "value": "v"}]}}, "only be set when"),
])
def test_cel_rules_reject_broken_objects(kind, patch, expect):
    doc = copy.deepcopy(by_kind(kustomize_build(), kind)[0])
    assert istio_cel_violations(doc) == []
    doc["spec"].update(patch)
    assert any(expect in e for e in istio_cel_violations(doc)), istio_cel_violations(doc)


def test_cel_rules_for_service_entries():
    se = copy.deepcopy(find(kustomize_build(BUILDS["external-keycloak"]), "ServiceEntry", "keycloak-external"))
    assert istio_cel_violations(se) == []
    se["spec"]["ports"].append({"number": 80, "name": "dup", "protocol": "HTTP"})
    se["spec"]["hosts"].append("*")
    se["spec"]["addresses"] = ["10.0.0.0/8"]
    errors = " | ".join(istio_cel_violations(se))
    assert "port number must be unique" in errors and "global wildcard" in errors and "CIDR" in errors, errors


def test_kubernetes_validator_rejects_broken_objects():
    dep = find(kustomize_build(), "Deployment", "backend")
    assert validate_kubernetes(dep, KUBERNETES_VERSIONS[-1]) is None
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    assert validate_kubernetes(bad, KUBERNETES_VERSIONS[-1])
    bad = copy.deepcopy(dep)
    bad["spec"]["replicas"] = "1"
    assert validate_kubernetes(bad, KUBERNETES_VERSIONS[-1])


# ----------------------------------------------------------------------------------------------------------
# pinning
# ----------------------------------------------------------------------------------------------------------
def _images(docs: Iterable[dict]) -> list[str]:
    out = []
    for d in docs:
        pod = (d.get("spec") or {}).get("template", {}).get("spec", {})
        # `istio-proxy` with `image: auto` customizes the injected sidecar (Istio fills in its own image).
        out += [c["image"] for c in pod.get("containers", []) + pod.get("initContainers", [])
                if not (c["name"] == "istio-proxy" and c["image"] == "auto")]
    return out


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_images_and_modules_are_pinned(build):
    docs = kustomize_build(BUILDS[build])
    images = _images(docs)
    assert images
    for image in images:
        name, _, tag = image.rpartition(":")
        assert "@sha256:" in image or (name and "/" not in tag and tag and tag != "latest"), image
        assert re.search(r"\d", tag), f"{image}: tag is not a version"
    for wp in wasmplugins(docs):
        url, sha = wp["spec"]["url"], wp["spec"].get("sha256")
        m = re.fullmatch(r"oci://[^@\s]+:(\d+\.\d+\.\d+[-.\w]*)(?:@sha256:([a-f0-9]{64}))?", url)
        assert m, f"{url}: an oci:// image with a version tag (and optionally a digest)"
        assert isinstance(sha, str) and re.fullmatch(r"[a-f0-9]{64}", sha), sha
        if m.group(2):
            assert m.group(2) == sha, "Istio requires spec.sha256 to equal the URL's @sha256 digest"
        assert wp["spec"].get("imagePullPolicy") == "IfNotPresent"


def test_keycloak_image_is_26():
    kc = find(kustomize_build(), "Deployment", "keycloak", "keycloak")
    image = kc["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"quay\.io/keycloak/keycloak:26\.\d+\.\d+", image), image


def test_base_wasmplugins_carry_the_documented_placeholders():
    for wp in wasmplugins(kustomize_build()):
        assert wp["spec"]["url"] == PLACEHOLDER_URL
        assert wp["spec"]["sha256"] == "0" * 64


# ----------------------------------------------------------------------------------------------------------
# cross-object consistency
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", sorted(BUILDS))
def test_workload_wiring(build):
    docs = kustomize_build(BUILDS[build])
    for d in docs:
        name = d["metadata"]["name"]
        if d["kind"] in ("Namespace", "Service"):
            assert len(name) <= 63 and DNS1123_LABEL.match(name), name
        else:
            assert len(name) <= 253 and DNS1123_SUBDOMAIN.match(name), name
    namespaces = {d["metadata"]["name"] for d in by_kind(docs, "Namespace")} | {"istio-system"}
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") in namespaces, key(d)
    deployments = by_kind(docs, "Deployment")
    for dep in deployments:
        ns = dep["metadata"]["namespace"]
        labels = pod_labels(dep)
        assert selects(dep["spec"]["selector"]["matchLabels"], labels), key(dep)
        pod = dep["spec"]["template"]["spec"]
        if pod.get("serviceAccountName"):
            find(docs, "ServiceAccount", pod["serviceAccountName"], ns)
        port_names = {p["name"]: p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
        for c in pod["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = (c.get(probe) or {}).get("httpGet", {}).get("port")
                if isinstance(port, str):
                    assert port in port_names, f"{key(dep)} {probe} port {port}"
            for env in c.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret = find(docs, "Secret", ref["name"], ns)
                    assert ref["key"] in {**secret.get("data", {}), **secret.get("stringData", {})}, ref
        mounts = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        for vol in pod.get("volumes", []):
            assert vol["name"] in mounts, vol
            if "configMap" in vol:
                find(docs, "ConfigMap", vol["configMap"]["name"], ns)
    for svc in by_kind(docs, "Service"):
        ns = svc["metadata"]["namespace"]
        pods = [dep for dep in deployments if dep["metadata"]["namespace"] == ns
                and selects(svc["spec"]["selector"], pod_labels(dep))]
        assert len(pods) == 1, f"{key(svc)} selects {len(pods)} Deployments"
        container_ports = {p["containerPort"] for c in pods[0]["spec"]["template"]["spec"]["containers"]
                           for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            assert p["name"].startswith("http"), "Istio protocol selection by port name"
            assert p["targetPort"] in container_ports, (key(svc), p)


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_wasmplugins_select_workloads_and_reach_their_key_server(build):
    docs = kustomize_build(BUILDS[build])
    clusters = service_clusters(docs)
    for wp in wasmplugins(docs):
        spec, ns = wp["spec"], wp["metadata"]["namespace"]
        labels = spec["selector"]["matchLabels"]
        if labels == {"istio": "ingressgateway"}:
            assert ns == "istio-system", "the ingress gateway's namespace"
            assert "match" not in spec, "gateway listeners are CLIENT-side: SERVER would select nothing"
        else:
            assert any(selects(labels, pod_labels(d)) for d in by_kind(docs, "Deployment")
                       if d["metadata"]["namespace"] == ns), key(wp)
        for target in spec["pluginConfig"].get("egress", []):
            cluster = egress_cluster(target)
            assert cluster in clusters, f"{key(wp)}: meshgate calls {cluster!r}; Istio creates {sorted(clusters)}"
            if build == "base":
                assert cluster == KEYCLOAK_CLUSTER
        for rule in spec["pluginConfig"].get("jwtRules", []):
            cluster = jwks_cluster(rule)
            assert cluster in clusters, f"{key(wp)}: meshgate calls {cluster!r}; Istio creates {sorted(clusters)}"
            if build == "base":
                assert cluster == KEYCLOAK_CLUSTER
                target = clusters[cluster]
                assert (target["namespace"], target["name"], target["targetPort"]) == ("keycloak", "keycloak", 8080)


def test_gateway_and_virtualservice_route_to_services():
    docs = kustomize_build()
    gw = find(docs, "Gateway", "demo-gateway", "demo")
    assert gw["spec"]["selector"] == {"istio": "ingressgateway"}
    vs = find(docs, "VirtualService", "demo", "demo")
    assert vs["spec"]["gateways"] == ["demo-gateway"]
    clusters = service_clusters(docs)
    for route in vs["spec"]["http"]:
        for dest in route["route"]:
            d = dest["destination"]
            assert f"outbound|{d['port']['number']}||{d['host']}" in clusters, d


def test_keycloak_issues_the_in_cluster_issuer():
    docs = kustomize_build()
    kc = find(docs, "Deployment", "keycloak", "keycloak")
    c = kc["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["start-dev", "--import-realm"]
    env = {e["name"]: e for e in c["env"]}
    for var, k in (("KC_BOOTSTRAP_ADMIN_USERNAME", "username"), ("KC_BOOTSTRAP_ADMIN_PASSWORD", "password")):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "keycloak-admin", "key": k}
    realm = json.loads(REALM_FILE.read_text())
    assert f"{env['KC_HOSTNAME']['value']}/realms/{realm['realm']}" == ISSUER
    assert env["KC_HEALTH_ENABLED"]["value"] == "true"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "management": 9000}
    assert c["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "management"}
    mount = {m["name"]: m for m in c["volumeMounts"]}["realm-import"]
    assert mount["mountPath"] == "/opt/keycloak/data/import"
    vol = {v["name"]: v for v in kc["spec"]["template"]["spec"]["volumes"]}["realm-import"]
    cm = find(docs, "ConfigMap", vol["configMap"]["name"], "keycloak")
    assert cm["data"] == {"realm-myrealm.json": REALM_FILE.read_text()}
    svc = find(docs, "Service", "keycloak", "keycloak")
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(80, 8080)]
    assert "outbound|80||keycloak.keycloak.svc.cluster.local" in service_clusters(docs)


# The frontend's service-account token, only from the frontend workload (its sidecar injects the token).
FRONTEND_POLICY = {
    "name": "frontend-service-account",
    "action": "ALLOW",
    "rules": [{
        "from": [{"source": {"principals": ["cluster.local/ns/demo/sa/frontend"]}}],
        "to": [{"operation": {"methods": ["GET"]}}],
        "when": [{"key": "request.auth.claims[azp]", "values": ["frontend"]},
                 {"key": "request.auth.claims[client_id]", "values": ["frontend"]}],
    }],
}

REFERENCE_POLICY = {
    "name": "reference-policy",
    "action": "ALLOW",
    "rules": [{
        "to": [{"operation": {"methods": ["GET"]}}],
        "when": [
            {"key": "request.auth.claims[iss]", "values": [ISSUER]},
            {"key": "request.auth.claims[aud]", "values": ["my-backend-client"]},
            {"key": "request.auth.claims[email]", "values": ["user@example.com"]},
        ],
    }],
}


def test_backend_wasmplugin_is_the_reference_policy():
    wp = find(kustomize_build(), "WasmPlugin", "meshgate", "demo")
    spec = wp["spec"]
    assert spec["selector"] == {"matchLabels": {"app": "backend"}}
    assert (spec["phase"], spec["failStrategy"], spec["pluginName"]) == ("AUTHN", "FAIL_CLOSE", "meshgate")
    assert spec["match"] == [{"mode": "SERVER"}]
    assert spec["pluginConfig"] == {
        "jwtRules": [{"issuer": ISSUER, "jwksUri": JWKS_URI, "audiences": ["my-backend-client"]}],
        "policies": [REFERENCE_POLICY, FRONTEND_POLICY],
    }


def test_gateway_wasmplugin_requires_tokens_for_api_paths():
    wp = find(kustomize_build(), "WasmPlugin", "meshgate-gateway", "istio-system")
    spec = wp["spec"]
    assert spec["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
    assert (spec["phase"], spec["failStrategy"]) == ("AUTHN", "FAIL_CLOSE")
    (rule,) = spec["pluginConfig"]["jwtRules"]
    assert rule["issuer"] == ISSUER and rule["jwksUri"] == JWKS_URI and rule["forwardOriginalToken"] is True
    api, web = spec["pluginConfig"]["policies"]
    assert api["action"] == "DENY"
    assert api["rules"] == [{"from": [{"source": {"notRequestPrincipals": ["*"]}}],
                             "to": [{"operation": {"paths": ["/api", "/api/*"]}}]}]
    assert web["action"] == "ALLOW" and len(web["rules"]) == 2
    # Browser single sign-on (issue "sso"): same issuer as the jwtRule, secrets from the proxy's environment.
    oidc = spec["pluginConfig"]["oidc"]
    assert oidc["issuer"] == ISSUER and oidc["clientId"] == "meshgate-gateway"
    host_env = {e["name"] for e in spec["vmConfig"]["env"] if e["valueFrom"] == "HOST"}
    assert {oidc["clientSecretEnv"], oidc["cookieSecretEnv"]} == host_env


def test_policy_values_match_the_realm_export():
    realm = json.loads(REALM_FILE.read_text())
    users = {u["username"]: u for u in realm["users"]}
    assert users["alice"]["email"] == "user@example.com"
    clients = {c["clientId"]: c for c in realm["clients"]}
    assert clients["my-backend-client"]["bearerOnly"] is True
    for client in ("frontend", "demo-cli", "meshgate-gateway"):
        mappers = clients[client]["protocolMappers"]
        assert any(m["protocolMapper"] == "oidc-audience-mapper"
                   and m["config"]["included.client.audience"] == "my-backend-client" for m in mappers), client


def test_external_overlay_is_consistent():
    docs = kustomize_build(BUILDS["external-keycloak"])
    issuer = "https://keycloak.example.com/realms/myrealm"
    clusters = service_clusters(docs)
    dr = find(docs, "DestinationRule", "keycloak-external", "istio-system")
    for wp in wasmplugins(docs):
        for target in wp["spec"]["pluginConfig"].get("egress", []):
            assert target["tokenEndpoint"].startswith(issuer + "/")
            assert egress_cluster(target) == "outbound|80||keycloak.example.com", "TLS origination on port 80"
        if "jwtRules" not in wp["spec"]["pluginConfig"]:
            continue
        (rule,) = wp["spec"]["pluginConfig"]["jwtRules"]
        assert rule["issuer"] == issuer and rule["jwksUri"].startswith(issuer + "/")
        cluster = jwks_cluster(rule)
        target = clusters[cluster]
        assert target["kind"] == "ServiceEntry" and target["protocol"] == "HTTP" and target["targetPort"] == 443
        tls = [p["tls"] for p in dr["spec"]["trafficPolicy"]["portLevelSettings"] if p["port"]["number"] == target["port"]]
        assert tls == [{"mode": "SIMPLE", "sni": "keycloak.example.com"}], "TLS origination on the JWKS cluster"
        for policy in wp["spec"]["pluginConfig"]["policies"]:
            for r in policy.get("rules") or []:
                for cond in r.get("when", []):
                    if cond["key"] == "request.auth.claims[iss]":
                        assert cond["values"] == [issuer]
    assert dr["spec"]["host"] in {h for se in by_kind(docs, "ServiceEntry") for h in se["spec"]["hosts"]}


# ----------------------------------------------------------------------------------------------------------
# release overlay: istio/ + the component `make push` generates (istio/image/)
# ----------------------------------------------------------------------------------------------------------
STAND_IN_COMPONENT = """\
# stand-in for the component `make push` generates (test only)
apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
patches:
  - target:
      group: extensions.istio.io
      kind: WasmPlugin
    patch: |-
      - op: replace
        path: /spec/url
        value: oci://registry.test/meshgate/meshgate:9.9.9
      - op: replace
        path: /spec/sha256
        value: "%s"
"""


def test_release_overlay_lists_the_base_resources():
    def resources(path: Path) -> list[str]:
        require_yaml()
        k = yaml.safe_load((path / "kustomization.yaml").read_text())
        return [os.path.normpath(path / r) for r in k["resources"]]
    assert resources(OVERLAYS / "release") == resources(ISTIO_DIR)
    k = yaml.safe_load((OVERLAYS / "release" / "kustomization.yaml").read_text())
    assert k["components"] == ["../../image"]


def _checkout_copy(tmp_path: Path) -> Path:
    """istio/ as a fresh checkout has it: without what `make push` generated into istio/image/."""
    root = tmp_path / "istio"
    shutil.copytree(ISTIO_DIR, root, ignore=shutil.ignore_patterns("node_modules"))
    for name in generated_component_files():
        (root / "image" / name).unlink(missing_ok=True)
    return root


def generated_component_files() -> list[str]:
    """The files wasm-plugin/push_oci.py writes into its --kustomize-dir (written into a scratch dir here)."""
    import importlib.util
    import tempfile
    spec = importlib.util.spec_from_file_location("push_oci", harness.REPO / "wasm-plugin" / "push_oci.py")
    push_oci = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(push_oci)
    pinned = {"variant": "compat", "wasm_sha256": "0" * 64, "url": "oci://r.test/m:1@sha256:" + "a" * 64,
              "sha256": "a" * 64}
    with tempfile.TemporaryDirectory() as td:
        return sorted(p.name for p in push_oci.write_kustomize(Path(td), pinned, []))


def test_the_image_component_is_generated_not_committed():
    written = generated_component_files()
    assert written == ["image-patch.yaml", "kustomization.yaml"]
    ignored = [ln.strip() for ln in (IMAGE_COMPONENT / ".gitignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    assert sorted(ignored) == written
    readme = (IMAGE_COMPONENT / "README.md").read_text()
    assert "make push" in readme and "kubectl apply -k istio/overlays/release" in readme


def test_release_overlay_refuses_to_build_before_make_push(tmp_path):
    """A fresh checkout: `kubectl apply -k istio/overlays/release` stops before applying anything, with a
    message naming istio/image (whose README says to run `make push`), instead of deploying a placeholder."""
    root = _checkout_copy(tmp_path)
    cmd = kustomize_command() + [str(root / "overlays" / "release")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and r.stdout == "", r.stdout[:500]
    assert f"'{root / 'image'}'" in r.stderr and "kustomization.yaml" in r.stderr, r.stderr
    # the base still builds, with the placeholder image
    base = _build(root)
    assert {wp["spec"]["url"] for wp in by_kind(base, "WasmPlugin")} == {PLACEHOLDER_URL}


def test_release_overlay_applies_the_image_component(tmp_path):
    if (IMAGE_COMPONENT / "kustomization.yaml").exists():  # `make push` ran here
        root = ISTIO_DIR
        expect_url = None
    else:  # wire a stand-in component into a copy of istio/
        root = _checkout_copy(tmp_path)
        (root / "image" / "kustomization.yaml").write_text(STAND_IN_COMPONENT % ("ab" * 32))
        expect_url = "oci://registry.test/meshgate/meshgate:9.9.9"
    release = _build(root / "overlays" / "release")
    base = kustomize_build()
    assert {key(d) for d in release} == {key(d) for d in base}
    for d in release:
        if d["kind"] != "WasmPlugin":
            assert d == next(b for b in base if key(b) == key(d)), key(d)
            continue
        spec = d["spec"]
        assert spec["url"] != PLACEHOLDER_URL and spec["url"].startswith("oci://"), spec["url"]
        assert re.fullmatch(r"[a-f0-9]{64}", spec["sha256"]) and spec["sha256"] != "0" * 64
        if expect_url:
            assert spec["url"] == expect_url
        b = next(b for b in base if key(b) == key(d))
        assert {k: v for k, v in spec.items() if k not in ("url", "sha256")} == \
               {k: v for k, v in b["spec"].items() if k not in ("url", "sha256")}


# ----------------------------------------------------------------------------------------------------------
# the filter accepts every pluginConfig (rendered as istiod renders it, loaded by Envoy)
# ----------------------------------------------------------------------------------------------------------
def _all_wasmplugins() -> list[tuple[str, dict]]:
    """The inbound/gateway WasmPlugins (jwtRules). The frontend's egress-only plugin is loaded and exercised
    by tests/e2e/test_egress.py::test_istio_frontend_wasmplugin_injects_the_token."""
    out = []
    for build, path in sorted(BUILDS.items()):
        try:
            docs = kustomize_build(path)
        except BaseException:  # reported by the build tests; keep collection alive
            continue
        out += [(f"{build}:{wp['metadata']['namespace']}.{wp['metadata']['name']}", wp) for wp in wasmplugins(docs)
                if "jwtRules" in wp["spec"]["pluginConfig"]]
    return out


@pytest.mark.parametrize("wp", [w for _, w in _all_wasmplugins()], ids=[i for i, _ in _all_wasmplugins()])
def test_meshgate_accepts_the_plugin_config(wp, start_meshgate, idp, monkeypatch):
    clusters = {jwks_cluster(r): ("127.0.0.1", idp.port) for r in wp["spec"]["pluginConfig"]["jwtRules"]}
    # vmConfig.env valueFrom HOST: the proxy's environment (the gateway's SSO secrets); Envoy inherits ours.
    for e in (wp["spec"].get("vmConfig") or {}).get("env", []):
        if e.get("valueFrom") == "HOST":
            monkeypatch.setenv(e["name"], "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
    env = start_meshgate(wasmplugin=wp, extra_clusters=clusters)
    assert env.alive()
    resp = env.get("/api/data", token="not-a-jwt")
    assert resp.status_code == 401, (resp.status_code, resp.text)
    name = f"{wp['metadata']['namespace']}.{wp['metadata']['name']}"
    assert env.config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"][0]["name"] == f"extensions.istio.io/wasmplugin/{name}"


@pytest.mark.parametrize("mutation", [
    {"jwtRule": []},                                         # unknown top-level key
    {"jwtRules": [{"issuer": ISSUER, "jwksUri": JWKS_URI, "audience": ["my-backend-client"]}]},
    {"policies": [{"name": "p", "action": "ALLOW", "rules": [{"when": [{"key": "request.auth.claims[iss]"}]}]}]},
])
def test_meshgate_refuses_a_broken_plugin_config(mutation, start_meshgate):
    """The acceptance check above is meaningful: a pluginConfig meshgate does not understand stops Envoy."""
    wp = copy.deepcopy(find(kustomize_build(), "WasmPlugin", "meshgate", "demo"))
    wp["spec"]["pluginConfig"].update(mutation)
    with pytest.raises(harness.HarnessError) as exc:
        start_meshgate(wasmplugin=wp)
    assert "Unable to create Wasm plugin demo.meshgate" in str(exc.value) or "exited" in str(exc.value)

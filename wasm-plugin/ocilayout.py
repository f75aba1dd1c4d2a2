"""Shared helpers for meshgate's OCI packaging (stdlib only): the two image formats Istio accepts, written as
reproducible OCI image layouts, and Istio's own rules for reading a Wasm module back out of an image.

Istio's rules (istio/istio pkg/wasm/imagefetcher.go, ImageFetcher.PrepareFetch → binaryFetcher), in order:
  1. manifest mediaType application/vnd.docker.distribution.manifest.v2+json → the LAST layer must be
     application/vnd.docker.image.rootfs.diff.tar.gzip; the first tar entry whose base name is plugin.wasm.
  2. otherwise ("compat" variant, solo-io/wasm spec/spec-compat.md) → the LAST layer must be
     application/vnd.oci.image.layer.v1.tar+gzip; the first tar entry whose base name is plugin.wasm.
  3. otherwise ("oci" artifact variant, solo-io/wasm spec/spec.md) → EXACTLY 2 layers, one of them
     application/vnd.module.wasm.content.layer.v1+wasm whose blob is the raw module.
The manifest digest (hex, without "sha256:") is what Istio compares with WasmPlugin spec.sha256 for oci:// URLs
(pkg/wasm/cache.go getOrFetch: `dChecksum` = PrepareFetch's actualDigest = img.Digest().Hex).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Callable, Mapping

# Media types.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER_TAR_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_CONTENT_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"

# Annotations.
VARIANT_ANNOTATION = "module.wasm.image/variant"          # spec-compat.md: required "compat" for OCI tar+gzip layers
ABI_ANNOTATION = "module.wasm.runtime/abi_version"        # what solo-io's wasme writes on the oci variant
TYPE_ANNOTATION = "module.wasm.runtime/type"
TITLE_ANNOTATION = "org.opencontainers.image.title"

PLUGIN_FILE = "plugin.wasm"               # the file name Istio looks for in a compat layer
RUNTIME_CONFIG_FILE = "runtime-config.json"
WASM_MAGIC = b"\x00asm"

VARIANTS = ("compat", "artifact")


class OCIError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------------------
# Deterministic encodings
# ----------------------------------------------------------------------------------------------------------
def canonical_json(obj: object) -> bytes:
    """Compact JSON, insertion-ordered keys, UTF-8: the same object always gives the same bytes."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def deterministic_tar(name: str, data: bytes) -> bytes:
    """A ustar archive holding one regular file: mode 0644, uid/gid 0, no user/group names, mtime 0."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.type = tarfile.REGTYPE
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def deterministic_gzip(data: bytes, level: int = 9) -> bytes:
    """gzip member written by hand so no header field depends on the Python version or the clock:
    no file name, MTIME 0, XFL by level, OS 255 (unknown, as Go's compress/gzip writes). The deflate stream
    comes from the system zlib at a fixed level (same zlib → same bytes)."""
    co = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9, zlib.Z_DEFAULT_STRATEGY)
    body = co.compress(data) + co.flush()
    xfl = 2 if level == 9 else (4 if level == 1 else 0)
    header = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes([xfl, 255])
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + body + trailer


def abi_versions(wasm: bytes) -> list[str]:
    """Proxy-Wasm ABI versions the module exports (names like proxy_abi_version_0_2_1)."""
    return sorted({m.decode() for m in re.findall(rb"proxy_abi_version_\d+_\d+_\d+", wasm)})


# ----------------------------------------------------------------------------------------------------------
# Image layouts
# ----------------------------------------------------------------------------------------------------------
class Layout:
    """An OCI image layout directory being written: blobs/sha256/<hex>, oci-layout, index.json."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs: dict[str, bytes] = {}

    def add_blob(self, data: bytes, media_type: str, annotations: Mapping[str, str] | None = None) -> dict:
        digest = sha256_digest(data)
        self.blobs[digest] = data
        desc: dict = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if annotations:
            desc["annotations"] = dict(annotations)
        return desc

    def write(self, manifest_desc: dict) -> None:
        """Replace the directory's content (only oci-layout, index.json and blobs/ are written)."""
        blob_dir = self.root / "blobs" / "sha256"
        blob_dir.mkdir(parents=True, exist_ok=True)
        keep = {d.split(":", 1)[1] for d in self.blobs}
        for old in blob_dir.iterdir():
            if old.name not in keep:
                old.unlink()
        for digest, data in sorted(self.blobs.items()):
            path = blob_dir / digest.split(":", 1)[1]
            if not (path.exists() and path.read_bytes() == data):
                _atomic_write(path, data)
        _atomic_write(self.root / "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [manifest_desc]}
        _atomic_write(self.root / "index.json", canonical_json(index))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def build_compat(wasm: bytes, out: Path) -> str:
    """The compat variant: OCI manifest, config application/vnd.oci.image.config.v1+json, ONE layer
    application/vnd.oci.image.layer.v1.tar+gzip holding plugin.wasm, annotation module.wasm.image/variant=compat.
    What `FROM scratch` + `COPY plugin.wasm ./` gives, without a daemon. Returns the manifest digest."""
    layout = Layout(out)
    tar = deterministic_tar(PLUGIN_FILE, wasm)
    layer = layout.add_blob(deterministic_gzip(tar), OCI_LAYER_TAR_GZIP)
    config = {
        # Istio ignores the config; platform as `docker build`/`buildah` on amd64 would record it, so tools that
        # check the platform of a single-manifest image (docker pull, crane) accept it.
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar)]},
        "history": [{"created_by": "COPY plugin.wasm ./ (meshgate wasm-plugin/build_oci.py)"}],
    }
    cfg = layout.add_blob(canonical_json(config), OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cfg,
        "layers": [layer],
        "annotations": {VARIANT_ANNOTATION: "compat"},
    }
    mdesc = layout.add_blob(canonical_json(manifest), OCI_MANIFEST)
    layout.write(mdesc)
    return mdesc["digest"]


def build_artifact(wasm: bytes, out: Path, root_ids: list[str]) -> str:
    """The oci (artifact) variant as solo-io's wasme pushes it (tools/wasme/pkg/push/push.go): config blob
    application/vnd.module.wasm.config.v1+json (runtime-config.json) used as the manifest config AND as the first
    of EXACTLY two layers, the second being the raw module, application/vnd.module.wasm.content.layer.v1+wasm.
    Istio requires exactly 2 layers here (a one-layer `oras push x.wasm:...+wasm` image is rejected).
    Returns the manifest digest."""
    layout = Layout(out)
    abis = abi_versions(wasm)
    runtime = {"type": "envoy_proxy", "abiVersions": abis, "config": {"rootIds": list(root_ids)}}
    cfg = layout.add_blob(canonical_json(runtime), WASM_CONFIG, {TITLE_ANNOTATION: RUNTIME_CONFIG_FILE})
    content = layout.add_blob(wasm, WASM_CONTENT_LAYER, {TITLE_ANNOTATION: PLUGIN_FILE})
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cfg,
        "layers": [cfg, content],
        "annotations": {ABI_ANNOTATION: ",".join(abis), TYPE_ANNOTATION: "envoy_proxy"},
    }
    mdesc = layout.add_blob(canonical_json(manifest), OCI_MANIFEST)
    layout.write(mdesc)
    return mdesc["digest"]


# ----------------------------------------------------------------------------------------------------------
# Reading layouts back
# ----------------------------------------------------------------------------------------------------------
def read_blob(layout_dir: Path, digest: str) -> bytes:
    algo, hexd = digest.split(":", 1)
    data = (Path(layout_dir) / "blobs" / algo / hexd).read_bytes()
    if sha256_digest(data) != digest:
        raise OCIError(f"{layout_dir}: blob {digest} is corrupt")
    return data


def layout_manifest(layout_dir: Path) -> tuple[str, bytes]:
    """(manifest digest, manifest bytes) of the single manifest in an OCI image layout."""
    index = json.loads((Path(layout_dir) / "index.json").read_text())
    manifests = index.get("manifests") or []
    if len(manifests) != 1:
        raise OCIError(f"{layout_dir}/index.json: expected exactly one manifest, found {len(manifests)}")
    desc = manifests[0]
    if desc.get("mediaType") == OCI_INDEX:
        raise OCIError(f"{layout_dir}: the layout holds an image index, Istio needs a single image manifest")
    return desc["digest"], read_blob(layout_dir, desc["digest"])


def layout_blobs(layout_dir: Path) -> dict[str, bytes]:
    """Every blob the layout's manifest references (config + layers), by digest."""
    _, raw = layout_manifest(layout_dir)
    m = json.loads(raw)
    out = {}
    for d in [m["config"], *m["layers"]]:
        out[d["digest"]] = read_blob(layout_dir, d["digest"])
    return out


# ----------------------------------------------------------------------------------------------------------
# Istio's extraction rules (a transcription of pkg/wasm/imagefetcher.go)
# ----------------------------------------------------------------------------------------------------------
def extract_plugin_from_targz(blob: bytes) -> bytes:
    """extractWasmPluginBinary: gunzip, walk the tar, first entry with base name plugin.wasm."""
    try:
        raw = gzip.decompress(blob)
    except OSError as e:
        raise OCIError(f"failed to parse layer as tar.gz: {e}") from e
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for member in tar:
            if os.path.basename(member.name) == PLUGIN_FILE:
                f = tar.extractfile(member)
                if f is None:
                    raise OCIError(f"{member.name} is not a regular file")
                return f.read()
    raise OCIError(f"{PLUGIN_FILE} not found in the archive")


def istio_extract(manifest_raw: bytes, get_blob: Callable[[str], bytes]) -> tuple[str, bytes]:
    """(branch, wasm bytes) as istio-agent's binaryFetcher picks them; branch is "docker", "compat" or "oci".
    Raises OCIError with Istio's reasons when no branch accepts the image."""
    m = json.loads(manifest_raw)
    layers = m.get("layers") or []
    if m.get("mediaType") == DOCKER_MANIFEST_V2:
        if not layers:
            raise OCIError("number of layers must be greater than zero")
        last = layers[-1]
        if last.get("mediaType") != DOCKER_LAYER_TAR_GZIP:
            raise OCIError(f"invalid media type {last.get('mediaType')} (expect {DOCKER_LAYER_TAR_GZIP})")
        return "docker", extract_plugin_from_targz(get_blob(last["digest"]))
    errs = []
    try:
        if not layers:
            raise OCIError("number of layers must be greater than zero")
        last = layers[-1]
        if last.get("mediaType") != OCI_LAYER_TAR_GZIP:
            raise OCIError(f"invalid media type {last.get('mediaType')} (expect {OCI_LAYER_TAR_GZIP})")
        return "compat", extract_plugin_from_targz(get_blob(last["digest"]))
    except OCIError as e:
        errs.append(f"could not parse as compat variant: {e}")
    try:
        if len(layers) != 2:
            raise OCIError(f"number of layers must be 2 but got {len(layers)}")
        wl = next((la for la in layers if la.get("mediaType") == WASM_CONTENT_LAYER), None)
        if wl is None:
            raise OCIError(f"could not find the layer of type {WASM_CONTENT_LAYER}")
        return "oci", get_blob(wl["digest"])
    except OCIError as e:
        errs.append(f"could not parse as oci variant: {e}")
    raise OCIError("the given image is in invalid format as an OCI image: " + "; ".join(errs))


def is_valid_wasm(b: bytes) -> bool:
    """cache.go isValidWasmBinary: at least 8 bytes, wasm magic number."""
    return len(b) >= 8 and b[:4] == WASM_MAGIC

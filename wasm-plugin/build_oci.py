#!/usr/bin/env python3
"""Package dist/meshgate.wasm as the two OCI image formats Istio's WasmPlugin accepts, without a daemon.

    python3 wasm-plugin/build_oci.py [--wasm dist/meshgate.wasm] [--out dist/oci] [--builder python|buildah|docker]

Writes two OCI image layouts (oci-layout, index.json, blobs/sha256/...):
  <out>/compat    OCI manifest, one application/vnd.oci.image.layer.v1.tar+gzip layer with plugin.wasm,
                  annotation module.wasm.image/variant=compat          (solo-io/wasm spec-compat.md)
  <out>/artifact  OCI manifest, config + exactly 2 layers: runtime-config.json
                  (application/vnd.module.wasm.config.v1+json) and the raw module
                  (application/vnd.module.wasm.content.layer.v1+wasm)    (solo-io/wasm spec.md, as wasme pushes it)
and <out>/digests.json, and prints the manifest digests. The default builder (python) is reproducible: the same
.wasm always gives the same blobs and digests (fixed mtimes, uid/gid 0, no names, gzip header without name or
time). --builder buildah|docker builds the compat image with that tool instead (not reproducible in general;
docker needs a running daemon and a BuildKit builder that supports the oci exporter); the result is checked
against Istio's extraction rules either way. The artifact variant is always written by this script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ocilayout as oci  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], **kw) -> str:
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE, timeout=600, **kw).stdout.strip()


def _reset_dir(d: Path) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)


def build_compat_buildah(wasm_path: Path, out: Path) -> None:
    """spec-compat.md Appendix 1, committed to an OCI layout. --disable-compression=false matters: buildah's
    default for oci: destinations is an uncompressed ...layer.v1.tar layer, which Istio rejects."""
    _reset_dir(out)
    with tempfile.TemporaryDirectory() as td:
        src = Path(td) / oci.PLUGIN_FILE
        shutil.copyfile(wasm_path, src)
        ctr = _run(["buildah", "from", "scratch"])
        try:
            _run(["buildah", "config", "--annotation", f"{oci.VARIANT_ANNOTATION}=compat", "--os", "linux",
                  "--arch", "amd64", ctr])
            _run(["buildah", "copy", ctr, str(src), "./"])
            _run(["buildah", "commit", "--format", "oci", "--disable-compression=false", "--timestamp", "0",
                  "--rm", ctr, f"oci:{out}"])
        except BaseException:
            subprocess.run(["buildah", "rm", ctr], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=60)
            raise


def build_compat_docker(wasm_path: Path, out: Path) -> None:
    """spec-compat.md Appendix 2 (FROM scratch + one COPY) through BuildKit's oci exporter. Needs a daemon and a
    builder that can export OCI (`docker buildx create --use` gives a docker-container builder)."""
    _reset_dir(out)
    with tempfile.TemporaryDirectory() as td:
        ctx = Path(td)
        shutil.copyfile(wasm_path, ctx / oci.PLUGIN_FILE)
        (ctx / "Dockerfile").write_text("FROM scratch\nCOPY plugin.wasm ./\n")
        tar_path = ctx / "image.tar"
        env = dict(os.environ, SOURCE_DATE_EPOCH="0")
        _run(["docker", "buildx", "build", "--platform", "linux/amd64", "--provenance=false", "--sbom=false",
              "--annotation", f"manifest:{oci.VARIANT_ANNOTATION}=compat",
              "--output", f"type=oci,dest={tar_path},compression=gzip,force-compression=true,"
                          "rewrite-timestamp=true",
              str(ctx)], env=env)
        with tarfile.open(tar_path) as tar:
            tar.extractall(out, filter="data")


def check_layout(layout: Path, wasm: bytes, expect_branch: str) -> str:
    """Read the layout back with Istio's rules; the module must come out byte-identical via the expected branch."""
    digest, raw = oci.layout_manifest(layout)
    branch, got = oci.istio_extract(raw, lambda d: oci.read_blob(layout, d))
    if branch != expect_branch:
        raise oci.OCIError(f"{layout}: Istio would read it as the {branch} variant, expected {expect_branch}")
    if got != wasm:
        raise oci.OCIError(f"{layout}: the module Istio would extract differs from the input .wasm")
    return digest


def build(wasm_path: Path, out: Path, builder: str = "python", root_ids: list[str] | None = None) -> dict:
    wasm = wasm_path.read_bytes()
    if not oci.is_valid_wasm(wasm):
        raise oci.OCIError(f"{wasm_path} is not a Wasm module")
    out.mkdir(parents=True, exist_ok=True)
    compat_dir, artifact_dir = out / "compat", out / "artifact"
    if builder == "python":
        oci.build_compat(wasm, compat_dir)
    elif builder == "buildah":
        build_compat_buildah(wasm_path, compat_dir)
    elif builder == "docker":
        build_compat_docker(wasm_path, compat_dir)
    else:
        raise oci.OCIError(f"unknown builder {builder!r} (python, buildah, docker)")
    oci.build_artifact(wasm, artifact_dir, root_ids or ["meshgate"])
    result = {
        "wasm": str(wasm_path),
        "wasm_sha256": hashlib.sha256(wasm).hexdigest(),
        "builder": builder,
        "compat": check_layout(compat_dir, wasm, "compat"),
        "artifact": check_layout(artifact_dir, wasm, "oci"),
    }
    (out / "digests.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wasm", type=Path, default=REPO / "dist" / "meshgate.wasm")
    ap.add_argument("--out", type=Path, default=REPO / "dist" / "oci")
    ap.add_argument("--builder", default=os.environ.get("OCI_BUILDER") or "python",
                    choices=["python", "buildah", "docker"])
    ap.add_argument("--root-id", action="append", dest="root_ids",
                    help="root_id(s) recorded in the artifact's runtime config (default: meshgate)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    try:
        res = build(args.wasm, args.out, args.builder, args.root_ids)
    except (oci.OCIError, OSError, subprocess.CalledProcessError) as e:
        print(f"build_oci: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"wasm      sha256:{res['wasm_sha256']}  {args.wasm}")
        print(f"compat    {res['compat']}  {args.out / 'compat'}   (manifest digest; builder {res['builder']})")
        print(f"artifact  {res['artifact']}  {args.out / 'artifact'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

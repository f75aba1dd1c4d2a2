//! A do-nothing proxy-wasm module (ABI 0.2.1): the host calls the same HTTP callbacks it calls in
//! the proxy-wasm SDK's modules (meshgate's), and each returns at once — Continue, "done", "ok".
//! No host call, no allocation on the request path. Built by `tests/bench/bench.py`.
#![allow(clippy::missing_safety_doc)]

const CONTINUE: u32 = 0;

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The host copies data into the module through this; nothing here asks it to, but the ABI
/// requires the export.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v: Vec<u8> = Vec::with_capacity(size);
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _root_context_id: u32) {}
#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _size: usize) -> u32 {
    1
}
#[no_mangle]
pub extern "C" fn proxy_on_configure(_context_id: u32, _size: usize) -> u32 {
    1
}
#[no_mangle]
pub extern "C" fn proxy_on_tick(_context_id: u32) {}
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context_id: u32, _headers: usize, _eos: u32) -> u32 {
    CONTINUE
}
#[no_mangle]
pub extern "C" fn proxy_on_request_body(_context_id: u32, _size: usize, _eos: u32) -> u32 {
    CONTINUE
}
#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(_context_id: u32, _trailers: usize) -> u32 {
    CONTINUE
}
#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_context_id: u32, _headers: usize, _eos: u32) -> u32 {
    CONTINUE
}
#[no_mangle]
pub extern "C" fn proxy_on_response_body(_context_id: u32, _size: usize, _eos: u32) -> u32 {
    CONTINUE
}
#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_context_id: u32, _trailers: usize) -> u32 {
    CONTINUE
}
#[no_mangle]
pub extern "C" fn proxy_on_log(_context_id: u32) {}
#[no_mangle]
pub extern "C" fn proxy_on_done(_context_id: u32) -> u32 {
    1
}
#[no_mangle]
pub extern "C" fn proxy_on_delete(_context_id: u32) {}

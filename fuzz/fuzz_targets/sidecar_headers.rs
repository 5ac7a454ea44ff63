//! The sidecar's request headers (`name:value` lines): hop-by-hop headers never forwarded, the rest
//! unchanged, a usable request id, X-Forwarded-For with every hop (asserted in fuzz_headers).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mlkube_sidecar::proxy::fuzz_headers(data);
});

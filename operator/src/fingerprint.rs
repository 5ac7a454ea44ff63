//! Short stable fingerprints of generated text: the annotation that restarts pods when their
//! configuration changes, the applied-intent hash of drift detection, the key of a cached CA bundle.

/// A short stable fingerprint (FNV-1a, hex) of generated configuration.
pub fn fingerprint(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

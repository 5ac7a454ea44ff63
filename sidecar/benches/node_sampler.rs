//! Benchmark of mlkube-node-sampler against Debian's prometheus-node-exporter; written in the next
//! commit.
fn main() {}

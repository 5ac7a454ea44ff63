//! `/proc/<pid>/cgroup` contents: a pod UID and container ID found are well formed and were in the
//! input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlkube_node_sampler::cgroup::{CgroupRef, parse_path, parse_proc_cgroup};

fn check(text: &str, found: &CgroupRef) {
    let groups: Vec<&str> = found.pod_uid.split('-').collect();
    assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{found:?}");
    assert!(groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit())), "{found:?}");
    assert!(text.contains(&found.pod_uid) || text.contains(&found.pod_uid.replace('-', "_")));
    if let Some(id) = &found.container_id {
        assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{found:?}");
        assert!(text.contains(id.as_str()));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for found in [parse_proc_cgroup(text), parse_path(text)].iter().flatten() {
        check(text, found);
    }
});

//! Artifact paths: an accepted path is relative, has no `.`, `..` or empty component, is fully
//! decoded, cleans to itself and resolves under the root.
#![no_main]

use std::path::{Component, Path};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mlkube_server::artifacts::{LocalRoot, clean_relative_path, fully_decode};

fn root() -> &'static LocalRoot {
    static ROOT: OnceLock<LocalRoot> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mlkube-fuzz-artifacts-{}", std::process::id()));
        LocalRoot::open(&dir).expect("a temporary artifact root")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let _ = fully_decode(raw);
    let Ok(clean) = clean_relative_path(raw) else {
        return;
    };
    let path = Path::new(&clean);
    assert!(path.components().all(|c| matches!(c, Component::Normal(_))), "{raw:?} -> {clean:?}");
    assert!(clean.is_empty() || clean.split('/').all(|p| !matches!(p, "" | "." | "..")), "{clean:?}");
    assert!(!clean.contains(['\\', ';', '#', '?', '\0']), "{clean:?}");
    assert_eq!(fully_decode(&clean).as_deref(), Some(clean.as_str()));
    assert_eq!(clean_relative_path(&clean).ok().as_deref(), Some(clean.as_str()), "{raw:?}");
    let resolved = root().resolve(&clean).expect("a clean path resolves");
    assert!(resolved.starts_with(root().root()), "{resolved:?}");
});

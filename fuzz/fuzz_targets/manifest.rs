//! The manifest (`manifest.bin`): the input replaces or edits the payload of a valid manifest
//! (three segments, deletions), with the footer fixed or as it is (see
//! [`colbert_index_fuzz::index_file_bytes`]), and `Manifest::read` decodes and checks it.
#![no_main]

use std::sync::OnceLock;

use colbert_index_fuzz::{index_file_bytes, scratch};
use index_format::{Component, Manifest, SegmentEntry};
use libfuzzer_sys::fuzz_target;

fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let dir = scratch().join("manifest-template");
        std::fs::create_dir_all(&dir).unwrap();
        let entry =
            |name: &str, n_docs, deleted: Vec<u32>| SegmentEntry { name: name.into(), n_docs, deleted };
        let m = Manifest {
            generation: 4,
            next_segment: 3,
            segments: vec![
                entry(".", 200, vec![3, 17, 150]),
                entry("seg-000001", 12, vec![2]),
                entry("seg-000002", 300, vec![]),
            ],
        };
        m.publish(&dir).unwrap();
        std::fs::read(dir.join(Component::Manifest.file_name())).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let dir = scratch().join("manifest");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = index_file_bytes(template(), mode, rest);
    std::fs::write(dir.join(Component::Manifest.file_name()), bytes).unwrap();
    if let Ok(Some(m)) = Manifest::read(&dir) {
        let _ = m.live_docs();
    }
});

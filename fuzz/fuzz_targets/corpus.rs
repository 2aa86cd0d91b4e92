//! Collections and query files: the input is read as a TSV and as a JSONL collection (every
//! record, as `build --collection` streams it) and as a query file (`search --queries`).
#![no_main]

use colbert_index_fuzz::scratch_file;
use engine::corpus::{read_queries, CorpusReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for name in ["input.tsv", "input.jsonl"] {
        let path = scratch_file(name, data);
        if let Ok(reader) = CorpusReader::open(&path) {
            for record in reader.flatten() {
                let _ = record.full_text();
            }
        }
        let _ = read_queries(&path);
    }
});

//! The zipped-export reader never panics and never reads past its limits: any input is the
//! chat text (within `max_bytes`) or a typed error. The text then goes through the parser, as
//! a sync run does.
#![no_main]

use chatsync::sources::ExportLimits;
use chatsync::sources::whatsapp::parser::{self, ParseOptions};
use chatsync::sources::whatsapp::read_zip_export;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits, so that a bomb the fuzzer finds is refused quickly.
    let limits = ExportLimits {
        max_bytes: 4 << 20,
        max_compression_ratio: 100,
    };
    if let Ok(text) = read_zip_export(std::io::Cursor::new(data), "fuzz.zip", &limits) {
        assert!(text.len() as u64 <= limits.max_bytes);
        let _ = parser::parse(&text, &ParseOptions::default());
    }
});

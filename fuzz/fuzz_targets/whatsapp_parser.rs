//! The WhatsApp export parser is a total function over bytes: any input parses (what it cannot
//! place is counted), never panics, and every message it returns came from the input. The
//! first byte picks the session's `date_order`.
#![no_main]

use chatsync::sources::whatsapp::parser::{self, DateOrder, ParseOptions};
use chatsync::sources::export::parse_timezone;
use chatsync::sources::whatsapp::history_from_export;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&order, text)) = data.split_first() else {
        return;
    };
    let date_order = match order % 4 {
        0 => DateOrder::Auto,
        1 => DateOrder::Dmy,
        2 => DateOrder::Mdy,
        _ => DateOrder::Ymd,
    };
    let options = ParseOptions { date_order };
    let parsed = parser::parse(text, &options);
    let lines = text.split(|b| *b == b'\n' || *b == b'\r').count();
    assert!(parsed.messages.len() <= lines, "more messages than lines");
    // The whole source path: derived ids and UTC times for a zone with DST.
    let zone = parse_timezone(Some("America/New_York")).expect("zone");
    let history = history_from_export("fuzz-chat", text, &options, zone);
    assert_eq!(history.messages.len(), parsed.messages.len());
});

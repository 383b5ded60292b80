//! The Telegram Desktop JSON parser never panics: any input is chats or a typed error, and a
//! parsed chat converts to messages with provider ids.
#![no_main]

use chatsync::sources::telegram::{history_from_chat, parser};
use chatsync::sources::export::parse_timezone;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let zone = parse_timezone(Some("Asia/Tokyo")).expect("zone");
    if let Ok(chats) = parser::parse(data, zone) {
        for chat in &chats {
            let history = history_from_chat("tg-fuzz", chat);
            assert_eq!(history.messages.len(), chat.messages.len());
        }
    }
});

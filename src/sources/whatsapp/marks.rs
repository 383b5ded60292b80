//! What a WhatsApp export writes for a deleted message and after an edited one, per phone
//! language, in one table with the source of every phrase beside it.
//!
//! - A **deleted** message's body is a sentence: someone else's (`This message was deleted`)
//!   or your own (`You deleted this message`). iOS writes a final `.` (`。` in Japanese) and a
//!   U+200E/U+200F before it; Android writes neither. The parser compares without those.
//! - An **edited** message's body ends with a mark (`<This message was edited>`), after a space
//!   (Android) or a U+200E (iOS). The parser removes the mark and sets `edited`.
//!
//! # Sources
//!
//! Every phrase names where it was read. The kinds of source, strongest first:
//! - `realchats FILE:LINE`: a line of a real export in the conformance corpus
//!   (`../shared/realchats`, see its `MANIFEST.tsv`).
//! - `whats_json PATH:LINE`: a line of a real export in the test data of
//!   [starkdmi/whats_json](https://github.com/starkdmi/whats_json) at commit
//!   `760b3a0a063f8e576156e72f5807c6ab283e0943` (the same chat exported from phones set to
//!   each language).
//! - `issue URL`: an export line quoted in a public issue thread.
//! - `code index N`: a public repository file found through the project's code-search index
//!   (id `N`), holding an export line (`fixture`) or a WhatsApp-export parser's own list of
//!   the phrase (`list`). The weakest kind; every such phrase was found in at least one
//!   WhatsApp-export parser, never taken from a chat app's own UI strings.
//!
//! # Left out (no source found)
//!
//! Edit marks of ar, cs, hi, ja, th, uk, vi and of every language not listed; deletion
//! sentences of ko, zh, pl, sv, he and the other languages not listed; pt-PT
//! `Apagaste esta mensagem` (found only in a chat app's UI, not in an export).

/// One phrase and where it was read.
#[derive(Debug, Clone, Copy)]
pub struct Phrase {
    /// The phrase as the export writes it (without the final `.` of iOS deletion sentences).
    pub text: &'static str,
    /// Where it was read (see the module docs for the kinds of source).
    pub source: &'static str,
}

/// The phrases of one phone language.
#[derive(Debug, Clone, Copy)]
pub struct LanguageMarks {
    /// BCP 47 language code.
    pub language: &'static str,
    /// A message someone else deleted.
    pub deleted: &'static [Phrase],
    /// A message the exporting phone's owner deleted.
    pub you_deleted: &'static [Phrase],
    /// The mark after an edited message.
    pub edited: &'static [Phrase],
}

const fn p(text: &'static str, source: &'static str) -> Phrase {
    Phrase { text, source }
}

/// The table. See the module docs.
pub const LANGUAGES: &[LanguageMarks] = &[
    LanguageMarks {
        language: "en",
        deleted: &[p(
            "This message was deleted",
            "realchats starkdmi__whats_json/test__data__languages__english_android.txt:17; \
             english_ios.txt:21 (iOS, with `.`)",
        )],
        you_deleted: &[p(
            "You deleted this message",
            "realchats starkdmi__whats_json/test__data__languages__english_android.txt:28; \
             english_ios.txt:15 (iOS, with `.`)",
        )],
        edited: &[p(
            "<This message was edited>",
            "issue https://github.com/koftezz/whatsapp-chat-analyzer/issues/18 (Android line \
             `03/06/2023, 6:12 am - author: sample message <This message was edited>`)",
        )],
    },
    LanguageMarks {
        language: "es",
        deleted: &[
            p(
                "Se eliminó este mensaje",
                "realchats starkdmi__whats_json/test__data__languages__spanish_ios.txt:21",
            ),
            p(
                "Este mensaje fue eliminado",
                "code index 41733768322, 52643783464 (lists)",
            ),
        ],
        you_deleted: &[p(
            "Eliminaste este mensaje",
            "realchats starkdmi__whats_json/test__data__languages__spanish_ios.txt:15",
        )],
        edited: &[p(
            "<Se editó este mensaje.>",
            "code index 65886193119 (Android fixture `3/7/24 14:51 - Daniel Torres: me agrada \
             el nombre del grupo <Se editó este mensaje.>`), 42853517494 (pasted export text), \
             5745548785 (list)",
        )],
    },
    LanguageMarks {
        language: "pt",
        deleted: &[
            p(
                "Esta mensagem foi apagada",
                "whats_json test/data/languages/portugal_ios.txt:21",
            ),
            p(
                "Mensagem apagada",
                "code index 70181963754 (Android fixture `13/01/2023 09:01 - Bruno: Mensagem \
                 apagada`), 58989595076 (counted in a real export)",
            ),
        ],
        you_deleted: &[
            p(
                "Apagou esta mensagem",
                "whats_json test/data/languages/portugal_ios.txt:15",
            ),
            p(
                "Você apagou esta mensagem",
                "code index 68306875051, 60169875738 (lists)",
            ),
        ],
        edited: &[p(
            "<Mensagem editada>",
            "code index 70181963754 (Android fixture `13/01/2023 09:02 - Ana: vou sim \
             <Mensagem editada>`), 66481022415, 46648924669 (seen in real exports)",
        )],
    },
    LanguageMarks {
        language: "de",
        deleted: &[p(
            "Diese Nachricht wurde gelöscht",
            "realchats starkdmi__whats_json/test__data__languages__deutch_ios.txt:21",
        )],
        you_deleted: &[p(
            "Du hast diese Nachricht gelöscht",
            "realchats starkdmi__whats_json/test__data__languages__deutch_ios.txt:15",
        )],
        edited: &[p(
            "<Diese Nachricht wurde bearbeitet>",
            "code index 60983571505 (iOS fixture `[15.08.26, 12:44:11] Klaus: <Diese Nachricht \
             wurde bearbeitet>`), 63430269986, 69426977333 (lists)",
        )],
    },
    LanguageMarks {
        language: "fr",
        deleted: &[p(
            "Ce message a été supprimé",
            "realchats starkdmi__whats_json/test__data__languages__french_ios.txt:21",
        )],
        you_deleted: &[p(
            "Vous avez supprimé ce message",
            "realchats starkdmi__whats_json/test__data__languages__french_ios.txt:15",
        )],
        edited: &[p(
            "<Ce message a été modifié>",
            "code index 61381560119 (Android fixture `05/06/2026, 08:05 - Alice: Corrigé <Ce \
             message a été modifié>`), 69473622452, 71350639778",
        )],
    },
    LanguageMarks {
        language: "it",
        deleted: &[p(
            "Questo messaggio è stato eliminato",
            "whats_json test/data/languages/italian_ios.txt:21",
        )],
        you_deleted: &[p(
            "Hai eliminato questo messaggio",
            "whats_json test/data/languages/italian_ios.txt:15",
        )],
        edited: &[p(
            "<Questo messaggio è stato modificato>",
            "code index 63208452351 (iOS fixture, U+200E before the mark), 58704475361, \
             37843959017",
        )],
    },
    LanguageMarks {
        language: "nl",
        deleted: &[p(
            "Dit bericht is verwijderd",
            "realchats starkdmi__whats_json/test__data__languages__deutch_android_media.txt:15 \
             (a Dutch Android export)",
        )],
        you_deleted: &[
            p(
                "U hebt dit bericht verwijderd",
                "realchats starkdmi__whats_json/test__data__languages__deutch_android_media.txt:22",
            ),
            p(
                "Je hebt dit bericht verwijderd",
                "code index 60914603058, 58966500501 (lists)",
            ),
        ],
        edited: &[p(
            "<Dit bericht is bewerkt>",
            "code index 40372294807, 31261844279 (Android lists)",
        )],
    },
    LanguageMarks {
        language: "tr",
        deleted: &[p(
            "Bu mesaj silindi",
            "code index 71044627099 (Android fixture `2.10.2026 13:34 - Kişi 1: Bu mesaj \
             silindi`), 18303601468",
        )],
        you_deleted: &[p(
            "Bu mesajı sildiniz",
            "code index 18303601468, 59165317542 (lists)",
        )],
        edited: &[p(
            "<Bu mesaj düzenlendi>",
            "code index 66585810712 (iOS fixture `[15.11.2025, 18:17:21] Mervan: yarın gel <Bu \
             mesaj düzenlendi>`), 71044627099, 67376615662",
        )],
    },
    LanguageMarks {
        language: "ru",
        deleted: &[
            p(
                "Данное сообщение удалено",
                "realchats starkdmi__whats_json/test__data__languages__russian_android.txt:17; \
                 whats_json test/data/languages/russian_ios.txt:21",
            ),
            p(
                "Это сообщение удалено",
                "code index 41733768322, 54775518650 (lists)",
            ),
        ],
        you_deleted: &[
            p(
                "Вы удалили данное сообщение",
                "whats_json test/data/languages/russian_android.txt:28; russian_ios.txt:15",
            ),
            p("Вы удалили это сообщение", "code index 41733768322 (list)"),
        ],
        edited: &[p(
            "<Сообщение изменено>",
            "code index 12787037570 (pasted Android line `28.10.2025, 23:42 - Татьяна LP: … \
             <Сообщение изменено>`), 57085569261, 3378318733",
        )],
    },
    LanguageMarks {
        language: "id",
        deleted: &[p(
            "Pesan ini dihapus",
            "realchats starkdmi__whats_json/test__data__languages__indonesian_ios.txt:21",
        )],
        you_deleted: &[p(
            "Anda menghapus pesan ini",
            "whats_json test/data/languages/indonesian_ios.txt:15",
        )],
        edited: &[p(
            "<Pesan ini diedit>",
            "code index 15785812535 (texts of a real export), 55259360390, 68998699063",
        )],
    },
    LanguageMarks {
        language: "cs",
        deleted: &[
            p(
                "Tato zpráva byla smazána",
                "whats_json test/data/languages/czech_ios.txt:21",
            ),
            p(
                "Tato zpráva byla odstraněna",
                "whats_json test/data/languages/czech_android.txt:17",
            ),
        ],
        you_deleted: &[
            p(
                "Tuto zprávu jste smazal/a",
                "whats_json test/data/languages/czech_ios.txt:15",
            ),
            p(
                "Tuto zprávu jste odstranil/a",
                "whats_json test/data/languages/czech_android.txt:28",
            ),
        ],
        edited: &[],
    },
    LanguageMarks {
        language: "uk",
        deleted: &[p(
            "Це повідомлення було видалено",
            "whats_json test/data/languages/ukrainian_ios.txt:21",
        )],
        you_deleted: &[p(
            "Ви видалили це повідомлення",
            "whats_json test/data/languages/ukrainian_ios.txt:15",
        )],
        edited: &[],
    },
    LanguageMarks {
        language: "ar",
        deleted: &[p(
            "تم حذف هذه الرسالة",
            "whats_json test/data/languages/arabic_ios.txt:21; arabic2_ios.txt:21",
        )],
        you_deleted: &[
            p(
                "لقد حذَفت هذه الرسالة",
                "whats_json test/data/languages/arabic2_ios.txt:15",
            ),
            p(
                "أنت حذفت هذه الرسالة",
                "whats_json test/data/languages/arabic_ios.txt:15",
            ),
        ],
        edited: &[],
    },
    LanguageMarks {
        language: "hi",
        deleted: &[p(
            "यह मैसेज डिलीट कर दिया गया है",
            "whats_json test/data/languages/hindi_ios.txt:21",
        )],
        you_deleted: &[p(
            "आपने यह मैसेज डिलीट किया",
            "whats_json test/data/languages/hindi_ios.txt:15",
        )],
        edited: &[],
    },
    LanguageMarks {
        language: "ja",
        deleted: &[p(
            "このメッセージは削除されました",
            "whats_json test/data/languages/japanese_ios.txt:21",
        )],
        you_deleted: &[p(
            "このメッセージを削除しました",
            "whats_json test/data/languages/japanese_ios.txt:15",
        )],
        edited: &[],
    },
    LanguageMarks {
        language: "th",
        deleted: &[p(
            "ข้อความนี้ถูกลบแล้ว",
            "whats_json test/data/languages/thai_ios.txt:21",
        )],
        you_deleted: &[p(
            "คุณได้ลบข้อความนี้",
            "whats_json test/data/languages/thai_ios.txt:15",
        )],
        edited: &[],
    },
    LanguageMarks {
        language: "vi",
        deleted: &[p(
            "Tin nhắn này đã bị xóa",
            "whats_json test/data/languages/vietnamese_ios.txt:21",
        )],
        you_deleted: &[p(
            "Bạn đã xoá tin nhắn này",
            "whats_json test/data/languages/vietnamese_ios.txt:15",
        )],
        edited: &[],
    },
];

/// Whether `sentence` (a body without its format characters, trimmed) is a deletion sentence
/// of some language: equal to one, ignoring ASCII case and a final `.`, `!` or `。`.
pub fn is_deletion_sentence(sentence: &str) -> bool {
    let sentence = sentence.trim_end_matches(['.', '!', '。']).trim_end();
    // The longest sentence is under 90 bytes: longer bodies are never one.
    if sentence.len() > 128 {
        return false;
    }
    LANGUAGES.iter().any(|language| {
        language
            .deleted
            .iter()
            .chain(language.you_deleted)
            .any(|phrase| {
                phrase
                    .text
                    .as_bytes()
                    .eq_ignore_ascii_case(sentence.as_bytes())
            })
    })
}

/// Where an edit mark at the end of `text` starts, with the spaces (ASCII, U+00A0, U+202F)
/// and format characters before it and after it: `text[..cut]` is the text without the mark.
/// `None` when `text` does not end with a mark of [`LANGUAGES`] (ASCII case ignored).
pub fn edit_mark_start(text: &str) -> Option<usize> {
    let end = text.trim_end_matches(is_space_or_format).len();
    let body = &text[..end];
    // Every mark ends with `>`: most texts are ruled out by one byte.
    if !body.ends_with('>') {
        return None;
    }
    let mark = LANGUAGES
        .iter()
        .flat_map(|language| language.edited)
        .find(|mark| {
            let mark = mark.text.as_bytes();
            body.len() >= mark.len()
                && body.as_bytes()[body.len() - mark.len()..].eq_ignore_ascii_case(mark)
        })?;
    let start = body.len() - mark.text.len();
    // The mark's bytes matched on a char boundary of `body` (it starts with `<`).
    let before = body.get(..start)?;
    Some(before.trim_end_matches(is_space_or_format).len())
}

fn is_space_or_format(c: char) -> bool {
    c == ' ' || c == '\u{a0}' || c == '\u{202f}' || super::normalise::is_format_char(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_a_sourced_phrase_and_no_phrase_is_empty() {
        for language in LANGUAGES {
            let all: Vec<&Phrase> = language
                .deleted
                .iter()
                .chain(language.you_deleted)
                .chain(language.edited)
                .collect();
            assert!(!all.is_empty(), "{}", language.language);
            for phrase in all {
                assert!(!phrase.text.is_empty(), "{}", language.language);
                assert!(
                    phrase.source.len() > 10,
                    "{}: {} has no source",
                    language.language,
                    phrase.text
                );
            }
            for mark in language.edited {
                assert!(
                    mark.text.starts_with('<') && mark.text.ends_with('>'),
                    "{}",
                    mark.text
                );
            }
        }
    }

    #[test]
    fn every_deletion_sentence_is_recognised_with_and_without_a_final_stop() {
        for language in LANGUAGES {
            for phrase in language.deleted.iter().chain(language.you_deleted) {
                assert!(is_deletion_sentence(phrase.text), "{}", phrase.text);
                let with_stop = format!("{}.", phrase.text);
                assert!(is_deletion_sentence(&with_stop), "{with_stop}");
            }
        }
        assert!(is_deletion_sentence("このメッセージは削除されました。"));
        assert!(is_deletion_sentence("this message was deleted"));
        assert!(!is_deletion_sentence("This message was deleted by mistake"));
        assert!(!is_deletion_sentence(""));
    }

    #[test]
    fn edit_marks_are_found_at_the_end_only() {
        let text = "vou sim <Mensagem editada>";
        assert_eq!(edit_mark_start(text), Some("vou sim".len()));
        let text = "Ho prenotato per le 9 \u{200e}<Questo messaggio è stato modificato>";
        assert_eq!(edit_mark_start(text), Some("Ho prenotato per le 9".len()));
        let text = "two\nlines <This message was edited>\u{200e} ";
        assert_eq!(edit_mark_start(text), Some("two\nlines".len()));
        assert_eq!(
            edit_mark_start("<Diese Nachricht wurde bearbeitet>"),
            Some(0)
        );
        assert_eq!(edit_mark_start("<This message was edited> and more"), None);
        assert_eq!(edit_mark_start("plain"), None);
        assert_eq!(edit_mark_start("<Media omitted>"), None);
        assert_eq!(edit_mark_start(""), None);
        for language in LANGUAGES {
            for mark in language.edited {
                let text = format!("x {}", mark.text);
                assert_eq!(edit_mark_start(&text), Some(1), "{}", mark.text);
            }
        }
    }
}

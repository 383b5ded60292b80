//! Normalisation of the header part of a WhatsApp export line, so the header scanner only
//! ever sees ASCII digits, ASCII spaces and no format characters.
//!
//! Contract:
//! - [`HeaderBuffer::fill`] copies at most [`HEADER_CAPACITY`] bytes of the *start* of a
//!   line into a stack buffer: format characters ([`is_format_char`]) are dropped, decimal
//!   digits of any script ([`digit_value`]) become ASCII digits, U+00A0 and U+202F become
//!   spaces, and the Arabic comma U+060C becomes `,`. Everything else is copied as written.
//! - Every byte of the buffer remembers where it came from in the line
//!   ([`HeaderBuffer::line_offset`]), so a position found in the buffer (where the message
//!   body starts) maps back to the line, whose text is never rewritten.
//! - No allocation, no panic, whatever the line.

/// Bytes of normalised header kept; longer headers do not exist (the longest date, time,
/// day-period word and separators together stay under 100 bytes).
pub const HEADER_CAPACITY: usize = 160;

/// The first code point of every run of ten decimal digits (`General_Category = Nd`), sorted:
/// Unicode 16.0 (`DerivedNumericType.txt`; the runs up to Unicode 14 were checked against
/// Python's `unicodedata`). Each run holds the digits 0 to 9 in order.
pub(super) const DIGIT_ZEROS: &[u32] = &[
    0x0030, 0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6,
    0x0D66, 0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80,
    0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0,
    0xFF10, 0x104A0, 0x10D30, 0x10D40, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450,
    0x114D0, 0x11650, 0x116C0, 0x116D0, 0x116DA, 0x11730, 0x118E0, 0x11950, 0x11BF0, 0x11C50,
    0x11D50, 0x11DA0, 0x11F50, 0x16130, 0x16A60, 0x16AC0, 0x16B50, 0x16D70, 0x1CCF0, 0x1D7CE,
    0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E5F1, 0x1E950, 0x1FBF0,
];

/// The value (0-9) of a decimal digit in any script, or `None`.
#[inline]
pub fn digit_value(c: char) -> Option<u8> {
    let code = u32::from(c);
    if code < 0x0660 {
        return c.is_ascii_digit().then(|| (code - 0x30) as u8);
    }
    let index = DIGIT_ZEROS.partition_point(|&zero| zero <= code);
    let zero = DIGIT_ZEROS[index.checked_sub(1)?];
    let value = code - zero;
    (value < 10).then_some(value as u8)
}

/// Whether `c` is a format character that exports scatter around headers: the byte order mark
/// U+FEFF, LRM, RLM, ALM (U+061C), LRE/RLE/PDF/LRO/RLO (U+202A-U+202E) and LRI/RLI/FSI/PDI
/// (U+2066-U+2069).
#[inline]
pub fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{200e}'
            | '\u{200f}'
            | '\u{061c}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// The normalised start of one line. See the module docs.
pub struct HeaderBuffer {
    bytes: [u8; HEADER_CAPACITY],
    /// `offsets[i]` is the line offset of the character that produced `bytes[i]`;
    /// `offsets[len]` is where the line continues after the last copied character.
    offsets: [u32; HEADER_CAPACITY + 1],
    len: usize,
    /// Whether the line goes on beyond what was copied.
    truncated: bool,
}

impl HeaderBuffer {
    /// Normalises the start of `line` (see the module docs).
    pub fn fill(line: &str) -> Self {
        let mut buffer = HeaderBuffer {
            bytes: [0; HEADER_CAPACITY],
            offsets: [0; HEADER_CAPACITY + 1],
            len: 0,
            truncated: false,
        };
        let mut end = 0;
        for (offset, c) in line.char_indices() {
            let mut utf8 = [0u8; 4];
            let out: &[u8] = if is_format_char(c) {
                &[]
            } else if let Some(value) = digit_value(c) {
                utf8[0] = b'0' + value;
                &utf8[..1]
            } else {
                match c {
                    '\u{a0}' | '\u{202f}' => b" ",
                    '\u{060c}' => b",",
                    _ => c.encode_utf8(&mut utf8).as_bytes(),
                }
            };
            if buffer.len + out.len() > HEADER_CAPACITY {
                buffer.truncated = true;
                break;
            }
            for &byte in out {
                buffer.bytes[buffer.len] = byte;
                buffer.offsets[buffer.len] = offset as u32;
                buffer.len += 1;
            }
            end = offset + c.len_utf8();
        }
        buffer.offsets[buffer.len] = end as u32;
        buffer
    }

    /// The normalised bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Whether the line goes on beyond [`Self::bytes`]: a scan that reaches the end of the
    /// buffer has not reached the end of the line.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The line offset of buffer position `index` (`index == len` maps to just after the last
    /// copied character). Positions past the end map to the end.
    pub fn line_offset(&self, index: usize) -> usize {
        self.offsets[index.min(self.len)] as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_of_every_run_read_as_their_value() {
        for &zero in DIGIT_ZEROS {
            for value in 0..10u32 {
                let c = char::from_u32(zero + value).expect("a digit");
                assert_eq!(digit_value(c), Some(value as u8), "U+{:04X}", zero + value);
            }
        }
        assert_eq!(digit_value('٥'), Some(5));
        assert_eq!(digit_value('۷'), Some(7));
        assert_eq!(digit_value('३'), Some(3));
        assert_eq!(digit_value('๙'), Some(9));
        assert_eq!(digit_value('a'), None);
        assert_eq!(digit_value('/'), None);
        assert_eq!(digit_value('\u{065f}'), None);
        assert_eq!(digit_value('\u{066a}'), None);
        assert_eq!(digit_value('²'), None);
    }

    #[test]
    fn digit_runs_are_sorted_and_disjoint() {
        for pair in DIGIT_ZEROS.windows(2) {
            assert!(pair[0] + 10 <= pair[1], "{:X} {:X}", pair[0], pair[1]);
        }
    }

    #[test]
    fn fill_normalises_and_maps_back() {
        let line = "\u{feff}[٥\u{200f}/١١\u{200f}/٢٠٢٣، ٧:٠٣:٢١\u{a0}ص] أحمد: مرحبا ١٢";
        let buffer = HeaderBuffer::fill(line);
        let text = std::str::from_utf8(buffer.bytes()).unwrap();
        assert_eq!(text, "[5/11/2023, 7:03:21 ص] أحمد: مرحبا 12");
        assert!(!buffer.truncated());
        let body = text.find("أحمد").unwrap();
        assert_eq!(&line[buffer.line_offset(body)..], "أحمد: مرحبا ١٢");
        assert_eq!(buffer.line_offset(text.len()), line.len());
    }

    #[test]
    fn fill_stops_at_capacity_on_a_character_boundary() {
        let line = "é".repeat(200);
        let buffer = HeaderBuffer::fill(&line);
        assert!(buffer.truncated());
        assert_eq!(buffer.bytes().len(), HEADER_CAPACITY);
        assert!(std::str::from_utf8(buffer.bytes()).is_ok());
        assert_eq!(buffer.line_offset(HEADER_CAPACITY), HEADER_CAPACITY);
        let marks = "\u{feff}".repeat(10_000) + "1";
        let buffer = HeaderBuffer::fill(&marks);
        assert_eq!(buffer.bytes(), b"1");
        assert_eq!(buffer.line_offset(0), 30_000);
    }
}

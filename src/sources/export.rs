//! What every export source shares: bounds on the files it reads ([`ExportLimits`],
//! [`read_bounded`]), and the reading of an export's wall-clock times ([`parse_timezone`],
//! [`to_utc_ms`]). Exports (WhatsApp, Telegram) carry local times with no zone; the session's
//! `timezone` setting names it.
use std::io::Read;

use chrono::{NaiveDateTime, TimeZone};
use chrono_tz::Tz;

use super::SourceError;

/// How much an export source reads from one file (`max_export_bytes` and
/// `max_export_compression_ratio` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportLimits {
    /// The most bytes of one export's text (a `.txt`, a `result.json`, or the uncompressed
    /// `_chat.txt` inside a zip). Default 1 GiB.
    pub max_bytes: u64,
    /// The most a zip entry may inflate: uncompressed bytes per compressed byte. Checked once
    /// an entry is past [`RATIO_CHECK_FLOOR`] bytes, so small files (which may compress very
    /// well) are never refused by it. Default 100.
    pub max_compression_ratio: u64,
}

/// Uncompressed bytes below which a zip entry's compression ratio is not checked.
pub const RATIO_CHECK_FLOOR: u64 = 1 << 20;

impl Default for ExportLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            max_compression_ratio: 100,
        }
    }
}

/// Reads `reader` to its end, bounded by `limits`: at most `limits.max_bytes` bytes, and, when
/// `compressed_bytes` is given (a zip entry), at most `limits.max_compression_ratio` times that
/// once past [`RATIO_CHECK_FLOOR`]. `declared_bytes` (a size the file claims) only sizes the
/// first allocation, up to 8 MiB; the buffer grows with what is really read. `name` is how
/// errors name the file.
///
/// Errors: [`SourceError::Invalid`] naming the limit that was crossed (the read stops there,
/// so memory stays bounded), or [`SourceError::Io`].
pub fn read_bounded(
    mut reader: impl Read,
    name: &str,
    declared_bytes: Option<u64>,
    compressed_bytes: Option<u64>,
    limits: &ExportLimits,
) -> Result<Vec<u8>, SourceError> {
    const FIRST_ALLOCATION: u64 = 8 << 20;
    let capacity = declared_bytes
        .unwrap_or(0)
        .min(limits.max_bytes)
        .min(FIRST_ALLOCATION);
    let mut bytes = Vec::with_capacity(capacity as usize);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let read = match reader.read(&mut chunk) {
            Ok(0) => return Ok(bytes),
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(SourceError::Io {
                    context: format!("cannot read {name}"),
                    source,
                });
            }
        };
        let total = bytes.len() as u64 + read as u64;
        if total > limits.max_bytes {
            return Err(too_large(name, limits));
        }
        if let Some(compressed) = compressed_bytes
            && total > RATIO_CHECK_FLOOR
            && total > compressed.saturating_mul(limits.max_compression_ratio)
        {
            return Err(too_compressed(name, compressed, limits));
        }
        bytes.extend_from_slice(&chunk[..read]);
    }
}

/// The error for an export above `max_export_bytes`.
pub fn too_large(name: &str, limits: &ExportLimits) -> SourceError {
    SourceError::Invalid(format!(
        "{name} is larger than the export size limit of {} bytes (max_export_bytes)",
        limits.max_bytes
    ))
}

/// The error for a zip entry that inflates beyond `max_export_compression_ratio`.
pub fn too_compressed(name: &str, compressed: u64, limits: &ExportLimits) -> SourceError {
    SourceError::Invalid(format!(
        "{name} inflates more than {} times its {compressed} compressed bytes \
         (max_export_compression_ratio): refused as a likely zip bomb",
        limits.max_compression_ratio
    ))
}

/// Parses an IANA zone name; `None` is UTC.
pub fn parse_timezone(name: Option<&str>) -> Result<Tz, String> {
    match name {
        None => Ok(Tz::UTC),
        Some(name) => name.parse::<Tz>().map_err(|_| {
            format!("unknown timezone {name:?} (use an IANA name such as Europe/Berlin)")
        }),
    }
}

/// Reads a wall-clock time in `timezone` as a UTC instant, in Unix milliseconds. A time that
/// falls in a DST gap is read one hour later; an ambiguous one takes the earlier instant.
pub fn to_utc_ms(timestamp: &NaiveDateTime, timezone: Tz) -> i64 {
    timezone
        .from_local_datetime(timestamp)
        .earliest()
        .or_else(|| {
            timezone
                .from_local_datetime(&(*timestamp + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|instant| instant.timestamp_millis())
        .unwrap_or_else(|| timestamp.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ExportLimits = ExportLimits {
        max_bytes: 3 << 20,
        max_compression_ratio: 10,
    };

    #[test]
    fn read_bounded_reads_up_to_the_size_limit_and_refuses_one_byte_more() {
        let exact = vec![b'a'; LIMITS.max_bytes as usize];
        let read = read_bounded(&exact[..], "x.txt", Some(u64::MAX), None, &LIMITS).expect("ok");
        assert_eq!(read.len(), exact.len());
        let over = vec![b'a'; LIMITS.max_bytes as usize + 1];
        let error = read_bounded(&over[..], "x.txt", None, None, &LIMITS).expect_err("refused");
        assert!(error.to_string().contains("max_export_bytes"), "{error}");
    }

    #[test]
    fn read_bounded_checks_the_ratio_only_past_the_floor() {
        let text = vec![b'a'; RATIO_CHECK_FLOOR as usize];
        // 1 MiB from 1 compressed byte: below the floor, not checked.
        assert!(read_bounded(&text[..], "x.zip", None, Some(1), &LIMITS).is_ok());
        let more = vec![b'a'; 2 * RATIO_CHECK_FLOOR as usize];
        let error = read_bounded(&more[..], "x.zip", None, Some(1_000), &LIMITS)
            .expect_err("2 MiB from 1,000 bytes");
        assert!(
            error.to_string().contains("max_export_compression_ratio"),
            "{error}"
        );
        let fine = RATIO_CHECK_FLOOR * 2 / LIMITS.max_compression_ratio + 1;
        assert!(read_bounded(&more[..], "x.zip", None, Some(fine), &LIMITS).is_ok());
    }
}

//! The day-period words (AM/PM markers) of 12-hour clocks that the WhatsApp parser accepts
//! before or after a time, in one table.
//!
//! Source: Unicode CLDR 46, `common/main/<locale>.xml`,
//! `dates/calendars/calendar[@type="gregorian"]/dayPeriods/dayPeriodContext[@type="format"]`,
//! widths `abbreviated` and `narrow` (and `wide` where a phone writes it), types `am` and `pm`,
//! for the languages WhatsApp ships. Entries marked *(earlier CLDR)* are values that earlier
//! CLDR releases held and that phones with older ICU data still write (German `vorm.`, Hindi
//! `पूर्वाह्न`, ...). Flexible day periods (`morning1`, `night1`, ...) are included only where a
//! locale writes them in place of AM/PM (Portuguese `da manhã`): before noon they count as AM,
//! after noon as PM.
//!
//! CLDR's flexible day periods of the same locales (`in the morning`, `de la tarde`,
//! `nachmittags`, ...) are not typed here: `scripts/gen_day_periods.py` writes them, with the
//! hours each covers from CLDR's dayPeriodRules, into `day_periods_cldr.rs`
//! ([`FLEXIBLE_DAY_PERIODS`]), which [`match_day_period`] reads as well.
//!
//! Checked against CLDR 47 (Python `babel` 2.19, 2026-12-01): every `abbreviated` and `wide`
//! am/pm of the locales below is in the table (dotted Latin `a. m.` forms are read by the
//! parser's Latin matcher instead).
//!
//! The table was transcribed by hand (an ICU4X data crate, `icu_datetime` with its compiled
//! data, would bring megabytes of data and a dozen crates for these few hundred bytes). Narrow
//! forms that are a single Latin letter (`a`/`p`) are left out: they would make ordinary words
//! look like markers. Matching is case-insensitive for ASCII letters; a space in an entry
//! matches one space, U+00A0 or U+202F (the parser has turned those into spaces by then).
//!
//! Locales covered: af, am, ar, az, be, bg, bn, ca, cs, da, de, el, en, es, et, eu, fa, fi,
//! fil, fr, ga, gl, gu, he, hi, hr, hu, hy, id, it, ja, ka, kk, km, kn, ko, ky, lo, lt, lv, mk,
//! ml, mn, mr, ms, my, nb, ne, nl, pa, pl, pt, ro, ru, si, sk, sl, sq, sr, sv, sw, ta, te, th,
//! tr, uk, ur, uz, vi, zh, zu.

/// Which part of the day a day-period word names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayPeriod {
    /// Before noon (CLDR `am`; `morning1`, `night2`-style periods before 12:00).
    Am,
    /// After noon (CLDR `pm`; `afternoon1`, `evening1`, `night1` after 12:00).
    Pm,
    /// A CLDR flexible day period ([`FLEXIBLE_DAY_PERIODS`]): the hours (bit h for hour h,
    /// 0-23) its locale's dayPeriodRules give it. [`hour_in_period`] reads a 12-hour clock
    /// hour with it.
    Hours(u32),
}

pub use super::day_periods_cldr::FLEXIBLE_DAY_PERIODS;

/// The hour (0-23) of a 12-hour clock `hour` (0-12) written with a flexible day period
/// covering `hours` (bit h for hour h): of `hour % 12` and `hour % 12 + 12`, the one in the
/// period; when neither or both are, the one nearest to the period, going round the clock
/// (so `12:30 at night`, night being 21:00-24:00 in English, is 00:30, and `1:00 at night` is
/// 01:00); on a tie, `hour % 12`.
pub fn hour_in_period(hour: u16, hours: u32) -> u16 {
    let low = hour % 12;
    let high = low + 12;
    let inside = |h: u16| hours >> h & 1 == 1;
    match (inside(low), inside(high)) {
        (true, false) => return low,
        (false, true) => return high,
        _ => {}
    }
    let distance = |h: u16| {
        (0..24u16)
            .filter(|&other| inside(other))
            .map(|other| {
                let d = h.abs_diff(other);
                d.min(24 - d)
            })
            .min()
            .unwrap_or(0)
    };
    if distance(high) < distance(low) {
        high
    } else {
        low
    }
}

use DayPeriod::{Am, Pm};

/// `(word as written, period)`. See the module docs for the source. Order does not matter:
/// the parser takes the longest entry that matches.
pub const DAY_PERIODS: &[(&str, DayPeriod)] = &[
    // Latin-script AM/PM as most locales write it (en, az, bn, da, de, et, fil, fr, hr, id,
    // it, ka, kk, km, ml, pl, pt, ru, sk, sr, sw, te, ur, zu, ...); `a.m.`/`p. m.` and the
    // other dotted forms are read by the parser's own Latin matcher.
    ("AM", Am),
    ("PM", Pm),
    // af
    ("vm.", Am),
    ("nm.", Pm),
    // am
    ("ጥዋት", Am),
    ("ከሰዓት", Pm),
    // ar (all regions)
    ("ص", Am),
    ("م", Pm),
    // be
    ("да пол.", Am),
    ("па пол.", Pm),
    // bg
    ("пр.об.", Am),
    ("сл.об.", Pm),
    // bn (earlier CLDR)
    ("পূর্বাহ্ন", Am),
    ("অপরাহ্ন", Pm),
    // ca, es, gl
    ("a. m.", Am),
    ("p. m.", Pm),
    // cs
    ("dop.", Am),
    ("odp.", Pm),
    // de (earlier CLDR abbreviated; CLDR 46 narrow in de_LU; `vm.`/`nm.` as in af)
    ("vorm.", Am),
    ("nachm.", Pm),
    // el
    ("π.μ.", Am),
    ("μ.μ.", Pm),
    ("π.μ", Am),
    ("μ.μ", Pm),
    // fa (abbreviated with and without the final dot, narrow)
    ("ق.ظ.", Am),
    ("ب.ظ.", Pm),
    ("ق.ظ", Am),
    ("ب.ظ", Pm),
    ("قبل\u{200c}ازظهر", Am),
    ("بعدازظهر", Pm),
    // fi
    ("ap.", Am),
    ("ip.", Pm),
    // ga
    ("r.n.", Am),
    ("i.n.", Pm),
    // gu
    ("પૂર્વ મધ્યાહ્ન", Am),
    ("ઉત્તર મધ્યાહ્ન", Pm),
    // he
    ("לפנה״צ", Am),
    ("אחה״צ", Pm),
    ("לפנה\"צ", Am),
    ("אחה\"צ", Pm),
    // hi, ne, mr (earlier CLDR for hi and mr)
    ("पूर्वाह्न", Am),
    ("अपराह्न", Pm),
    ("म.पू.", Am),
    ("म.उ.", Pm),
    // hu
    ("de.", Am),
    ("du.", Pm),
    // hy
    ("կ.ա.", Am),
    ("կ.հ.", Pm),
    // ja
    ("午前", Am),
    ("午後", Pm),
    // kn
    ("ಪೂರ್ವಾಹ್ನ", Am),
    ("ಅಪರಾಹ್ನ", Pm),
    // ko
    ("오전", Am),
    ("오후", Pm),
    // ky
    ("тң", Am),
    ("тк", Pm),
    ("таңкы", Am),
    ("түштөн кийинки", Pm),
    // lo
    ("ກ່ອນທ່ຽງ", Am),
    ("ຫຼັງທ່ຽງ", Pm),
    // lt
    ("priešpiet", Am),
    ("popiet", Pm),
    // lv
    ("priekšp.", Am),
    ("pēcp.", Pm),
    ("priekšpusdienā", Am),
    ("pēcpusdienā", Pm),
    // mk
    ("претпл.", Am),
    ("попл.", Pm),
    // mn
    ("ү.ө.", Am),
    ("ү.х.", Pm),
    // ms
    ("PG", Am),
    ("PTG", Pm),
    // my
    ("နံနက်", Am),
    ("ညနေ", Pm),
    // nb, nl, ro (also the dotted Latin forms)
    ("a.m.", Am),
    ("p.m.", Pm),
    // pa
    ("ਪੂ.ਦੁ.", Am),
    ("ਬਾ.ਦੁ.", Pm),
    // pt: flexible day periods some Android builds write instead of AM/PM
    ("da manhã", Am),
    ("da madrugada", Am),
    ("da tarde", Pm),
    ("da noite", Pm),
    // si
    ("පෙ.ව.", Am),
    ("ප.ව.", Pm),
    // sl (`dop.` as in cs)
    ("pop.", Pm),
    // sq
    ("e paradites", Am),
    ("e pasdites", Pm),
    ("p.d.", Am),
    ("m.d.", Pm),
    // sr (Cyrillic and Latin, earlier CLDR)
    ("пре подне", Am),
    ("по подне", Pm),
    ("pre podne", Am),
    ("po podne", Pm),
    // sv
    ("fm", Am),
    ("em", Pm),
    ("f.m.", Am),
    ("e.m.", Pm),
    // ta
    ("முற்பகல்", Am),
    ("பிற்பகல்", Pm),
    // te (earlier CLDR)
    ("పూర్వాహ్నం", Am),
    ("అపరాహ్నం", Pm),
    // th
    ("ก่อนเที่ยง", Am),
    ("หลังเที่ยง", Pm),
    // tr
    ("ÖÖ", Am),
    ("ÖS", Pm),
    ("öö", Am),
    ("ös", Pm),
    // uk
    ("дп", Am),
    ("пп", Pm),
    // ur (earlier CLDR)
    ("قبل دوپہر", Am),
    ("بعد دوپہر", Pm),
    // uz
    ("TO", Am),
    ("TK", Pm),
    // vi
    ("SA", Am),
    ("CH", Pm),
    // zh (Hans and Hant)
    ("上午", Am),
    ("下午", Pm),
    ("凌晨", Am),
    ("早上", Am),
    ("中午", Pm),
    ("晚上", Pm),
];

/// The longest day-period word at the start of `bytes`, of [`DAY_PERIODS`] and the generated
/// [`FLEXIBLE_DAY_PERIODS`]: its period and byte length (a word in both tables is read as
/// the hand table says). ASCII letters compare case-insensitively; the word must not run on
/// into an ASCII letter (so `em` does not match `email`).
pub fn match_day_period(bytes: &[u8]) -> Option<(DayPeriod, usize)> {
    let first = bytes.first()?.to_ascii_lowercase();
    let mut best: Option<(DayPeriod, usize)> = None;
    let flexible = FLEXIBLE_DAY_PERIODS
        .iter()
        .map(|&(word, hours)| (word, DayPeriod::Hours(hours)));
    for (word, period) in DAY_PERIODS.iter().copied().chain(flexible) {
        let word = word.as_bytes();
        if word.len() <= best.map_or(0, |(_, len)| len)
            || word[0].to_ascii_lowercase() != first
            || bytes.len() < word.len()
            || !bytes[..word.len()].eq_ignore_ascii_case(word)
        {
            continue;
        }
        let runs_on = word.last().is_some_and(u8::is_ascii_alphabetic)
            && bytes.get(word.len()).is_some_and(u8::is_ascii_alphabetic);
        if !runs_on {
            best = Some((period, word.len()));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_word_wins_and_words_do_not_run_on() {
        assert_eq!(match_day_period("ق.ظ.]".as_bytes()), Some((Am, 6)));
        assert_eq!(match_day_period("ق.ظ]".as_bytes()), Some((Am, 5)));
        assert_eq!(match_day_period(b"PTG - A"), Some((Pm, 3)));
        assert_eq!(match_day_period(b"pg]"), Some((Am, 2)));
        assert_eq!(match_day_period(b"email"), None);
        assert_eq!(match_day_period(b"nachm.]"), Some((Pm, 6)));
        assert_eq!(match_day_period("da manhã -".as_bytes()), Some((Am, 9)));
        assert_eq!(match_day_period("".as_bytes()), None);
        assert_eq!(match_day_period("م]".as_bytes()), Some((Pm, 2)));
    }

    #[test]
    fn flexible_periods_give_the_hour_their_rules_say() {
        let hours = |word: &str| match match_day_period(word.as_bytes()) {
            Some((DayPeriod::Hours(hours), len)) if len == word.len() => hours,
            other => panic!("{word}: {other:?}"),
        };
        // en: morning 06-12, afternoon 12-18, evening 18-21, night 21-24.
        assert_eq!(hour_in_period(9, hours("in the morning")), 9);
        assert_eq!(hour_in_period(3, hours("in the afternoon")), 15);
        assert_eq!(hour_in_period(12, hours("in the afternoon")), 12);
        assert_eq!(hour_in_period(8, hours("in the evening")), 20);
        assert_eq!(hour_in_period(11, hours("at night")), 23);
        assert_eq!(hour_in_period(12, hours("at night")), 0);
        assert_eq!(hour_in_period(1, hours("at night")), 1);
        // es: morning1 "de la madrugada" 00-06, night1 "de la noche" 20-24.
        assert_eq!(hour_in_period(2, hours("de la madrugada")), 2);
        assert_eq!(hour_in_period(9, hours("de la noche")), 21);
        // A word of both tables is read as the hand table says.
        assert_eq!(match_day_period("da noite".as_bytes()), Some((Pm, 8)));
        // de: "nachts" 00-05, "abends" 18-24.
        assert_eq!(hour_in_period(2, hours("nachts")), 2);
        assert_eq!(hour_in_period(8, hours("abends")), 20);
    }

    #[test]
    fn every_flexible_entry_matches_itself_and_tells_am_from_pm() {
        for &(word, hours) in FLEXIBLE_DAY_PERIODS {
            let (_, len) = match_day_period(word.as_bytes()).expect(word);
            assert_eq!(len, word.len(), "{word}");
            assert_ne!(hours, 0, "{word}");
            assert_eq!(hours >> 24, 0, "{word}");
            for h in 0..12 {
                assert!(hours >> h & 1 == 0 || hours >> (h + 12) & 1 == 0, "{word}");
            }
        }
    }

    #[test]
    fn every_entry_matches_itself() {
        for &(word, period) in DAY_PERIODS {
            let (got, len) = match_day_period(word.as_bytes()).expect(word);
            assert_eq!(len, word.len(), "{word}");
            assert_eq!(got, period, "{word}");
        }
    }
}

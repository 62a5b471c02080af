//! A strict one-pass reader of JSON (RFC 8259) for the decoder's shortcuts.
//!
//! serde_json spends most of a busy capture's time walking values the decoder then ignores (stat
//! blocks, environments, audit tokens it needs two fields of). [`Scan`] walks a line once, checks
//! every byte it passes against the grammar, and hands out only the values asked for (borrowed
//! unless a string had escapes to decode).
//!
//! Its answers are `Option`s meaning "sure": `None` is not an error but "ask the full decoder", which
//! then accepts or rejects the line as it always has. So `Scan` says `None` for anything it is not
//! built to be certain of — a `\u` escape in a string it returns, any escape in a key, a number that
//! is not a plain integer where one is read, nesting deeper than serde_json allows, a known key
//! twice — and
//! never accepts what serde_json would refuse (a property test holds it to that), with one
//! exception, asked for by name: [`Scan::pass_over_flat`], for stat blocks, environments,
//! arguments and audit tokens nothing reads.

/// Deeper than this is left to serde_json (whose own limit is 128).
const MAX_DEPTH: u32 = 100;

use std::borrow::Cow;

/// A position in one JSON text.
pub(super) struct Scan<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    depth: u32,
}

impl<'a> Scan<'a> {
    pub fn new(text: &'a str) -> Self {
        Scan {
            text,
            bytes: text.as_bytes(),
            at: 0,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Whether the next non-blank byte is `b` (not consumed).
    pub fn peek_is(&mut self, b: u8) -> bool {
        self.skip_ws();
        self.peek() == Some(b)
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// The next non-blank byte, consumed.
    fn next_token(&mut self) -> Option<u8> {
        self.skip_ws();
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, token: u8) -> Option<()> {
        (self.next_token()? == token).then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// Only blanks are left: the whole text was one value.
    pub fn finish(mut self) -> Option<()> {
        self.skip_ws();
        (self.at == self.bytes.len()).then_some(())
    }

    /// An object key (with no escape in it: unsure otherwise) and its colon, in one step: there is
    /// one per value in a capture, and in eslogger's compact output the colon follows at once.
    fn key(&mut self) -> Option<&'a [u8]> {
        self.skip_ws();
        let rest = self.bytes.get(self.at..)?;
        if rest.first() != Some(&b'"') {
            return None;
        }
        let len = find_special(&rest[1..])?;
        if rest[1 + len] != b'"' {
            return None;
        }
        let start = self.at + 1;
        self.at = start + len + 1;
        if self.bytes.get(self.at) == Some(&b':') {
            self.at += 1;
        } else {
            self.expect(b':')?;
        }
        // Bytes, not `str`: callers compare them with names, and slicing a `str` checks both
        // ends for a character boundary.
        Some(&self.bytes[start..start + len])
    }

    /// A string, borrowed when it has no escape. eslogger writes every `/` as `\/`, so paths do;
    /// `\u` escapes are left to serde_json (unsure).
    pub fn str(&mut self) -> Option<Cow<'a, str>> {
        self.skip_ws();
        let start = self.at + 1;
        let escaped = self.skip_str()?;
        let written = self.text.get(start..self.at - 1)?;
        if escaped {
            unescape(written)
        } else {
            Some(Cow::Borrowed(written))
        }
    }

    /// `null`, or a string.
    pub fn nullable_str(&mut self) -> Option<Option<Cow<'a, str>>> {
        self.nullable(Self::str)
    }

    /// `null` as `Some(None)`, otherwise the value `read` reads.
    pub fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        self.skip_ws();
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            return Some(None);
        }
        read(self).map(Some)
    }

    /// An integer written without fraction or exponent that fits in `T`; anything else is unsure.
    pub fn int<T: TryFrom<i128>>(&mut self) -> Option<T> {
        self.skip_ws();
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let start = self.at;
        let (end, mut magnitude) = digit_run(self.bytes, start);
        self.at = end;
        let digits = &self.bytes[start..self.at];
        // 20 digits hold every u64; more is a float to serde_json, unsure here.
        if digits.is_empty() || digits.len() > 20 || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        // serde_json reads integers as u64 or i64 (beyond those, floats) before a visitor narrows
        // them.
        if digits.len() == 20 {
            magnitude = 0;
            for d in digits {
                magnitude = magnitude
                    .checked_mul(10)?
                    .checked_add(u64::from(d - b'0'))?;
            }
        }
        let value = if negative {
            // serde_json reads `-0` as the float -0.0, which no integer field takes.
            if magnitude == 0 || magnitude > i64::MIN.unsigned_abs() {
                return None;
            }
            -i128::from(magnitude)
        } else {
            i128::from(magnitude)
        };
        T::try_from(value).ok()
    }

    pub fn bool(&mut self) -> Option<bool> {
        self.skip_ws();
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    fn digits(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        self.at = digit_run(self.bytes, start).0;
        (self.at > start).then(|| &self.bytes[start..self.at])
    }

    /// An object, calling `field` with each key; `field` must read the value (or [`Self::skip`]
    /// it). Keys with escapes are unsure.
    pub fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        self.container(b'{', b'}', |scan| {
            let key = scan.key()?;
            field(scan, key)
        })
    }

    /// An array, calling `element` for each element, which must read it.
    pub fn array(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.container(b'[', b']', element)
    }

    /// `open`, items read by `item` separated by commas, `close`.
    fn container(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.expect(open)?;
        self.enter()?;
        self.skip_ws();
        if self.peek() == Some(close) {
            self.at += 1;
        } else {
            loop {
                item(self)?;
                match self.next_token()? {
                    b',' => {}
                    b if b == close => break,
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// Any one value, checked, as the text it was written as.
    pub fn raw(&mut self) -> Option<&'a str> {
        self.span(Self::skip)
    }

    /// The text of the value `read` reads.
    pub fn span(&mut self, read: impl FnOnce(&mut Self) -> Option<()>) -> Option<&'a str> {
        self.skip_ws();
        let start = self.at;
        read(self)?;
        self.text.get(start..self.at)
    }

    /// Any one value, checked and passed over.
    pub fn skip(&mut self) -> Option<()> {
        self.skip_ws();
        match self.peek()? {
            b'"' => {
                self.at += 1;
                self.skip_str_body().map(drop)
            }
            b'{' => self.object(|scan, _| scan.skip()),
            b'[' => self.array(Self::skip),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => None,
        }
    }

    /// A flat object or array passed over without checking its tokens: for values nothing
    /// reads and that are most of a busy capture's bytes — files' `stat` blocks (almost half of
    /// an exec line; walking them token by token was a fifth of replay's CPU), an exec's
    /// `env` and `args` (a shell's environment is a kilobyte or two of `\/`-escaped paths) and
    /// audit tokens no one reads (a fork child's other two, those of a file creation's process
    /// until its path turns out to matter).
    /// Its extent is still exact: the value ends at the first `}` (or `]`) only if nothing
    /// before it could open a value or hide that bracket in a string (no other bracket, no
    /// escape but `\/`, and its quotes paired); otherwise it is walked and checked as any
    /// value. So a line stays one whole, balanced object, and only an error in the tokens of
    /// such a value (`"st_size":1x`, a raw control character in a string) goes unnoticed, as
    /// in the lines the raw-line tier counts without parsing.
    pub fn pass_over_flat(&mut self) -> Option<()> {
        self.skip_ws();
        let rest = &self.bytes[self.at..];
        let closer = match rest.first() {
            Some(b'{') => b'}',
            Some(b'[') => b']',
            _ => return self.skip(),
        };
        if let Some(close) = memchr::memchr(closer, rest) {
            if flat_and_paired(&rest[1..close]) {
                self.at += close + 1;
                return Some(());
            }
        }
        self.skip()
    }

    /// A flat object of integers written without blanks, as eslogger writes audit tokens
    /// (`{"pid":4100,"euid":501}`): each key and value to `field`, read in one tight loop rather
    /// than through [`Self::object`]'s call per key (an exec line has six tokens of eight keys).
    /// `None`, with nothing consumed, when the object is not of that shape (a blank, an escape,
    /// any other value, an integer of more than 18 digits); the caller then reads it the general
    /// way, which decides.
    pub fn compact_ints(&mut self, mut field: impl FnMut(&'a [u8], i64)) -> Option<()> {
        let b = self.bytes;
        let mut at = self.at;
        if b.get(at) != Some(&b'{') || self.depth >= MAX_DEPTH {
            return None;
        }
        at += 1;
        loop {
            if b.get(at) != Some(&b'"') {
                return None;
            }
            let key_start = at + 1;
            // Keys here are a few bytes: a plain loop beats `find_special`'s two words.
            let mut key_end = key_start;
            loop {
                match *b.get(key_end)? {
                    b'"' => break,
                    b'\\' | 0..=0x1f => return None,
                    _ => key_end += 1,
                }
            }
            if b.get(key_end + 1) != Some(&b':') {
                return None;
            }
            let negative = b.get(key_end + 2) == Some(&b'-');
            let digits = key_end + 2 + usize::from(negative);
            let (digits_end, magnitude) = digit_run(b, digits);
            let n = digits_end - digits;
            // Up to 18 digits the value fits an i64 either way round; `-0` is a float to serde_json.
            if n == 0 || n > 18 || (n > 1 && b[digits] == b'0') || (negative && magnitude == 0) {
                return None;
            }
            let value = magnitude as i64;
            field(
                &b[key_start..key_end],
                if negative { -value } else { value },
            );
            at = digits_end + 1;
            match b.get(digits_end) {
                Some(b',') => {}
                Some(b'}') => {
                    self.at = at;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string, escapes included, as serde_json passes over one it ignores (`\u` takes four hex
    /// digits, whatever they encode); whether it had an escape.
    fn skip_str(&mut self) -> Option<bool> {
        self.expect(b'"')?;
        self.skip_str_body()
    }

    /// [`Self::skip_str`] past its opening quote.
    fn skip_str_body(&mut self) -> Option<bool> {
        let mut escaped = false;
        loop {
            self.at += find_special(&self.bytes[self.at..])?;
            match self.bytes[self.at] {
                b'"' => {
                    self.at += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.at += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let hex = self.bytes.get(self.at + 1..self.at + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.at += 5;
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a control character
            }
        }
    }

    fn skip_number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let int = self.digits()?;
        if int.len() > 1 && int[0] == b'0' {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.digits()?;
        }
        Some(())
    }
}

/// The run of ASCII digits from `at`: where it ends, and its value (exact up to 19 digits, which
/// cannot overflow a u64; wrapped beyond).
fn digit_run(bytes: &[u8], mut at: usize) -> (usize, u64) {
    let mut value: u64 = 0;
    while let Some(&b) = bytes.get(at) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        value = value.wrapping_mul(10).wrapping_add(u64::from(d));
        at += 1;
    }
    (at, value)
}

/// A string's contents as written between its quotes (escapes checked already, or not: a broken
/// one is `None`), decoded; `None` too for a `\u` escape, which serde_json decodes with its own
/// rules for surrogates.
pub(super) fn unescape(written: &str) -> Option<Cow<'_, str>> {
    let Some(first) = memchr::memchr(b'\\', written.as_bytes()) else {
        return Some(Cow::Borrowed(written));
    };
    let mut out = String::with_capacity(written.len());
    let mut rest = written;
    let mut at = first;
    loop {
        out.push_str(&rest[..at]);
        out.push(match rest.as_bytes().get(at + 1)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            _ => return None,
        });
        rest = &rest[at + 2..];
        match memchr::memchr(b'\\', rest.as_bytes()) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

/// The offset of the first quote, backslash or control character: where a string's plain run ends.
/// Sixteen bytes at a time as two words (most keys and values end within the first sixteen, and one
/// branch on the pair beats a loop's exit every eight: 4-15 % faster decoding than one word).
fn find_special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Each byte's high bit set where the byte is zero; bits above the lowest may be false alarms,
    // and only the lowest is used.
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let special = |word: u64| {
        zero(word ^ (ONES * u64::from(b'"')))
            | zero(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS)
    };
    let mut chunks = bytes.chunks_exact(16);
    let mut offset = 0;
    for chunk in &mut chunks {
        let (a, b) = chunk.split_at(8);
        let first = special(u64::from_le_bytes(a.try_into().ok()?));
        let second = special(u64::from_le_bytes(b.try_into().ok()?));
        if first | second != 0 {
            let at = if first != 0 {
                first.trailing_zeros()
            } else {
                64 + second.trailing_zeros()
            };
            return Some(offset + at as usize / 8);
        }
        offset += 16;
    }
    let rest = chunks.remainder();
    rest.iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| offset + i)
}

/// No bracket, no escape but `\/`, and an even number of quotes: then the text holds no
/// value but strings and scalars, and no quote or bracket of its own inside a string. Written as
/// one fold with no early exit so that it compiles to vector instructions: the answer is nearly
/// always yes.
fn flat_and_paired(bytes: &[u8]) -> bool {
    let Some((&last, _)) = bytes.split_last() else {
        return true;
    };
    let bracket = |b: u8| matches!(b | 0x20, b'{' | b'}');
    let (quotes, bad) =
        bytes
            .iter()
            .zip(&bytes[1..])
            .fold((0u8, 0u8), |(quotes, bad), (&b, &next)| {
                let escape_not_slash = b == b'\\' && next != b'/';
                (
                    quotes.wrapping_add(u8::from(b == b'"')),
                    bad | u8::from(bracket(b) || escape_not_slash),
                )
            });
    let quotes = quotes.wrapping_add(u8::from(last == b'"'));
    quotes % 2 == 0 && bad == 0 && !bracket(last) && last != b'\\'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::IgnoredAny;

    fn skips(text: &str) -> bool {
        let mut scan = Scan::new(text);
        scan.skip().and_then(|()| scan.finish()).is_some()
    }

    #[test]
    fn finds_the_first_special_byte_in_and_after_whole_words() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    // Bytes that trip the word trick's false alarms sit after the special one.
                    for b in bytes.iter_mut().skip(at + 1) {
                        *b = 0x01;
                    }
                    bytes[at] = special;
                    assert_eq!(find_special(&bytes), Some(at), "{len} {at} {special}");
                }
            }
            assert_eq!(find_special(&vec![0xc3; len]), None);
            assert_eq!(find_special(&vec![b' '; len]), None);
        }
    }

    #[test]
    fn reads_wanted_values_and_is_unsure_of_the_rest() {
        let read = |text: &str| Scan::new(text).int::<i32>();
        assert_eq!(read(" 42"), Some(42));
        assert_eq!(read("-7"), Some(-7));
        assert_eq!(read("-0"), None);
        assert_eq!(read("2147483648"), None);
        assert_eq!(read("4.0"), None);
        assert_eq!(read("1e3"), None);
        assert_eq!(read("012"), None);
        assert_eq!(read("\"1\""), None);
        assert_eq!(
            Scan::new("18446744073709551615").int::<u64>(),
            Some(u64::MAX)
        );
        assert_eq!(Scan::new("18446744073709551616").int::<i128>(), None);
        assert_eq!(Scan::new("-9223372036854775809").int::<i128>(), None);
        let borrowed = |text: &str| match Scan::new(text).str() {
            Some(Cow::Borrowed(s)) => Some(s.to_string()),
            _ => None,
        };
        assert_eq!(borrowed("\"a/b\""), Some("a/b".into()));
        assert_eq!(borrowed("\"é\""), Some("é".into()));
        assert_eq!(
            Scan::new(r#""a\/b\"\\ \t""#).str().as_deref(),
            Some("a/b\"\\ \t")
        );
        assert_eq!(Scan::new(r#""\u00e9""#).str(), None);
        assert_eq!(Scan::new(r#""a\qb""#).str(), None);
        let key = |text: &str| Scan::new(text).key().map(<[u8]>::to_vec);
        assert_eq!(key("\"ab\":1"), Some(b"ab".to_vec()));
        assert_eq!(key(" \"ab\" : 1"), Some(b"ab".to_vec()));
        assert_eq!(key("\"a\\/b\":1"), None);
        assert_eq!(key("\"ab\" 1"), None);
        assert_eq!(Scan::new("null").nullable_str(), Some(None));
        assert_eq!(Scan::new("nul").nullable_str(), None);
        assert_eq!(Scan::new("true").bool(), Some(true));
        assert_eq!(Scan::new("tru").bool(), None);
    }

    #[test]
    fn a_known_shape_is_read_and_a_broken_one_refused() {
        let mut keys = Vec::new();
        let mut scan =
            Scan::new(r#" {"a": [1, -2.5e+3, "x\"\u00e9"], "b": {"c": null}, "d": true} "#);
        scan.object(|scan, key| {
            keys.push(key);
            scan.skip()
        })
        .unwrap();
        scan.finish().unwrap();
        assert_eq!(keys, [b"a", b"b", b"d"]);
        for broken in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "01",
            "1.",
            "1e",
            "-",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"a\tb\"",
            "{\"a\":1}}",
            "tru",
            "nulls",
        ] {
            assert!(!skips(broken), "{broken:?}");
        }
        let deep = "[".repeat(MAX_DEPTH as usize + 1) + &"]".repeat(MAX_DEPTH as usize + 1);
        assert!(!skips(&deep));
        let deep_enough = "[".repeat(MAX_DEPTH as usize) + &"]".repeat(MAX_DEPTH as usize);
        assert!(skips(&deep_enough));
    }

    #[test]
    fn flat_and_paired_sees_every_byte_value_wherever_it_is() {
        let reference = |bytes: &[u8]| {
            let escapes = bytes.iter().enumerate().filter(|(_, &b)| b == b'\\');
            bytes.iter().filter(|&&b| b == b'"').count() % 2 == 0
                && !bytes
                    .iter()
                    .any(|&b| matches!(b, b'{' | b'[' | b'}' | b']'))
                && escapes
                    .into_iter()
                    .all(|(i, _)| bytes.get(i + 1) == Some(&b'/'))
        };
        // Each byte value at each place, in texts shorter and longer than a vector step, and
        // 256 quotes (which a byte-wide count wraps to zero: still even).
        assert!(!flat_and_paired(&[b'"'; 257]));
        assert!(flat_and_paired(&[b'"'; 256]));
        for len in (0..20).chain([31, 32, 33, 65]) {
            for at in 0..len {
                for b in 0..=u8::MAX {
                    for filler in [b'a', b'/', 0xff, b'"'] {
                        let mut bytes = vec![filler; len];
                        bytes[at] = b;
                        assert_eq!(flat_and_paired(&bytes), reference(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }

    /// `pass_over_flat` on `text`: where it stopped, or `None`.
    fn passed_over(text: &str) -> Option<usize> {
        let mut scan = Scan::new(text);
        scan.pass_over_flat().map(|()| scan.at)
    }

    #[test]
    fn a_stat_block_is_passed_over_to_its_own_brace_and_anything_else_is_walked() {
        let stat = r#"{"st_size":154624,"st_mtimespec":"2026-11-18T09:12:44.000000000Z"}"#;
        assert_eq!(passed_over(&format!("{stat},\"path\":1")), Some(stat.len()));
        // Its tokens are not checked (a bad number, a raw tab in a string): this is what the
        // shortcut gives up.
        assert_eq!(passed_over(r#"{"st_size":1x}"#), Some(14));
        assert_eq!(passed_over("{\"a\":\"\t\"}"), Some(9));
        // An array of strings, escaped slashes and all.
        let env = r#"["PATH=\/usr\/bin:\/bin","HOME=\/Users\/alice"]"#;
        assert_eq!(passed_over(&format!("{env},1")), Some(env.len()));
        // A bracket in a string, a nested value, an escape but `\/`: walked and checked as any
        // value, so the extent is right or the answer is unsure.
        for (text, end) in [
            (r#"["a]","b"],"#, Some(10)),
            (r#"["a\"]","b"],"#, Some(12)),
            (r#"["a\\"],"#, Some(7)),
            (r#"["a\\\/"],"#, Some(9)),
            (r#"[{"a":1}],"#, Some(9)),
            (r#"["a"}],"#, None),
            (r#"{"a":"}","b":1},"#, Some(15)),
            (r#"{"a":{"b":1},"c":2},"#, Some(19)),
            (r#"{"a":[1],"c":2},"#, Some(15)),
            (r#"{"a":"\"}"},1"#, Some(11)),
            (r#"{"a":1x,"b":{}}"#, None),
            (r#"{"st_size":1"#, None),
            (r#""a""#, Some(3)),
        ] {
            assert_eq!(passed_over(text), end, "{text}");
        }
    }

    #[test]
    fn an_audit_token_is_read_compactly_and_any_other_shape_left_whole() {
        let token = r#"{"egid":0,"pid":-1,"auid":4294967295,"pidversion":28800}"#;
        let mut fields = Vec::new();
        let mut scan = Scan::new(token);
        scan.compact_ints(|k, v| fields.push((String::from_utf8_lossy(k).into_owned(), v)))
            .unwrap();
        assert_eq!(scan.at, token.len());
        let expected = [
            ("egid", 0),
            ("pid", -1),
            ("auid", 4294967295),
            ("pidversion", 28800),
        ];
        assert_eq!(fields, expected.map(|(k, v)| (k.to_string(), v)));
        for other in [
            "{}",
            r#"{"pid": 1}"#,
            r#"{ "pid":1}"#,
            r#"{"pid":1 }"#,
            r#"{"p\u0069d":1}"#,
            r#"{"pid":1.5}"#,
            r#"{"pid":1e3}"#,
            r#"{"pid":01}"#,
            r#"{"pid":-0}"#,
            r#"{"pid":"1"}"#,
            r#"{"pid":null}"#,
            r#"{"pid":1234567890123456789}"#,
            r#"{"pid":1,}"#,
            r#"{"pid":1"#,
            "[1,2]",
        ] {
            let mut scan = Scan::new(other);
            assert_eq!(scan.compact_ints(|_, _| {}), None, "{other}");
            assert_eq!(scan.at, 0, "{other}");
        }
    }

    fn json_text() -> impl Strategy<Value = String> {
        // Valid JSON, then mutated a byte or two so that much of it is not.
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| serde_json::to_string(&f).unwrap()),
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        ];
        let value = leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-z\"\\\\]{0,4}", inner), 0..5).prop_map(|v| {
                    let fields: Vec<String> = v
                        .into_iter()
                        .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
                        .collect();
                    format!("{{{}}}", fields.join(", "))
                }),
            ]
        });
        (
            value,
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        )
            .prop_map(|(text, edits)| {
                let mut bytes = text.into_bytes();
                for (at, byte) in edits {
                    if !bytes.is_empty() {
                        let i = at.index(bytes.len());
                        bytes[i] = byte & 0x7f;
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            })
    }

    /// Objects of integers as eslogger writes audit tokens, then mutated a byte or two.
    fn int_object() -> impl Strategy<Value = String> {
        let value = prop_oneof![any::<i64>(), -9..100_000i64];
        let fields = prop::collection::vec(("[a-z_\"\\\\ ]{0,10}", value), 0..9);
        let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3);
        (fields, edits).prop_map(|(fields, edits)| {
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                .collect();
            let mut bytes = format!("{{{}}}", fields.join(",")).into_bytes();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte & 0x7f;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }

    proptest! {
        #![proptest_config(super::super::property_config(4000))]
        /// What the compact reader reads is what the general one reads, to the same end; what it
        /// does not read it leaves where it was.
        #[test]
        fn compact_ints_read_as_the_general_reader_or_not_at_all(text in int_object()) {
            let mut compact = Vec::new();
            let mut scan = Scan::new(&text);
            let read = scan.compact_ints(|k, v| compact.push((k.to_vec(), v)));
            let mut general = Vec::new();
            let mut walk = Scan::new(&text);
            let walked = walk.object(|scan, k| {
                general.push((k.to_vec(), scan.int::<i64>()?));
                Some(())
            });
            match read {
                Some(()) => {
                    prop_assert!(walked.is_some(), "{:?}", text);
                    prop_assert_eq!(compact, general, "{:?}", text);
                    prop_assert_eq!(scan.at, walk.at, "{:?}", text);
                }
                None => prop_assert_eq!(scan.at, 0, "{:?}", text),
            }
        }

        /// Never accepts what serde_json refuses, and accepts what it accepts unless unsure
        /// (escapes it does not take apart, `\u` aside, are its only doubt about a valid value).
        #[test]
        fn agrees_with_serde_json(text in json_text()) {
            let serde_accepts = serde_json::from_str::<IgnoredAny>(&text).is_ok();
            let scan_accepts = skips(&text);
            if scan_accepts {
                prop_assert!(serde_accepts, "accepted what serde_json refuses: {text:?}");
            } else if serde_accepts {
                prop_assert!(text.contains('\\'), "refused valid JSON: {text:?}");
            }
        }

        /// On valid JSON, passing over a value ends where walking it does; what it accepts that
        /// walking refuses is one flat object or array, whose tokens alone are wrong.
        #[test]
        fn passing_over_ends_where_walking_does(text in json_text()) {
            let walked = {
                let mut scan = Scan::new(&text);
                scan.skip().map(|()| scan.at)
            };
            match (passed_over(&text), walked) {
                (Some(passed), Some(walked)) => prop_assert_eq!(passed, walked, "{:?}", text),
                (Some(passed), None) => {
                    let start = text.len() - text.trim_start().len();
                    let (open, close) = (text.as_bytes()[start], text.as_bytes()[passed - 1]);
                    let flat = matches!((open, close), (b'{', b'}') | (b'[', b']'))
                        && !text[start + 1..passed - 1].contains(['{', '[', '}', ']']);
                    prop_assert!(flat, "{:?}", text);
                }
                (None, walked) => prop_assert_eq!(walked, None, "{:?}", text),
            }
        }
    }
}

//! Reading eslogger JSON Lines from a file, FIFO or stdin: bounded lines, decoding, and the counts a
//! person needs to trust the result (malformed lines with their numbers, skipped types, drops).

use std::collections::BTreeMap;
use std::io::{self, BufRead};

use super::eslogger::{decode_line, event_type, Decoded};
use crate::event::{Event, Interest};

/// Longest line accepted. eslogger lines are a few KB; exec events with huge environments reach
/// hundreds of KB. Longer lines are skipped (counted) without holding them in memory.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// How many malformed lines are kept with their error for the summary.
const KEEP_MALFORMED: usize = 10;

/// Distinct event types and message versions tracked one by one; hostile input inventing more is
/// counted together, so memory does not grow with the input.
const MAX_DISTINCT: usize = 512;

/// A line, or the fact that one was too long to keep.
pub enum Line<'a> {
    Text(&'a [u8]),
    TooLong { len: u64 },
}

/// Splits a byte stream into lines of at most `max` bytes, without ever buffering more than that.
pub struct LineReader<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
    line_no: u64,
    bytes: u64,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            max,
            buf: Vec::new(),
            line_no: 0,
            bytes: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The next line and its 1-based number; a last line without a newline is still a line.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut len: u64 = 0;
        let mut too_long = false;
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                if len == 0 {
                    return Ok(None);
                }
                break;
            }
            let (chunk, used, done) = match memchr::memchr(b'\n', avail) {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            len += chunk.len() as u64;
            if !too_long {
                if self.buf.len() + chunk.len() > self.max {
                    too_long = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            self.inner.consume(used);
            self.bytes += used as u64;
            if done {
                break;
            }
        }
        self.line_no += 1;
        if too_long {
            return Ok(Some((self.line_no, Line::TooLong { len })));
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(Some((self.line_no, Line::Text(&self.buf))))
    }
}

/// Counts over one input.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct InputStats {
    pub lines: u64,
    pub bytes: u64,
    pub blank: u64,
    /// Events decoded and handed to detection.
    pub decoded: u64,
    /// Well-formed events detection has no use for, by event type.
    pub skipped_by_type: BTreeMap<u32, u64>,
    pub malformed: u64,
    /// The first malformed lines: (line number, error).
    pub malformed_examples: Vec<(u64, String)>,
    /// Lines with bytes that are not UTF-8 (decoded with replacement characters).
    pub non_utf8: u64,
    pub too_long: u64,
    /// Message versions seen.
    pub versions: BTreeMap<u32, u64>,
    /// Skipped events whose type was past `MAX_DISTINCT` distinct types (hostile or corrupt input).
    pub skipped_other_types: u64,
    /// Lines whose message version was past `MAX_DISTINCT` distinct versions.
    pub other_versions: u64,
    /// Events the producer dropped, from gaps in `global_seq_num`.
    pub seq_gap_events: u64,
    /// Times `global_seq_num` went backwards (a restarted producer, or files concatenated).
    pub seq_resets: u64,
    last_global_seq: Option<u64>,
}

impl InputStats {
    /// Well-formed events detection had no use for (including those of untracked types).
    pub fn skipped(&self) -> u64 {
        self.skipped_by_type.values().sum::<u64>() + self.skipped_other_types
    }

    /// Event types not known to this version of kextwatch (newer macOS), with their counts.
    pub fn unknown_types(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.skipped_by_type
            .iter()
            .filter(|(t, _)| event_type::name(**t).is_none())
            .map(|(t, n)| (*t, *n))
    }

    fn malformed(&mut self, line: u64, why: String) {
        self.malformed += 1;
        tracing::debug!(line, error = %why, "malformed input line");
        if self.malformed_examples.len() < KEEP_MALFORMED {
            self.malformed_examples.push((line, why));
        }
    }

    fn envelope(&mut self, version: u32, global_seq_num: Option<u64>) {
        if !bump(&mut self.versions, version) {
            self.other_versions += 1;
        }
        if let Some(seq) = global_seq_num {
            match self.last_global_seq {
                Some(last) if seq > last => self.seq_gap_events += seq - last - 1,
                Some(_) => self.seq_resets += 1,
                None => {}
            }
            self.last_global_seq = Some(seq);
        }
    }
}

/// Count `key` unless that would track more than `MAX_DISTINCT` keys; false if not counted.
fn bump(map: &mut BTreeMap<u32, u64>, key: u32) -> bool {
    if let Some(n) = map.get_mut(&key) {
        *n += 1;
        true
    } else if map.len() < MAX_DISTINCT {
        map.insert(key, 1);
        true
    } else {
        false
    }
}

/// Decodes lines into events, counting everything that is not one.
pub struct EventDecoder<'i> {
    interest: &'i dyn Interest,
    pub stats: InputStats,
}

impl<'i> EventDecoder<'i> {
    pub fn new(interest: &'i dyn Interest) -> Self {
        EventDecoder {
            interest,
            stats: InputStats::default(),
        }
    }

    /// Decode one line; `None` for anything that is not an event for detection (already counted).
    pub fn decode(&mut self, line_no: u64, line: Line<'_>) -> Option<Event> {
        self.stats.lines += 1;
        let bytes = match line {
            Line::TooLong { len } => {
                self.stats.too_long += 1;
                self.stats.malformed(
                    line_no,
                    format!("line of {len} bytes exceeds the {MAX_LINE} byte limit"),
                );
                return None;
            }
            Line::Text(b) => b,
        };
        self.stats.bytes += bytes.len() as u64 + 1;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            self.stats.blank += 1;
            return None;
        }
        let lossy;
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                self.stats.non_utf8 += 1;
                lossy = String::from_utf8_lossy(bytes);
                &lossy
            }
        };
        match decode_line(text, self.interest) {
            Ok(Decoded::Event(ev)) => {
                self.stats.envelope(ev.version, ev.global_seq_num);
                self.stats.decoded += 1;
                Some(*ev)
            }
            Ok(Decoded::Skipped(meta)) => {
                self.stats.envelope(meta.version, meta.global_seq_num);
                if !bump(&mut self.stats.skipped_by_type, meta.event_type) {
                    self.stats.skipped_other_types += 1;
                }
                None
            }
            Err(e) => {
                self.stats.malformed(line_no, e.to_string());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, u64>> {
        let mut r = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some((_, l)) = r.next_line().unwrap() {
            out.push(match l {
                Line::Text(t) => Ok(t.to_vec()),
                Line::TooLong { len } => Err(len),
            });
        }
        out
    }

    #[test]
    fn splits_lines_and_keeps_unterminated_last_line() {
        assert_eq!(
            lines(b"a\nbb\r\n\nccc", 10),
            vec![
                Ok(b"a".to_vec()),
                Ok(b"bb".to_vec()),
                Ok(vec![]),
                Ok(b"ccc".to_vec())
            ]
        );
        assert!(lines(b"", 10).is_empty());
    }

    #[test]
    fn overlong_line_is_skipped_not_buffered() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\nok\n");
        // A tiny BufReader capacity forces the long line across many reads.
        let mut r = LineReader::new(io::BufReader::with_capacity(7, &input[..]), 10);
        let mut got = Vec::new();
        while let Some((n, l)) = r.next_line().unwrap() {
            got.push((n, matches!(l, Line::TooLong { len: 100 })));
        }
        assert_eq!(got, vec![(1, true), (2, false)]);
    }
}

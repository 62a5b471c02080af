//! Reading eslogger JSON Lines from a file, FIFO or stdin: bounded lines, decoding, and the counts a
//! person needs to trust the result (malformed lines with their numbers, skipped types, drops).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};

use super::eslogger::{decode_line, event_type, DecodeError, Decoded};
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

impl<R: Read> LineReader<io::BufReader<R>> {
    /// Whether a whole line is already read, so that [`Self::next_line`] will not wait for input.
    pub fn line_ready(&self) -> bool {
        memchr::memchr(b'\n', self.inner.buffer()).is_some()
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
        self.account(line_no, classify(line, self.interest))
    }

    /// Count a line [`classify`] looked at, in input order; the event, if it is one for detection.
    pub fn account(&mut self, line_no: u64, line: Classified) -> Option<Event> {
        self.stats.lines += 1;
        let (bytes, non_utf8, result) = match line {
            Classified::TooLong { len } => {
                self.stats.too_long += 1;
                self.stats.malformed(
                    line_no,
                    format!("line of {len} bytes exceeds the {MAX_LINE} byte limit"),
                );
                return None;
            }
            Classified::Blank { bytes } => {
                self.stats.bytes += bytes as u64 + 1;
                self.stats.blank += 1;
                return None;
            }
            Classified::Text {
                bytes,
                non_utf8,
                result,
            } => (bytes, non_utf8, result),
        };
        self.stats.bytes += bytes as u64 + 1;
        if non_utf8 {
            self.stats.non_utf8 += 1;
        }
        match result {
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

/// What one line is, before it is counted. Deciding it needs nothing but the line and the
/// interest, so it can run on any thread; counting ([`EventDecoder::account`]) runs in input order.
pub enum Classified {
    TooLong {
        len: u64,
    },
    Blank {
        bytes: usize,
    },
    Text {
        bytes: usize,
        non_utf8: bool,
        result: Result<Decoded, DecodeError>,
    },
}

/// Decode one line without counting it.
pub fn classify(line: Line<'_>, interest: &dyn Interest) -> Classified {
    let bytes = match line {
        Line::TooLong { len } => return Classified::TooLong { len },
        Line::Text(b) => b,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Classified::Blank { bytes: bytes.len() };
    }
    // Every byte of every line is checked: simdutf8 does it with SIMD where the CPU has it.
    let (text, non_utf8) = match simdutf8::basic::from_utf8(bytes) {
        Ok(t) => (Cow::Borrowed(t), false),
        Err(_) => (String::from_utf8_lossy(bytes), true),
    };
    Classified::Text {
        bytes: bytes.len(),
        non_utf8,
        result: decode_line(&text, interest),
    }
}

/// Whole lines handed to a decoding thread, as read: it splits them itself. Lines are numbered
/// by the thread that takes the results in order, so nobody counts them twice.
struct Batch {
    /// Complete lines, each ending in a newline (but the input's last, which may not).
    data: Vec<u8>,
    /// Instead of `data`: one line too long to keep, of this many bytes.
    too_long: Option<u64>,
    /// Input bytes consumed once this batch was read (for a progress display).
    bytes_end: u64,
}

impl Batch {
    /// Each line, as [`LineReader`] would give it.
    fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        fn line(bytes: &[u8]) -> Line<'_> {
            if bytes.len() > MAX_LINE {
                Line::TooLong {
                    len: bytes.len() as u64,
                }
            } else {
                Line::Text(bytes.strip_suffix(b"\r").unwrap_or(bytes))
            }
        }
        // A batch of one line too long to keep holds no data.
        let too_long = self.too_long.map(|len| Line::TooLong { len });
        let data = &self.data[..];
        let mut newlines = memchr::memchr_iter(b'\n', data);
        let mut start = 0;
        too_long.into_iter().chain(std::iter::from_fn(move || {
            // Every line ends in a newline but the input's last, which may not.
            let end = newlines
                .next()
                .or((start < data.len()).then_some(data.len()))?;
            let text = &data[start..end];
            start = end + 1;
            Some(line(text))
        }))
    }
}

/// Reads `input` in large blocks and cuts them at line ends into batches, without copying lines
/// one by one; a line longer than [`MAX_LINE`] is counted, never held whole. Each batch is read
/// into a buffer the caller gives (the one its last batch came in), so memory is allocated (and
/// the kernel zeroes pages) once per decoding thread, not for every block.
struct BatchReader<R> {
    input: R,
    target: usize,
    /// The start of a line whose end has not been read yet.
    carry: Vec<u8>,
    bytes: u64,
    eof: bool,
    /// A read error, returned once the whole lines read before it have been.
    failed: Option<io::Error>,
}

impl<R: Read> BatchReader<R> {
    fn new(input: R, target: usize) -> Self {
        BatchReader {
            input,
            target,
            carry: Vec::new(),
            bytes: 0,
            eof: false,
            failed: None,
        }
    }

    /// The next batch, in `data` (whatever it held is dropped); `None` at the end of the input.
    fn next(&mut self, mut data: Vec<u8>) -> io::Result<Option<Batch>> {
        if let Some(e) = self.failed.take() {
            self.eof = true;
            return Err(e);
        }
        if self.eof {
            return Ok(None);
        }
        data.clear();
        data.extend_from_slice(&self.carry);
        self.carry.clear();
        // The carry holds no line end; only what each read adds is searched for one.
        let mut last_end: Option<usize> = None;
        loop {
            let before = data.len();
            let want = self.target.max(4096);
            data.reserve(want);
            // `read_to_end` reads into the spare capacity without zeroing it first (files), and
            // keeps what it read before an error.
            let read = (&mut self.input).take(want as u64).read_to_end(&mut data);
            let n = data.len() - before;
            self.bytes += n as u64;
            if let Some(i) = memchr::memrchr(b'\n', &data[before..]) {
                last_end = Some(before + i);
            }
            if let Err(e) = read {
                // The whole lines read before the error are handed over first.
                let Some(last) = last_end else {
                    return Err(e);
                };
                self.failed = Some(e);
                data.truncate(last + 1);
                return Ok(Some(self.batch(data)));
            }
            if n == 0 {
                // The end: what is left is the last line, newline or not.
                self.eof = true;
                return Ok((!data.is_empty()).then(|| self.batch(data)));
            }
            match last_end {
                Some(last) if data.len() >= self.target || last + 1 == data.len() => {
                    self.carry.extend_from_slice(&data[last + 1..]);
                    data.truncate(last + 1);
                    return Ok(Some(self.batch(data)));
                }
                None if data.len() > MAX_LINE => return self.skip_long_line(data.len()).map(Some),
                _ => {}
            }
        }
    }

    fn batch(&self, data: Vec<u8>) -> Batch {
        Batch {
            data,
            too_long: None,
            bytes_end: self.bytes,
        }
    }

    /// A line already longer than the limit (`so_far` bytes): read on to its end, keeping nothing.
    fn skip_long_line(&mut self, mut len: usize) -> io::Result<Batch> {
        let mut buf = vec![0; 1 << 16];
        loop {
            let n = match self.input.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            };
            self.bytes += n as u64;
            if n == 0 {
                self.eof = true;
                break;
            }
            if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
                len += i;
                self.carry = buf[i + 1..n].to_vec();
                break;
            }
            len += n;
        }
        Ok(Batch {
            data: Vec::new(),
            too_long: Some(len as u64),
            bytes_end: self.bytes,
        })
    }
}

/// How many decoding threads, and how many bytes of whole lines make a batch for one: large
/// enough that handing it over costs nothing next to decoding it, small enough that the batches in
/// flight stay a few MiB.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub workers: usize,
    pub bytes: usize,
}

impl Batching {
    /// One decoding thread per core (at least two, so reading and decoding overlap).
    pub fn per_core() -> Batching {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Batching {
            workers: cores.max(2),
            bytes: 1 << 20,
        }
    }
}

/// A results vector is handed back for reuse only up to this many lines: a 1 MiB batch of
/// eslogger's kilobyte lines holds a few hundred.
const KEPT_RESULTS: usize = 16_384;

/// Read lines from `input` and decode them on `batching.workers` threads, handing each line's
/// [`Classified`] to `each` on this thread in input order, with its number and the input bytes
/// consumed so far. Stops at the end of the input, at a read error (returned as `Ok(Err(..))`
/// after every line before it was handed over), or at the first error `each` returns.
///
/// There is no reading thread: the decoding threads take turns at the one reader, each reading its
/// next batch into its own buffer and then decoding it while the others read and decode theirs.
/// So a block is copied from the kernel into the cache of the core that decodes it, and no fourth
/// thread competes for the cores (replaying 1 GB on 2 cores: 6-8 % less CPU and wall time than
/// with a reading thread).
pub fn decode_in_parallel<R, E>(
    input: R,
    interest: &(dyn Interest + Sync),
    batching: Batching,
    mut each: impl FnMut(u64, Classified, u64) -> Result<(), E>,
) -> Result<io::Result<()>, E>
where
    R: Read + Send,
{
    use std::sync::mpsc::sync_channel;
    let workers = batching.workers.max(1);
    let turns = Turns::new(BatchReader::new(input, batching.bytes), workers);
    std::thread::scope(|scope| {
        let mut from_workers = Vec::with_capacity(workers);
        let mut to_workers = Vec::with_capacity(workers);
        for worker in 0..workers {
            let (done_tx, done_rx) = sync_channel::<io::Result<(Vec<Classified>, u64)>>(2);
            from_workers.push(done_rx);
            // Result vectors come back emptied, to be filled again: a fresh one per batch was
            // a large allocation, for which glibc first consolidates every small block freed
            // (1.5 % of replay's CPU, with the growth of a vector of the batch's lines).
            let (spent_tx, spent_rx) = sync_channel::<Vec<Classified>>(2);
            to_workers.push(spent_tx);
            let turns = &turns;
            scope.spawn(move || {
                // However this thread ends (the end, an error, nobody listening, even a panic),
                // nobody else waits for its turn.
                let _stop = StopOnDrop(turns);
                let mut buffer = Vec::new();
                // Batch k is worker k % workers's: each answers its own in order.
                while let Some(read) = turns.read(worker, std::mem::take(&mut buffer)) {
                    let done = read.map(|batch| {
                        let mut done = spent_rx.try_recv().unwrap_or_default();
                        done.extend(batch.lines().map(|line| classify(line, interest)));
                        buffer = batch.data;
                        (done, batch.bytes_end)
                    });
                    if done_tx.send(done).is_err() {
                        break;
                    }
                }
            });
        }
        // In input order: batch k is worker k % workers's.
        let mut k = 0;
        let mut line_no = 0;
        let (mut read, mut handed) = (Ok(()), Ok(()));
        'batches: while let Ok(done) = from_workers[k % workers].recv() {
            let (mut lines, bytes_end) = match done {
                Ok(done) => done,
                Err(e) => {
                    read = Err(e);
                    break;
                }
            };
            for c in lines.drain(..) {
                line_no += 1;
                if let Err(e) = each(line_no, c, bytes_end) {
                    handed = Err(e);
                    break 'batches;
                }
            }
            // A worker with vectors enough to spare lets this one go, and so does one grown
            // for a batch of unusually many short lines, which is not kept for the rest.
            if lines.capacity() <= KEPT_RESULTS {
                let _ = to_workers[k % workers].try_send(lines);
            }
            k += 1;
        }
        // Nobody takes results any more: the workers stop at their next turn or hand-over.
        drop(from_workers);
        turns.stop();
        handed.map(|()| read)
    })
}

/// Stops the turns when dropped.
struct StopOnDrop<'t, R: Read>(&'t Turns<R>);

impl<R: Read> Drop for StopOnDrop<'_, R> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// One reader shared by the decoding threads in strict rotation: batch k is read by worker
/// k % workers, so each worker's batches are every workers-th one and the results can be taken
/// in order from each in turn.
struct Turns<R> {
    state: std::sync::Mutex<TurnState<R>>,
    turn_changed: std::sync::Condvar,
    workers: usize,
}

struct TurnState<R> {
    reader: BatchReader<R>,
    /// The batch to read next.
    next: usize,
    /// The end, a read error, or nobody taking results: no more turns.
    stopped: bool,
}

impl<R: Read> Turns<R> {
    fn new(reader: BatchReader<R>, workers: usize) -> Self {
        Turns {
            state: std::sync::Mutex::new(TurnState {
                reader,
                next: 0,
                stopped: false,
            }),
            turn_changed: std::sync::Condvar::new(),
            workers,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TurnState<R>> {
        // A worker that panicked ends the scope with its panic anyway; the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `worker`'s next batch, read into `buffer` when its turn comes; `None` once stopped. A read
    /// error is handed out once, and stops the turns.
    fn read(&self, worker: usize, buffer: Vec<u8>) -> Option<io::Result<Batch>> {
        let mut state = self.lock();
        while !state.stopped && state.next % self.workers != worker {
            state = self
                .turn_changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        if state.stopped {
            return None;
        }
        let read = state.reader.next(buffer).transpose();
        state.next += 1;
        state.stopped = !matches!(read, Some(Ok(_)));
        drop(state);
        self.turn_changed.notify_all();
        read
    }

    fn stop(&self) {
        self.lock().stopped = true;
        self.turn_changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    /// Numbered lines, shown.
    type Shown = Vec<(u64, String)>;

    /// What `LineReader` and `BatchReader` (with `target`-byte blocks) make of `input`.
    fn both_ways(input: &[u8], target: usize) -> (Shown, Shown) {
        let show = |l: Line<'_>| match l {
            Line::Text(t) => format!("text {:?}", String::from_utf8_lossy(t)),
            Line::TooLong { len } => format!("too long {len}"),
        };
        let mut by_line = Vec::new();
        let mut r = LineReader::new(input, MAX_LINE);
        while let Some((n, l)) = r.next_line().unwrap() {
            by_line.push((n, show(l)));
        }
        let mut by_batch = Vec::new();
        // Buffers are recycled as in `decode_in_parallel`: each batch's buffer is the next one's.
        let mut b = BatchReader::new(input, target);
        let mut buffer = Vec::new();
        while let Some(batch) = b.next(buffer).unwrap() {
            by_batch.extend(batch.lines().map(&show));
            buffer = batch.data;
        }
        let by_batch = (1..).zip(by_batch).collect();
        (by_line, by_batch)
    }

    #[test]
    fn batches_cut_the_same_lines_as_the_line_reader() {
        let long = vec![b'x'; MAX_LINE + 1];
        let exact = vec![b'y'; MAX_LINE];
        let mut huge = b"first\n".to_vec();
        huge.extend_from_slice(&long);
        huge.extend_from_slice(b"\r\nafter\n");
        huge.extend_from_slice(&exact);
        huge.extend_from_slice(b"\nlast");
        let inputs: Vec<&[u8]> = vec![
            b"",
            b"\n",
            b"\n\n\n",
            b"a\r\nb",
            b"one\ntwo\n",
            b"no newline at the end",
            b"\r\n\r",
            &huge,
        ];
        for input in inputs {
            for target in [1, 7, 4096, 1 << 20] {
                let (by_line, by_batch) = both_ways(input, target);
                assert_eq!(by_line, by_batch, "target {target}, {} bytes", input.len());
            }
        }
    }

    use super::*;

    /// A line's number, what it was classified as, and the bytes read by the time it was handed.
    fn shown(line_no: u64, c: &Classified) -> String {
        match c {
            Classified::TooLong { len } => format!("{line_no} too long {len}"),
            Classified::Blank { bytes } => format!("{line_no} blank {bytes}"),
            Classified::Text {
                bytes,
                non_utf8,
                result,
            } => format!("{line_no} {bytes} {non_utf8} {result:?}"),
        }
    }

    /// The sample capture and real eslogger lines, with blank, broken and non-UTF-8 lines among
    /// them.
    fn mixed_capture() -> Vec<u8> {
        let sample = include_str!("../../examples/kext-attack.jsonl");
        let real = include_str!("../../tests/fixtures/eslogger-public/mullvadvpn-app.jsonl");
        let mut input = Vec::new();
        for (i, line) in sample.lines().chain(real.lines()).enumerate() {
            input.extend_from_slice(line.as_bytes());
            input.extend_from_slice(match i % 7 {
                0 => b"\n\n",
                3 => b"\n{\"event_type\":\n",
                5 => b"\n\xff\xfe\r\n",
                _ => b"\n",
            });
        }
        input.extend_from_slice(b"last line without newline");
        input
    }

    #[test]
    fn lines_decoded_in_parallel_come_in_input_order_whatever_the_batching() {
        let input = mixed_capture();
        let interest = crate::event::AllEvents;
        let mut expected = Vec::new();
        let mut reader = LineReader::new(&input[..], MAX_LINE);
        while let Some((n, line)) = reader.next_line().unwrap() {
            expected.push(shown(n, &classify(line, &interest)));
        }
        assert!(expected.len() > 60, "{}", expected.len());
        for workers in 1..=4 {
            for bytes in [1, 1000, 4096, 1 << 20] {
                let mut got = Vec::new();
                let mut bytes_seen = 0;
                let batching = Batching { workers, bytes };
                decode_in_parallel(&input[..], &interest, batching, |n, c, bytes_end| {
                    assert!(bytes_end >= bytes_seen, "progress went back");
                    bytes_seen = bytes_end;
                    got.push(shown(n, &c));
                    Ok::<(), ()>(())
                })
                .unwrap()
                .unwrap();
                assert_eq!(got, expected, "{workers} workers, {bytes}-byte batches");
                assert_eq!(bytes_seen, input.len() as u64);
            }
        }
    }

    /// Gives `data`, then fails.
    struct FailingAfter<'a> {
        data: &'a [u8],
    }

    impl Read for FailingAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return Err(io::Error::other("disk gone"));
            }
            let n = self.data.read(buf)?;
            Ok(n)
        }
    }

    #[test]
    fn a_read_error_comes_after_every_line_read_before_it() {
        let input = mixed_capture();
        let interest = crate::event::AllEvents;
        let whole_lines = input.iter().filter(|&&b| b == b'\n').count() as u64;
        for workers in [1, 2, 3] {
            let mut handed = 0;
            let batching = Batching {
                workers,
                bytes: 4096,
            };
            let read = decode_in_parallel(
                FailingAfter { data: &input },
                &interest,
                batching,
                |n, _, _| {
                    handed = n;
                    Ok::<(), ()>(())
                },
            )
            .unwrap();
            assert_eq!(read.unwrap_err().to_string(), "disk gone");
            // The unterminated last line is not whole before the error.
            assert_eq!(handed, whole_lines, "{workers} workers");
        }
    }

    #[test]
    fn an_error_handing_a_line_over_stops_every_thread() {
        let input = mixed_capture().repeat(20);
        let interest = crate::event::AllEvents;
        let mut handed = 0;
        let batching = Batching {
            workers: 3,
            bytes: 1000,
        };
        let stopped = decode_in_parallel(&input[..], &interest, batching, |n, _, _| {
            handed = n;
            if n == 5 {
                return Err("output closed");
            }
            Ok(())
        });
        assert_eq!(stopped.unwrap_err(), "output closed");
        assert_eq!(handed, 5);
    }

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

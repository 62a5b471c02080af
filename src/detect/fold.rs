//! Folding duplicate alerts: the first of a kind is emitted at once; repeats within the fold window
//! are counted, and when the window closes one follow-up alert reports how many were folded.

use std::collections::HashMap;

use crate::alert::{Alert, Folded};

/// Bound on open fold windows; past it new alerts are emitted unfolded (counted), never dropped.
const MAX_OPEN: usize = 16_384;

struct Open {
    first_ns: i64,
    last_ns: i64,
    count: u64,
    /// The last folded alert: the follow-up reports its timestamp and evidence.
    latest: Option<Alert>,
    first_timestamp: String,
}

#[derive(Default)]
pub struct Folder {
    window_ns: i64,
    open: HashMap<String, Open>,
    /// The earliest `first_ns` of the open windows (`i64::MAX` when none): `expire` scans them only
    /// when one can close, so an event costs O(1) however many windows are open.
    earliest_ns: i64,
    pub folded: u64,
    pub unfolded_over_capacity: u64,
}

impl Folder {
    pub fn new(window_ns: i64) -> Folder {
        Folder {
            window_ns,
            earliest_ns: i64::MAX,
            ..Default::default()
        }
    }

    /// Emit `alert` into `out`, or count it against an open window with the same key.
    pub fn offer(&mut self, key: String, alert: Alert, now_ns: i64, out: &mut Vec<Alert>) {
        if let Some(open) = self.open.get_mut(&key) {
            if now_ns.saturating_sub(open.first_ns) <= self.window_ns {
                open.count += 1;
                open.last_ns = open.last_ns.max(now_ns);
                open.latest = Some(alert);
                self.folded += 1;
                return;
            }
            // Window over: report it and start a new one.
            if let Some(done) = self.open.remove(&key) {
                out.extend(follow_up(done));
            }
        }
        if self.open.len() >= MAX_OPEN {
            self.unfolded_over_capacity += 1;
        } else {
            self.earliest_ns = self.earliest_ns.min(now_ns);
            self.open.insert(
                key,
                Open {
                    first_ns: now_ns,
                    last_ns: now_ns,
                    count: 1,
                    latest: None,
                    first_timestamp: alert.timestamp.clone(),
                },
            );
        }
        out.push(alert);
    }

    /// Close windows that ended before `now_ns`, in the order they opened.
    pub fn expire(&mut self, now_ns: i64, out: &mut Vec<Alert>) {
        let window = self.window_ns;
        if now_ns.saturating_sub(self.earliest_ns) <= window {
            return;
        }
        let mut done: Vec<(String, Open)> = Vec::new();
        self.open.retain(|key, o| {
            let keep = now_ns.saturating_sub(o.first_ns) <= window;
            if !keep {
                let o = std::mem::replace(
                    o,
                    Open {
                        first_ns: 0,
                        last_ns: 0,
                        count: 0,
                        latest: None,
                        first_timestamp: String::new(),
                    },
                );
                done.push((key.clone(), o));
            }
            keep
        });
        self.earliest_ns = self
            .open
            .values()
            .map(|o| o.first_ns)
            .min()
            .unwrap_or(i64::MAX);
        // The key breaks ties: the map's order is random, and the same input must give the same
        // alerts in the same order every time.
        done.sort_by(|(ka, a), (kb, b)| {
            (a.first_ns, a.last_ns, ka).cmp(&(b.first_ns, b.last_ns, kb))
        });
        out.extend(done.into_iter().filter_map(|(_, o)| follow_up(o)));
    }

    /// Close every window (end of input).
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        self.expire(i64::MAX, out);
    }

    pub fn open_windows(&self) -> usize {
        self.open.len()
    }
}

fn follow_up(o: Open) -> Option<Alert> {
    let mut alert = o.latest?;
    let extra = o.count - 1;
    let plural = if extra == 1 { "" } else { "s" };
    alert.reasons.push(format!(
        "{extra} more identical alert{plural} folded into this one since {}",
        o.first_timestamp
    ));
    alert.message += &format!(" ({extra} more identical alert{plural} folded)");
    alert.kextwatch.folded = Some(Folded {
        count: o.count,
        first: o.first_timestamp,
        last: alert.timestamp.clone(),
    });
    Some(alert)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn alert(at_s: i64) -> Alert {
        let ts = crate::wallclock::format_time(at_s * S);
        crate::alert::test_alert(ts, crate::alert::Host::named("mac"))
    }

    #[test]
    fn the_first_goes_out_at_once_and_repeats_become_one_follow_up_when_the_window_closes() {
        let mut f = Folder::new(300 * S);
        let mut out = Vec::new();
        f.offer("k".into(), alert(0), 0, &mut out);
        assert_eq!(out.len(), 1, "never delayed");
        for t in [10, 20, 30] {
            f.offer("k".into(), alert(t), t * S, &mut out);
        }
        assert_eq!((out.len(), f.folded), (1, 3));
        f.expire(200 * S, &mut out);
        assert_eq!(out.len(), 1, "the window is still open");
        f.expire(301 * S, &mut out);
        assert_eq!(out.len(), 2);
        let folded = out[1].kextwatch.folded.as_ref().unwrap();
        assert_eq!(folded.count, 4);
        assert_eq!(folded.first, out[0].timestamp);
        assert_eq!(folded.last, crate::wallclock::format_time(30 * S));
        assert!(out[1].message.ends_with("(3 more identical alerts folded)"));
        assert_eq!(f.open_windows(), 0);
    }

    #[test]
    fn a_repeat_after_the_window_reports_the_old_window_and_opens_a_new_one() {
        let mut f = Folder::new(60 * S);
        let mut out = Vec::new();
        f.offer("k".into(), alert(0), 0, &mut out);
        f.offer("k".into(), alert(5), 5 * S, &mut out);
        f.offer("k".into(), alert(100), 100 * S, &mut out);
        // First, the follow-up of the closed window (1 more), then the new first alert.
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].kextwatch.folded.as_ref().unwrap().count, 2);
        assert!(out[2].kextwatch.folded.is_none());
        // Another key is never folded into this one; a lone alert has no follow-up.
        f.offer("other".into(), alert(101), 101 * S, &mut out);
        f.finish(&mut out);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn windows_closing_together_report_in_the_same_order_every_time() {
        let run = || {
            let mut f = Folder::new(60 * S);
            let mut out = Vec::new();
            for k in ["d", "a", "c", "b", "e"] {
                f.offer(k.into(), alert(0), 0, &mut out);
                let mut repeat = alert(1);
                repeat.message = k.to_string();
                f.offer(k.into(), repeat, S, &mut out);
            }
            out.clear();
            f.finish(&mut out);
            out.into_iter().map(|a| a.message).collect::<Vec<_>>()
        };
        let first = run();
        assert!(
            first[0].starts_with('a') && first[4].starts_with('e'),
            "{first:?}"
        );
        for _ in 0..20 {
            assert_eq!(run(), first, "each run has its own hash order");
        }
    }

    #[test]
    fn past_capacity_alerts_go_out_unfolded_and_counted_never_dropped() {
        let mut f = Folder::new(60 * S);
        let mut out = Vec::new();
        for i in 0..MAX_OPEN + 2 {
            f.offer(format!("k{i}"), alert(0), 0, &mut out);
        }
        assert_eq!(out.len(), MAX_OPEN + 2);
        assert_eq!(f.unfolded_over_capacity, 2);
        assert_eq!(f.open_windows(), MAX_OPEN);
    }
}

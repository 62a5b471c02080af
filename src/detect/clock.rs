//! Detection's clock: event time the wall clock cannot move. Correlation and fold windows and the
//! tamper memory measure it; alerts still show their events' wall time.
//!
//! Every eslogger and Endpoint Security message carries `mach_time`, the kernel's monotonic tick
//! count, beside its wall-clock `time`. Someone who sets the clock forward would expire every window
//! at once (and back, keep old signals alive); the tick count does not move with it. The clock
//! anchors on the first event with a tick count and runs on ticks from there. Ticks per nanosecond
//! differ by machine (1 on Intel Macs, 125/3 ns per tick on Apple silicon) and eslogger does not say
//! which, so the rate is learned from the first second of events and accepted only when it is one of
//! those; until then, and for input whose ticks are not a known rate, the wall clock is used as before.

/// Nanoseconds per mach tick on the Macs that exist: Intel, Apple silicon.
const KNOWN_RATES: [f64; 2] = [1.0, 125.0 / 3.0];

/// How far a measured rate may be from a known one (wall-clock resolution, NTP slewing).
const RATE_TOLERANCE: f64 = 0.02;

/// Measurements at no known rate before the ticks are not trusted at all.
const MAX_MISSES: u32 = 4;

/// Wall time spanned before the rate is measured.
const LEARN_SPAN_NS: i64 = 1_000_000_000;

#[derive(Debug, Clone, Default)]
pub struct EventClock {
    /// Nanoseconds per tick, once learned.
    rate: Option<f64>,
    /// Given up: the ticks are not at a known rate (synthetic or damaged input).
    untrusted: bool,
    /// Measurements that found no known rate (a clock set while learning): after a few, give up.
    misses: u32,
    /// (monotonic ns, ticks) the clock runs from.
    anchor: Option<(i64, u64)>,
    /// The first event with ticks while the rate is unknown: (wall ns, ticks).
    first: Option<(i64, u64)>,
    /// Monotonic minus wall time of the latest event: places events without ticks.
    offset: i64,
}

impl EventClock {
    /// The monotonic time of an event at wall time `wall_ns` with tick count `mach`.
    pub fn time(&mut self, wall_ns: i64, mach: Option<u64>) -> i64 {
        let Some(ticks) = mach.filter(|_| !self.untrusted) else {
            return wall_ns.saturating_add(self.offset);
        };
        let Some(rate) = self.rate else {
            self.learn(wall_ns, ticks);
            return wall_ns.saturating_add(self.offset);
        };
        let (anchor_ns, anchor_ticks) = *self.anchor.get_or_insert((wall_ns, ticks));
        let t = match ticks.checked_sub(anchor_ticks) {
            Some(d) => anchor_ns.saturating_add((d as f64 * rate) as i64),
            None => {
                // Ticks went back (another boot's capture appended): start again from here, where
                // the clock already is, so time never runs backwards.
                let now = wall_ns.saturating_add(self.offset);
                self.anchor = Some((now, ticks));
                now
            }
        };
        self.offset = t.saturating_sub(wall_ns);
        t
    }

    fn learn(&mut self, wall_ns: i64, ticks: u64) {
        let Some((w0, t0)) = self.first else {
            self.first = Some((wall_ns, ticks));
            return;
        };
        let (dw, dt) = (wall_ns.saturating_sub(w0), ticks.saturating_sub(t0));
        if dw < LEARN_SPAN_NS {
            return;
        }
        let measured = if dt == 0 {
            f64::INFINITY
        } else {
            dw as f64 / dt as f64
        };
        match KNOWN_RATES
            .iter()
            .find(|r| ((measured - **r) / **r).abs() <= RATE_TOLERANCE)
        {
            Some(rate) => {
                self.rate = Some(*rate);
                // Run on ticks from the first event on, at the wall time it had.
                self.anchor = Some((w0, t0));
            }
            None => {
                // The wall clock may have been set in between: measure again from here.
                self.misses += 1;
                self.first = Some((wall_ns, ticks));
                self.untrusted = self.misses >= MAX_MISSES;
            }
        }
    }

    /// Is the clock running on ticks?
    #[cfg(test)]
    fn monotonic(&self) -> bool {
        self.rate.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    /// Apple silicon: 24 MHz ticks.
    fn ticks(ns: i64) -> u64 {
        (ns as u64) * 3 / 125
    }

    #[test]
    fn a_clock_set_forward_or_back_does_not_move_event_time() {
        let mut c = EventClock::default();
        let base = 1_795_615_392 * S;
        let m0 = 9_000_000_000u64;
        assert_eq!(c.time(base, Some(m0)), base);
        // A second later, at 24 MHz: the rate is learned.
        assert_eq!(c.time(base + S, Some(m0 + ticks(S))), base + S);
        assert!(c.monotonic());
        // Ten seconds later the wall clock says a day later: event time says ten seconds.
        let t = c.time(base + 86_400 * S, Some(m0 + ticks(10 * S)));
        assert!((t - (base + 10 * S)).abs() < 1_000, "{t}");
        // Then set back an hour: still moving forward, five seconds on.
        let t2 = c.time(base - 3_600 * S, Some(m0 + ticks(15 * S)));
        assert!((t2 - (base + 15 * S)).abs() < 1_000, "{t2}");
        // Something with no ticks (a KextPolicy change) is placed by the latest offset.
        let t3 = c.time(base - 3_600 * S + S, None);
        assert!((t3 - (base + 16 * S)).abs() < 1_000, "{t3}");
    }

    #[test]
    fn a_measurement_a_little_off_is_still_the_known_rate() {
        // The wall clock slewed 1% while learning (NTP): Apple silicon's rate all the same.
        let mut c = EventClock::default();
        c.time(0, Some(0));
        c.time(S + S / 100, Some(ticks(S)));
        assert!(c.monotonic());
        let t = c.time(500 * S, Some(ticks(11 * S)));
        assert!((t - 11 * S).abs() < 1_000, "{t}");
    }

    #[test]
    fn intel_ticks_are_nanoseconds() {
        let mut c = EventClock::default();
        c.time(0, Some(500));
        c.time(2 * S, Some(500 + 2 * S as u64));
        let t = c.time(100 * S, Some(500 + 3 * S as u64));
        assert_eq!(t, 3 * S);
    }

    #[test]
    fn ticks_at_no_known_rate_leave_the_wall_clock_in_charge() {
        let mut c = EventClock::default();
        // One tick per event, whatever the time: a synthetic capture.
        for (i, w) in [0, 2 * S, 5 * S, 300 * S, 302 * S, 400 * S, 500 * S]
            .into_iter()
            .enumerate()
        {
            assert_eq!(c.time(w, Some(i as u64)), w);
        }
        assert!(!c.monotonic());
        assert!(c.untrusted);
    }

    #[test]
    fn a_clock_set_while_learning_is_measured_again() {
        let mut c = EventClock::default();
        c.time(0, Some(ticks(0)));
        // A day's jump in the first measurement: no known rate; measured again from here.
        c.time(86_400 * S, Some(ticks(S)));
        assert!(!c.monotonic());
        c.time(86_401 * S, Some(ticks(2 * S)));
        assert!(c.monotonic());
    }

    #[test]
    fn ticks_going_back_restart_the_anchor_without_going_back() {
        let mut c = EventClock::default();
        c.time(0, Some(1_000_000));
        c.time(S, Some(1_000_000 + ticks(S)));
        let before = c.time(2 * S, Some(1_000_000 + ticks(2 * S)));
        let after = c.time(3 * S, Some(10));
        assert!(after >= before, "{after} < {before}");
        let later = c.time(4 * S, Some(10 + ticks(S)));
        assert!((later - (after + S)).abs() < 1_000);
    }
}

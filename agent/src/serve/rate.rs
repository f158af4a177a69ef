//! Generated tokens per second over the last minute, for `Board.status.load.tokensPerSecond` and
//! `GET /internal/v1/status`. Pure: fed (instant, running total) samples by whoever composes a
//! status, so it costs nothing between status reads and needs no timer of its own.

use std::{collections::VecDeque, time::Duration};

/// The window the rate is taken over.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Samples closer together than this are not kept: a client polling the status endpoint in a
/// loop cannot grow the history.
pub const MIN_SPACING: Duration = Duration::from_secs(1);

/// Running totals seen at past instants (offsets from any fixed origin).
#[derive(Debug, Default)]
pub struct TokenRate {
    samples: VecDeque<(Duration, u64)>,
}

impl TokenRate {
    /// Records the running total at `at` and returns tokens per second since the newest sample
    /// at least [`WINDOW`] old (or the oldest one, early on); 0 with under a second of history.
    pub fn observe(&mut self, at: Duration, total: u64) -> f64 {
        if self.samples.back().is_none_or(|&(t, _)| at >= t + MIN_SPACING) {
            self.samples.push_back((at, total));
        }
        // Keep one sample at or before the window's start as the base; drop older ones.
        while self.samples.len() > 1 && self.samples.get(1).is_some_and(|&(t, _)| at.saturating_sub(t) >= WINDOW) {
            self.samples.pop_front();
        }
        let Some(&(t0, n0)) = self.samples.front() else { return 0.0 };
        let span = at.saturating_sub(t0);
        if span < MIN_SPACING {
            return 0.0;
        }
        // A total never goes back; if it did (a reset), report nothing rather than a negative rate.
        total.saturating_sub(n0) as f64 / span.as_secs_f64()
    }

    /// Samples kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.samples.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn no_rate_without_a_second_of_history() {
        let mut r = TokenRate::default();
        assert_eq!(r.observe(s(0.0), 0), 0.0);
        assert_eq!(r.observe(s(0.5), 100), 0.0, "half a second is no history yet");
    }

    #[test]
    fn steady_rate_over_the_window() {
        let mut r = TokenRate::default();
        for i in 0..=120u32 {
            let rate = r.observe(s(f64::from(i)), u64::from(i) * 30);
            if i >= 1 {
                assert!((rate - 30.0).abs() < 1e-9, "at {i} s: {rate}");
            }
        }
        assert!(r.len() <= 62, "only about a minute of samples kept: {}", r.len());
    }

    #[test]
    fn the_window_forgets_old_bursts() {
        let mut r = TokenRate::default();
        r.observe(s(0.0), 0);
        r.observe(s(1.0), 6000); // a burst in the first second
        for i in 2..=100u32 {
            r.observe(s(f64::from(i)), 6000);
        }
        assert_eq!(r.observe(s(101.0), 6000), 0.0, "idle for over a minute");
    }

    #[test]
    fn polling_in_a_loop_keeps_one_sample_per_second() {
        let mut r = TokenRate::default();
        for i in 0..10_000u32 {
            r.observe(s(f64::from(i) * 0.001), u64::from(i));
        }
        assert!(r.len() <= 11, "{} samples for 10 s of polling", r.len());
    }

    #[test]
    fn a_total_going_back_is_not_a_negative_rate() {
        let mut r = TokenRate::default();
        r.observe(s(0.0), 500);
        assert_eq!(r.observe(s(2.0), 100), 0.0);
    }
}

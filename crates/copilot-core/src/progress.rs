//! Where long operations tell people what they do: lines, and waits that a
//! terminal can draw as a bar. Rollouts and provider waits report through it;
//! the CLI decides how it looks.

use std::time::Duration;

pub trait Progress: Sync {
    /// One thing that happened.
    fn line(&self, text: &str);
    /// A wait begins; `total` when its length is known.
    fn begin(&self, _label: &str, _total: Option<Duration>) {}
    /// Time passes (called often; for bars).
    fn tick(&self, _elapsed: Duration) {}
    /// Where the wait stands after a measurement; `status` is also its state.
    fn update(&self, elapsed: Duration, status: &str) {
        self.measured(elapsed, status, status);
    }
    /// A measurement whose figures (`status`) change more often than the
    /// wait's `state` does (each metric passing or failing): a log without
    /// a terminal repeats an unchanged state only now and then.
    fn measured(&self, _elapsed: Duration, _state: &str, _status: &str) {}
    fn finish(&self) {}
}

/// Says nothing (benchmarks, library callers).
pub struct Silent;

impl Progress for Silent {
    fn line(&self, _text: &str) {}
}

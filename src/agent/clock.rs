//! The agent's clock, behind a trait so that fleet tests give every host a
//! clock of its own and move time on by hand.

use std::sync::Mutex;

use time::{Duration, OffsetDateTime};

/// Tells the time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> OffsetDateTime;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that stands still until moved (tests, simulations).
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    /// Stopped at `t`.
    pub fn new(t: OffsetDateTime) -> ManualClock {
        ManualClock(Mutex::new(t))
    }

    /// Moves it on by `d`.
    pub fn advance(&self, d: Duration) {
        *self.0.lock().expect("poisoned") += d;
    }

    /// Sets it to `t`.
    pub fn set(&self, t: OffsetDateTime) {
        *self.0.lock().expect("poisoned") = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().expect("poisoned")
    }
}

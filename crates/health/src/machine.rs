//! The rise/fall state machine: pure, no I/O, no clock.
//!
//! One [`Machine`] per backend counts consecutive probe results. While up it
//! counts failures and goes down at `fall`; while down it counts successes and
//! goes up at `rise`. A result of the other kind resets the count, and every
//! change of state starts the count again from zero.

use std::num::NonZeroU32;

use tandem_config::InitialState;

/// Consecutive-result thresholds: `rise` successes to go up, `fall` failures to go down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub rise: NonZeroU32,
    pub fall: NonZeroU32,
}

/// The health verdict of one backend, driven by probe results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    up: bool,
    /// Consecutive results that argue for the other state (successes while
    /// down, failures while up).
    streak: u32,
}

impl Machine {
    pub fn new(initial: InitialState) -> Self {
        Machine {
            up: initial == InitialState::Up,
            streak: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Consecutive successes while down (towards `rise`), or failures while
    /// up (towards `fall`).
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Records one probe result; returns the new state when it changed.
    ///
    /// `>=` rather than `==`: a reload may lower `rise` or `fall` below a
    /// streak already counted, and the next agreeing result then decides.
    pub fn record(&mut self, ok: bool, thresholds: Thresholds) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        let needed = if self.up {
            thresholds.fall
        } else {
            thresholds.rise
        };
        if self.streak >= needed.get() {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }

    /// Sets the state from outside (passive ejection, an operator): the
    /// count starts again, so a forced-down backend needs `rise` fresh successes.
    pub fn force(&mut self, up: bool) {
        self.up = up;
        self.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(rise: u32, fall: u32) -> Thresholds {
        Thresholds {
            rise: NonZeroU32::new(rise).unwrap(),
            fall: NonZeroU32::new(fall).unwrap(),
        }
    }

    /// `results` is a string of `+` (success) and `-` (failure); `states` is
    /// the expected state after each result, `u` or `d`.
    #[test]
    fn table_of_result_sequences() {
        let cases: &[(&str, InitialState, u32, u32, &str, &str)] = &[
            (
                "down needs rise successes",
                InitialState::Down,
                2,
                3,
                "++",
                "du",
            ),
            ("rise 1 goes up at once", InitialState::Down, 1, 3, "+", "u"),
            (
                "a failure resets the successes",
                InitialState::Down,
                2,
                3,
                "+-++",
                "dddu",
            ),
            (
                "up needs fall failures",
                InitialState::Up,
                2,
                3,
                "---",
                "uud",
            ),
            (
                "a success resets the failures",
                InitialState::Up,
                2,
                3,
                "--+--+---",
                "uuuuuuuud",
            ),
            (
                "after going down the count starts again",
                InitialState::Up,
                2,
                1,
                "-+-++",
                "ddddu",
            ),
            (
                "flapping with fall 1 rise 1 follows every result",
                InitialState::Down,
                1,
                1,
                "+-+-",
                "udud",
            ),
            (
                "successes while up change nothing",
                InitialState::Up,
                2,
                2,
                "++++",
                "uuuu",
            ),
            (
                "failures while down change nothing",
                InitialState::Down,
                2,
                2,
                "----+",
                "ddddd",
            ),
        ];
        for (name, initial, rise, fall, results, states) in cases {
            let mut m = Machine::new(*initial);
            let got: String = results
                .chars()
                .map(|c| {
                    m.record(c == '+', t(*rise, *fall));
                    if m.is_up() {
                        'u'
                    } else {
                        'd'
                    }
                })
                .collect();
            assert_eq!(&got, states, "{name}");
        }
    }

    #[test]
    fn record_reports_only_changes() {
        let mut m = Machine::new(InitialState::Down);
        assert_eq!(m.record(true, t(2, 2)), None);
        assert_eq!(m.record(true, t(2, 2)), Some(true));
        assert_eq!(m.record(true, t(2, 2)), None);
        assert_eq!(m.record(false, t(2, 2)), None);
        assert_eq!(m.record(false, t(2, 2)), Some(false));
        assert_eq!(m.record(false, t(2, 2)), None);
    }

    #[test]
    fn forced_down_needs_rise_fresh_successes() {
        let mut m = Machine::new(InitialState::Down);
        m.record(true, t(3, 2));
        m.record(true, t(3, 2));
        assert_eq!(m.streak(), 2);
        m.force(false);
        assert_eq!(m.streak(), 0);
        assert_eq!(m.record(true, t(3, 2)), None);
        assert_eq!(m.record(true, t(3, 2)), None);
        assert_eq!(m.record(true, t(3, 2)), Some(true));
    }

    #[test]
    fn lowered_threshold_applies_at_the_next_agreeing_result() {
        let mut m = Machine::new(InitialState::Down);
        m.record(true, t(5, 2));
        m.record(true, t(5, 2));
        m.record(true, t(5, 2));
        assert_eq!(m.record(true, t(2, 2)), Some(true));
    }

    proptest! {
        /// The machine flips only after exactly `rise` (or `fall`) results of
        /// the new kind in a row since the last flip, and always does then.
        #[test]
        fn never_flips_without_consecutive_results(
            rise in 1u32..6,
            fall in 1u32..6,
            start_up in any::<bool>(),
            results in proptest::collection::vec(any::<bool>(), 0..200),
        ) {
            let initial = if start_up { InitialState::Up } else { InitialState::Down };
            let mut m = Machine::new(initial);
            let mut up = start_up;
            // Results agreeing with the other state since the last flip or disagreement.
            let mut run = 0u32;
            for ok in results {
                let before = m.is_up();
                prop_assert_eq!(before, up);
                if ok != up { run += 1 } else { run = 0 }
                let needed = if up { fall } else { rise };
                let changed = m.record(ok, t(rise, fall));
                if run == needed {
                    prop_assert_eq!(changed, Some(ok));
                    up = ok;
                    run = 0;
                } else {
                    prop_assert!(run < needed);
                    prop_assert_eq!(changed, None);
                }
                prop_assert_eq!(m.is_up(), up);
            }
        }
    }
}

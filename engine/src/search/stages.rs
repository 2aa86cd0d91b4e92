//! Optional per-stage timing of one search, for the benchmark harness.
//!
//! Timing is requested by passing `Some(&mut StageTimes)`; with `None` no clock is read, so a
//! normal search pays one branch per stage boundary and nothing else.

use std::time::{Duration, Instant};

/// Wall-clock time one query spent in each search stage.
///
/// On a compressed index the stages are those of [`crate::search::plaid`]; on an uncompressed
/// one (exhaustive exact MaxSim) everything counts as [`StageTimes::maxsim`]. Stages a search
/// skipped stay zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// Stage 1: the query × centroid product, the `ncells` best cells per query token and the
    /// union of their inverted lists.
    pub candidates: Duration,
    /// Stages 2 and 3: centroid pruning and approximate (centroid-only) scoring down to the
    /// stage-3 survivors.
    pub pruning: Duration,
    /// Stage 4: decompression (or f16 conversion) of the survivors and exact MaxSim.
    pub maxsim: Duration,
    /// The tail: exact rescoring of the best candidates from the stored f16 embeddings.
    pub tail: Duration,
}

impl StageTimes {
    /// The sum of every stage.
    pub fn total(&self) -> Duration {
        self.candidates + self.pruning + self.maxsim + self.tail
    }
}

/// Selects the field of [`StageTimes`] a lap is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Candidates,
    Pruning,
    MaxSim,
    Tail,
}

/// A lap timer over an optional [`StageTimes`]: each [`Laps::lap`] charges the time since the
/// previous one to a stage. Without a target it never reads the clock.
#[derive(Debug)]
pub(crate) struct Laps<'t> {
    times: Option<(&'t mut StageTimes, Instant)>,
}

impl<'t> Laps<'t> {
    /// Starts timing into `times` (does nothing when `None`).
    pub(crate) fn start(times: Option<&'t mut StageTimes>) -> Self {
        Self { times: times.map(|t| (t, Instant::now())) }
    }

    /// Charges the time since the previous lap (or the start) to `stage`.
    #[inline]
    pub(crate) fn lap(&mut self, stage: Stage) {
        if let Some((times, last)) = &mut self.times {
            let now = Instant::now();
            let spent = now - *last;
            *last = now;
            let slot = match stage {
                Stage::Candidates => &mut times.candidates,
                Stage::Pruning => &mut times.pruning,
                Stage::MaxSim => &mut times.maxsim,
                Stage::Tail => &mut times.tail,
            };
            *slot += spent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_charge_their_stage_and_nothing_without_a_target() {
        let mut t = StageTimes::default();
        {
            let mut laps = Laps::start(Some(&mut t));
            std::thread::sleep(Duration::from_millis(2));
            laps.lap(Stage::Pruning);
            laps.lap(Stage::Tail);
        }
        assert!(t.pruning >= Duration::from_millis(2));
        assert_eq!(t.candidates, Duration::ZERO);
        assert_eq!(t.maxsim, Duration::ZERO);
        assert!(t.tail < t.pruning);
        assert_eq!(t.total(), t.pruning + t.tail);
        let mut off = Laps::start(None);
        off.lap(Stage::MaxSim);
        assert!(off.times.is_none());
    }
}

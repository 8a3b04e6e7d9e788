//! The restart budget: how many restarts one child gets inside a window
//! before its supervisor gives up on it (Erlang's intensity and period).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct RestartBudget {
    pub max_restarts: usize,
    pub within: Duration,
}

impl Default for RestartBudget {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            within: Duration::from_secs(60),
        }
    }
}

/// The restart history of one child.
#[derive(Debug, Default)]
pub struct Restarts {
    at: VecDeque<Instant>,
}

impl Restarts {
    /// Records a restart at `now` and says whether the budget allows it.
    pub fn allow(&mut self, budget: RestartBudget, now: Instant) -> bool {
        while self
            .at
            .front()
            .is_some_and(|t| now.duration_since(*t) >= budget.within)
        {
            self.at.pop_front();
        }
        if self.at.len() >= budget.max_restarts {
            return false;
        }
        self.at.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_the_restart_past_its_maximum_until_the_window_passes() {
        let budget = RestartBudget {
            max_restarts: 2,
            within: Duration::from_secs(10),
        };
        let mut restarts = Restarts::default();
        let t0 = Instant::now();
        assert!(restarts.allow(budget, t0));
        assert!(restarts.allow(budget, t0 + Duration::from_secs(1)));
        assert!(!restarts.allow(budget, t0 + Duration::from_secs(2)));
        assert!(restarts.allow(budget, t0 + Duration::from_secs(11)));
    }
}

//! `--scripts-filter`: which flows the scripts are given. A flow it does not match
//! never reaches the worker — no call, no body read, no wait — at any hook.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use periscope_flow::filter::Filter;
use periscope_flow::Flow;

/// The filter in force (none: every flow); clones share it, so the options can
/// change it under running scripts.
#[derive(Clone, Default)]
pub struct ScriptFilter(Arc<ArcSwapOption<(String, Filter)>>);

impl ScriptFilter {
    /// Sets the filter (`None`: every flow), with the text the user wrote.
    pub fn set(&self, filter: Option<(String, Filter)>) {
        self.0.store(filter.map(Arc::new));
    }

    pub fn text(&self) -> Option<String> {
        self.0.load().as_ref().map(|f| f.0.clone())
    }

    pub fn is_set(&self) -> bool {
        self.0.load().is_some()
    }

    /// Whether the scripts are given `flow` (as it is at this hook point: a filter
    /// on the response matches nothing before there is one).
    pub fn selects(&self, flow: &Flow) -> bool {
        match self.0.load().as_ref() {
            Some(filter) => filter.1.matches(flow),
            None => true,
        }
    }
}

impl std::fmt::Debug for ScriptFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScriptFilter({:?})", self.text())
    }
}

//! The flow list: which flows are shown, in which order, and what the list looks
//! like on screen.
//!
//! The list never holds the session: the store does. Without a filter the list is a
//! window onto `FlowStore::summaries(None, offset, limit)` around what is on screen
//! (SQLite skips the offset on its index), refreshed at most every
//! [`REFRESH_INTERVAL`] while flows arrive. With a filter, the store is scanned once
//! in the background (a `~b` filter reads every body) and the matching summaries —
//! a few hundred bytes each, no bodies — are kept, then kept current from the flow
//! events, so scrolling a filtered list costs no query.
//!
//! Flows the proxy announced but the store does not have yet (requests in flight,
//! and completed flows the recorder has not committed) are kept aside as *pending*
//! and shown after the stored ones, until the store has them.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use periscope_flow::filter::Filter;
use periscope_flow::store::{FlowStore, FlowSummary, StoreError};
use periscope_flow::{Flow, FlowId, Interception};
use periscope_model::units::{format_duration_ms, format_size};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::text::{fit, sanitize};
use crate::units::clock;

/// The most often the list asks the store for news while flows arrive.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// How long a completed flow may stay pending after the store should have it (the
/// recorder commits within milliseconds; this covers a flow whose place in the
/// list is far from the end, where the pending check does not look).
const PENDING_GRACE: Duration = Duration::from_secs(3);
/// Rows read past the end of the store to find pending flows that arrived there.
const TAIL_MARGIN: usize = 64;
/// Flows remembered while a filter scan runs; past it the scan is redone.
const BACKLOG_LIMIT: usize = 50_000;
/// Pending flows kept at most (a flood of requests that never complete).
const PENDING_LIMIT: usize = 20_000;

/// Where an intercepted flow waits for the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    Request,
    Response,
    Message,
    Certificate,
}

impl Held {
    pub fn of(interception: &Interception) -> Held {
        match interception {
            Interception::Request => Held::Request,
            Interception::Response => Held::Response,
            Interception::WebSocketMessage { .. } => Held::Message,
            Interception::ClientCertificate { .. } => Held::Certificate,
        }
    }

    /// What the time column of the row shows.
    pub fn label(self) -> &'static str {
        match self {
            Held::Request => "at req",
            Held::Response => "at resp",
            Held::Message => "at msg",
            Held::Certificate => "at cert",
        }
    }
}

/// A flow the store may not have yet.
#[derive(Clone, Debug)]
struct PendingFlow {
    summary: FlowSummary,
    flow: Arc<Flow>,
    /// When its `Completed` event arrived; `None` while in flight.
    completed: Option<Instant>,
}

/// The filtered view: the matching summaries, in time order.
struct Filtered {
    text: String,
    filter: Arc<Filter>,
    rows: Vec<FlowSummary>,
    ids: HashSet<FlowId>,
    generation: u64,
    loading: bool,
    /// Flows seen while the scan ran, applied when it ends.
    backlog: Vec<Arc<Flow>>,
    backlog_overflowed: bool,
}

struct ScanResult {
    generation: u64,
    result: Result<Vec<FlowSummary>, String>,
}

pub struct FlowList {
    store: Arc<FlowStore>,
    pending: Vec<PendingFlow>,
    /// Flows intercepted now, and where they wait.
    held: HashMap<FlowId, Held>,
    /// Flows in the store (all of them; the filter is applied elsewhere).
    stored: usize,
    window_start: usize,
    window: Vec<FlowSummary>,
    window_valid: bool,
    filtered: Option<Filtered>,
    generation: u64,
    scans: (Sender<ScanResult>, Receiver<ScanResult>),
    selected: usize,
    top: usize,
    follow: bool,
    dirty: bool,
    /// Keep refreshing until then, for flows the recorder may still be writing.
    recheck_until: Option<Instant>,
    last_refresh: Option<Instant>,
}

impl FlowList {
    pub fn new(store: Arc<FlowStore>) -> Self {
        FlowList {
            store,
            pending: Vec::new(),
            held: HashMap::new(),
            stored: 0,
            window_start: 0,
            window: Vec::new(),
            window_valid: false,
            filtered: None,
            generation: 0,
            scans: channel(),
            selected: 0,
            top: 0,
            follow: false,
            dirty: true,
            recheck_until: None,
            last_refresh: None,
        }
    }

    /// Rows in the list as shown (after the filter).
    pub fn len(&self) -> usize {
        match &self.filtered {
            Some(filtered) => filtered.rows.len(),
            None => self.stored + self.pending.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flows in the session, filter or not (pending ones included).
    pub fn total(&self) -> usize {
        self.stored + self.pending.len()
    }

    pub fn filter_text(&self) -> Option<&str> {
        self.filtered.as_ref().map(|f| f.text.as_str())
    }

    pub fn filter(&self) -> Option<&Filter> {
        self.filtered.as_ref().map(|f| f.filter.as_ref())
    }

    /// True while a filter scan runs.
    pub fn is_filtering(&self) -> bool {
        self.filtered.as_ref().is_some_and(|f| f.loading)
    }

    #[cfg(test)]
    pub fn selected_index(&self) -> usize {
        self.selected
    }

    pub fn following(&self) -> bool {
        self.follow
    }

    pub fn toggle_follow(&mut self) -> bool {
        self.follow = !self.follow;
        if self.follow {
            self.select_last();
        }
        self.follow
    }

    // ---------------------------------------------------------------------------
    // Keeping current
    // ---------------------------------------------------------------------------

    /// A request arrived, or a flow in flight changed (intercepted, resumed,
    /// edited): show it as in flight.
    pub fn on_request(&mut self, flow: Arc<Flow>) {
        match &flow.intercepted {
            Some(at) => self.held.insert(flow.id, Held::of(at)),
            None => self.held.remove(&flow.id),
        };
        if flow.websocket.is_some() && !self.pending.iter().any(|p| p.summary.id == flow.id) {
            // A WebSocket whose handshake completed (the store has it) and that
            // holds or released a message: only the store's copy is shown.
            self.apply_to_filtered(&flow);
            self.dirty = true;
            return;
        }
        self.upsert_pending(flow, None);
        self.after_change();
    }

    /// How many flows wait for the user.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// The flows in flight as the proxy has them now (after the console missed
    /// events): which are intercepted.
    pub fn set_in_flight(&mut self, flows: &[Flow]) {
        self.held = flows
            .iter()
            .filter_map(|f| Some((f.id, Held::of(f.intercepted.as_ref()?))))
            .collect();
        self.dirty = true;
    }

    /// A flow left the session (deleted here or by another front end).
    pub fn on_removed(&mut self, id: FlowId) {
        self.held.remove(&id);
        self.pending.retain(|p| p.summary.id != id);
        if let Some(filtered) = &mut self.filtered {
            if filtered.ids.remove(&id) {
                filtered.rows.retain(|s| s.id != id);
            }
            filtered.backlog.retain(|f| f.id != id);
        }
        self.window_valid = false;
        self.dirty = true;
        self.recheck_until = Some(Instant::now() + Duration::from_secs(1));
        self.clamp_selection();
    }

    /// The store changed under the list (a flow was duplicated, edited, reverted):
    /// read it again soon.
    pub fn refresh_soon(&mut self) {
        self.window_valid = false;
        self.dirty = true;
        self.recheck_until = Some(Instant::now() + Duration::from_secs(1));
    }

    /// Whether the flow is still in flight as far as the list knows.
    pub fn in_flight(&self, id: FlowId) -> bool {
        self.held.contains_key(&id)
            || self
                .pending
                .iter()
                .any(|p| p.summary.id == id && p.completed.is_none())
    }

    /// A flow completed (or changed later): the store will have it soon.
    pub fn on_completed(&mut self, flow: Arc<Flow>, updated_later: bool) {
        self.held.remove(&flow.id);
        if updated_later && !self.pending.iter().any(|p| p.summary.id == flow.id) {
            // A stored flow changed (its WebSocket closed): only the store's copy
            // is shown, and it is rewritten in a moment.
            self.apply_to_filtered(&flow);
            self.recheck_until = Some(Instant::now() + Duration::from_secs(1));
        } else {
            self.upsert_pending(flow, Some(Instant::now()));
        }
        self.after_change();
    }

    /// Events were lost (the console fell behind): forget what was pending and
    /// rebuild from the store.
    pub fn on_lagged(&mut self) {
        self.pending.clear();
        self.held.clear();
        self.window_valid = false;
        self.dirty = true;
        if let Some(filtered) = &self.filtered {
            let (text, filter) = (filtered.text.clone(), Arc::clone(&filtered.filter));
            self.start_scan(text, filter);
        }
    }

    fn upsert_pending(&mut self, flow: Arc<Flow>, completed: Option<Instant>) {
        self.apply_to_filtered(&flow);
        let summary = FlowSummary::of(&flow);
        if let Some(existing) = self
            .pending
            .iter_mut()
            .rev()
            .find(|p| p.summary.id == flow.id)
        {
            existing.summary = summary;
            existing.flow = flow;
            existing.completed = existing.completed.or(completed);
            return;
        }
        if self.pending.len() >= PENDING_LIMIT {
            self.pending.remove(0);
        }
        self.pending.push(PendingFlow {
            summary,
            flow,
            completed,
        });
    }

    fn apply_to_filtered(&mut self, flow: &Arc<Flow>) {
        let Some(filtered) = &mut self.filtered else {
            return;
        };
        if filtered.loading {
            if filtered.backlog.len() >= BACKLOG_LIMIT {
                filtered.backlog_overflowed = true;
            } else {
                filtered.backlog.push(Arc::clone(flow));
            }
            return;
        }
        apply_flow(filtered, flow);
    }

    fn after_change(&mut self) {
        self.dirty = true;
        if self.follow {
            self.select_last();
        }
    }

    /// The pending flow with this id, if the store may not have it yet.
    pub fn pending_flow(&self, id: FlowId) -> Option<Arc<Flow>> {
        self.pending
            .iter()
            .find(|p| p.summary.id == id)
            .map(|p| Arc::clone(&p.flow))
    }

    /// Reads the news from the store, at most every [`REFRESH_INTERVAL`], and takes
    /// finished filter scans. Returns an error message worth showing, if any.
    pub fn tick(&mut self, now: Instant) -> Option<String> {
        let mut message = self.take_scans();
        let due = self
            .last_refresh
            .is_none_or(|last| now.duration_since(last) >= REFRESH_INTERVAL);
        if self.dirty && due {
            self.last_refresh = Some(now);
            if let Err(error) = self.refresh(now) {
                message = Some(format!("cannot read the session: {error}"));
            }
        }
        message
    }

    /// True when something changed that the screen should show.
    pub fn wants_refresh(&self) -> bool {
        self.dirty
    }

    fn refresh(&mut self, now: Instant) -> Result<(), StoreError> {
        self.stored = self.store.count(None)?;
        self.window_valid = false;
        // Which pending flows has the store taken? Look at its end, where new flows
        // land; a flow that started long ago lands further up and leaves pending
        // after the grace period.
        let completed = self
            .pending
            .iter()
            .filter(|p| p.completed.is_some())
            .count();
        if completed > 0 {
            let span = (completed + TAIL_MARGIN).min(self.stored);
            let tail = self.store.summaries(None, self.stored - span, span)?;
            let stored_ids: HashSet<FlowId> = tail.iter().map(|s| s.id).collect();
            self.pending.retain(|p| match p.completed {
                None => !stored_ids.contains(&p.summary.id),
                Some(at) => {
                    !stored_ids.contains(&p.summary.id) && now.duration_since(at) < PENDING_GRACE
                }
            });
        }
        let waiting = self.pending.iter().any(|p| p.completed.is_some())
            || self.recheck_until.is_some_and(|until| now < until);
        self.dirty = waiting;
        if self.follow {
            self.select_last();
        }
        self.clamp_selection();
        Ok(())
    }

    /// Waits (up to `limit`) until the store has every completed flow the list
    /// shows, so that what the user saw before quitting is in the session file.
    /// Flows still in flight are not waited for.
    pub fn wait_for_completed(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.pending.iter().any(|p| p.completed.is_some()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            // Keep pending entries past their grace period: only the store decides.
            let now = Instant::now();
            for pending in &mut self.pending {
                if let Some(at) = &mut pending.completed {
                    *at = now;
                }
            }
            if self.refresh(now).is_err() {
                return;
            }
        }
    }

    // ---------------------------------------------------------------------------
    // Filter
    // ---------------------------------------------------------------------------

    /// Shows only the flows that match `filter` (`None`: all of them).
    pub fn set_filter(&mut self, filter: Option<(String, Filter)>) {
        match filter {
            None => {
                self.filtered = None;
                self.window_valid = false;
                self.dirty = true;
                self.clamp_selection();
            }
            Some((text, filter)) => self.start_scan(text, Arc::new(filter)),
        }
    }

    fn start_scan(&mut self, text: String, filter: Arc<Filter>) {
        self.generation += 1;
        let generation = self.generation;
        let previous_rows = self.filtered.take().map(|f| f.rows).unwrap_or_default();
        self.filtered = Some(Filtered {
            text,
            filter: Arc::clone(&filter),
            // The old rows stay on screen until the new ones arrive.
            rows: previous_rows,
            ids: HashSet::new(),
            generation,
            loading: true,
            backlog: Vec::new(),
            backlog_overflowed: false,
        });
        let store = Arc::clone(&self.store);
        let sender = self.scans.0.clone();
        let spawned = std::thread::Builder::new()
            .name("console-filter".into())
            .spawn(move || {
                let result = store
                    .summaries(Some(&filter), 0, usize::MAX)
                    .map_err(|e| e.to_string());
                let _ = sender.send(ScanResult { generation, result });
            });
        if let Err(error) = spawned {
            let _ = self.scans.0.send(ScanResult {
                generation,
                result: Err(format!("cannot start the filter: {error}")),
            });
        }
    }

    fn take_scans(&mut self) -> Option<String> {
        let mut message = None;
        while let Ok(scan) = self.scans.1.try_recv() {
            message = self.finish_scan(scan).or(message);
        }
        message
    }

    fn finish_scan(&mut self, scan: ScanResult) -> Option<String> {
        let selected_id = self.selected_summary().map(|s| s.id);
        let filtered = self.filtered.as_mut()?;
        if filtered.generation != scan.generation {
            return None;
        }
        let rows = match scan.result {
            Ok(rows) => rows,
            Err(error) => {
                filtered.loading = false;
                return Some(format!("cannot filter the session: {error}"));
            }
        };
        if filtered.backlog_overflowed {
            let (text, filter) = (filtered.text.clone(), Arc::clone(&filtered.filter));
            self.start_scan(text, filter);
            return None;
        }
        filtered.ids = rows.iter().map(|s| s.id).collect();
        filtered.rows = rows;
        filtered.loading = false;
        for flow in std::mem::take(&mut filtered.backlog) {
            apply_flow(filtered, &flow);
        }
        // Pending flows the scan could not see.
        for pending in &self.pending {
            apply_flow(filtered, &pending.flow);
        }
        let position = selected_id.and_then(|id| filtered.rows.iter().position(|s| s.id == id));
        self.selected = position.unwrap_or(self.selected);
        if self.follow {
            self.select_last();
        }
        self.clamp_selection();
        None
    }

    /// Waits for a running filter scan (tests, and callers that need the rows).
    #[cfg(test)]
    pub fn settle(&mut self) {
        while self.is_filtering() {
            match self.scans.1.recv_timeout(Duration::from_secs(10)) {
                Ok(scan) => {
                    self.finish_scan(scan);
                }
                Err(_) => panic!("filter scan did not finish"),
            }
        }
        self.last_refresh = None;
        let _ = self.tick(Instant::now());
    }

    // ---------------------------------------------------------------------------
    // Changes the user makes
    // ---------------------------------------------------------------------------

    /// Shows flow `id` marked or not (the store has it so already).
    pub fn note_marked(&mut self, id: FlowId, marked: bool) {
        let set = |s: &mut FlowSummary| {
            if s.id == id {
                s.marked = marked;
            }
        };
        self.window.iter_mut().for_each(set);
        if let Some(filtered) = &mut self.filtered {
            filtered.rows.iter_mut().for_each(set);
        }
        for pending in &mut self.pending {
            set(&mut pending.summary);
        }
    }

    /// Forgets every row, after the session was cleared (through the control, which
    /// also drops the flows not yet in the store).
    pub fn forget_all(&mut self) {
        self.pending.clear();
        self.held.clear();
        self.stored = 0;
        self.window.clear();
        self.window_valid = false;
        if let Some(filtered) = &mut self.filtered {
            filtered.rows.clear();
            filtered.ids.clear();
            filtered.backlog.clear();
        }
        self.selected = 0;
        self.top = 0;
        self.dirty = true;
    }

    // ---------------------------------------------------------------------------
    // Selection
    // ---------------------------------------------------------------------------

    pub fn move_by(&mut self, delta: isize) {
        let last = self.len().saturating_sub(1);
        let target = self.selected as isize + delta;
        self.selected = target.clamp(0, last as isize) as usize;
        self.follow = self.follow && self.selected == last;
    }

    pub fn select_first(&mut self) {
        self.selected = 0;
        self.follow = false;
    }

    pub fn select_last(&mut self) {
        self.selected = self.len().saturating_sub(1);
    }

    fn clamp_selection(&mut self) {
        self.selected = self.selected.min(self.len().saturating_sub(1));
    }

    /// The selected row's summary, reading the store when it is not in the window.
    pub fn selected_summary(&mut self) -> Option<FlowSummary> {
        let index = self.selected;
        self.row(index)
    }

    /// Row `index` as shown; reads the store for rows outside the cached window.
    fn row(&mut self, index: usize) -> Option<FlowSummary> {
        if let Some(filtered) = &self.filtered {
            return filtered.rows.get(index).cloned();
        }
        if index >= self.stored {
            return self
                .pending
                .get(index - self.stored)
                .map(|p| p.summary.clone());
        }
        if !self.window_covers(index, index + 1) {
            self.load_window(index, 1);
        }
        self.window
            .get(index.checked_sub(self.window_start)?)
            .cloned()
    }

    fn window_covers(&self, start: usize, end: usize) -> bool {
        self.window_valid
            && start >= self.window_start
            && end <= self.window_start + self.window.len()
    }

    /// Reads the stored rows around `[top, top + height)`: a screen above and below,
    /// so that scrolling a screen costs no query.
    fn load_window(&mut self, top: usize, height: usize) {
        let start = top.saturating_sub(height);
        let end = (top + 2 * height.max(1)).min(self.stored);
        match self.store.summaries(None, start, end.saturating_sub(start)) {
            Ok(rows) => {
                self.window_start = start;
                self.window = rows;
                self.window_valid = true;
            }
            Err(_) => {
                // Shown as missing rows; the next refresh tries again.
                self.window.clear();
                self.window_valid = false;
                self.dirty = true;
            }
        }
    }

    /// Scrolls so that the selection is on screen and returns the rows to draw,
    /// each with whether its request is still waiting for the response.
    fn visible_rows(&mut self, height: usize) -> Vec<VisibleRow> {
        let len = self.len();
        if self.selected < self.top {
            self.top = self.selected;
        }
        if self.selected >= self.top + height {
            self.top = self.selected + 1 - height;
        }
        self.top = self.top.min(len.saturating_sub(height));
        let end = (self.top + height).min(len);
        if self.filtered.is_none() {
            let stored_end = end.min(self.stored);
            if self.top < stored_end && !self.window_covers(self.top, stored_end) {
                self.load_window(self.top, height);
            }
        }
        let in_flight: HashSet<FlowId> = self
            .pending
            .iter()
            .filter(|p| p.completed.is_none())
            .map(|p| p.summary.id)
            .collect();
        (self.top..end)
            .map(|index| {
                let pending = self.filtered.is_none() && index >= self.stored;
                let summary = match &self.filtered {
                    Some(filtered) => filtered.rows.get(index).cloned(),
                    None if pending => self
                        .pending
                        .get(index - self.stored)
                        .map(|p| p.summary.clone()),
                    None => index
                        .checked_sub(self.window_start)
                        .and_then(|i| self.window.get(i))
                        .cloned(),
                };
                let waiting = summary.as_ref().is_some_and(|s| in_flight.contains(&s.id));
                let held = summary.as_ref().and_then(|s| self.held.get(&s.id).copied());
                VisibleRow {
                    index,
                    summary,
                    waiting,
                    held,
                }
            })
            .collect()
    }

    /// Rows per page at the last draw.
    pub fn page(&self, area_height: u16) -> usize {
        usize::from(area_height.saturating_sub(1)).max(1)
    }

    // ---------------------------------------------------------------------------
    // Drawing
    // ---------------------------------------------------------------------------

    pub fn render(&mut self, frame: &mut Frame, area: Rect, empty_hint: &[Line<'static>]) {
        if area.height == 0 {
            return;
        }
        let width = usize::from(area.width);
        let header = Line::styled(
            header_text(width),
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
        );
        frame.render_widget(header, Rect { height: 1, ..area });
        let body = Rect {
            y: area.y + 1,
            height: area.height - 1,
            ..area
        };
        if self.is_empty() {
            let mut lines = Vec::new();
            if self.is_filtering() {
                lines.push(Line::raw("  filtering…"));
            } else if self.filtered.is_some() {
                lines.push(Line::raw("  No flow matches the filter (f to change it)."));
            } else {
                lines.extend(empty_hint.iter().cloned());
            }
            frame.render_widget(Paragraph::new(lines), body);
            return;
        }
        let rows = self.visible_rows(usize::from(body.height));
        let lines: Vec<Line<'static>> = rows
            .into_iter()
            .map(|row| match &row.summary {
                Some(summary) => row_line(summary, width, row.index == self.selected, &row),
                None => Line::styled("  (cannot read this flow)", Style::new().fg(Color::Red)),
            })
            .collect();
        frame.render_widget(Paragraph::new(lines), body);
    }
}

/// A row on screen.
struct VisibleRow {
    index: usize,
    summary: Option<FlowSummary>,
    /// The request is in flight (no response or error yet).
    waiting: bool,
    /// The flow is intercepted, waiting there.
    held: Option<Held>,
}

/// Adds, updates or removes `flow` in a finished filtered list.
fn apply_flow(filtered: &mut Filtered, flow: &Arc<Flow>) {
    let summary = FlowSummary::of(flow);
    let matches = filtered.filter.matches(flow);
    if filtered.ids.contains(&summary.id) {
        // New flows are near the end: search from there.
        let position = filtered.rows.iter().rposition(|s| s.id == summary.id);
        match (position, matches) {
            (Some(i), true) => {
                // The store's marked flag wins over the event's copy.
                let marked = filtered.rows[i].marked;
                filtered.rows[i] = summary;
                filtered.rows[i].marked |= marked;
            }
            (Some(i), false) => {
                filtered.rows.remove(i);
                filtered.ids.remove(&flow.id);
            }
            (None, _) => {
                filtered.ids.remove(&flow.id);
            }
        }
        return;
    }
    if !matches {
        return;
    }
    filtered.ids.insert(summary.id);
    let key = summary.started_at;
    let in_order = filtered
        .rows
        .last()
        .is_none_or(|last| key.is_none() || last.started_at <= key);
    if in_order {
        filtered.rows.push(summary);
    } else {
        let at = filtered
            .rows
            .partition_point(|s| s.started_at.is_none_or(|t| Some(t) <= key));
        filtered.rows.insert(at, summary);
    }
}

const FIXED_WIDTH: usize = 43;

fn url_width(width: usize) -> usize {
    width.saturating_sub(FIXED_WIDTH).max(10)
}

fn header_text(width: usize) -> String {
    let text = format!(
        " {:<5} {:<8} {:<7} {} {:>3} {:>6} {:>7}",
        "",
        "time",
        "method",
        fit("url", url_width(width)),
        "st",
        "size",
        "time"
    );
    fit(&text, width)
}

/// The URL a user would paste: default ports omitted.
pub fn summary_url(summary: &FlowSummary) -> String {
    let default_port = matches!(
        (summary.scheme.as_str(), summary.port),
        ("http", 80) | ("https", 443)
    ) || summary.port == 0;
    let host = if summary.host.contains(':') && !summary.host.starts_with('[') {
        format!("[{}]", summary.host)
    } else {
        summary.host.clone()
    };
    if default_port {
        format!("{}://{}{}", summary.scheme, host, summary.path)
    } else {
        format!(
            "{}://{}:{}{}",
            summary.scheme, host, summary.port, summary.path
        )
    }
}

/// The marker columns: marked, TLS events (`R` renegotiation, `T` other), error
/// (`!`), where the flow came from (`↻` a replay, `D` a duplicate), what the user
/// did (`✎` edited, `#` a comment).
pub fn markers(summary: &FlowSummary) -> String {
    let mark = if summary.marked { '●' } else { ' ' };
    let tls = if summary.has_renegotiation {
        'R'
    } else if summary.has_tls_events {
        'T'
    } else {
        ' '
    };
    let error = if summary.has_error { '!' } else { ' ' };
    let origin = if summary.replay_of.is_some() {
        '↻'
    } else if summary.duplicate_of.is_some() {
        'D'
    } else {
        ' '
    };
    let user = if summary.modified {
        '✎'
    } else if summary.has_comment {
        '#'
    } else {
        ' '
    };
    format!("{mark}{tls}{error}{origin}{user}")
}

fn status_style(status: Option<u16>) -> Style {
    match status {
        Some(200..=299) => Style::new().fg(Color::Green),
        Some(300..=399) => Style::new().fg(Color::Cyan),
        Some(400..=499) => Style::new().fg(Color::Yellow),
        Some(_) => Style::new().fg(Color::Red),
        None => Style::new().add_modifier(Modifier::DIM),
    }
}

/// What the time column of a request still waiting for its response shows, until
/// the completed flow replaces the row.
pub const WAITING_MARKER: &str = "pending";

/// How an intercepted row is drawn (mitmproxy draws them in red).
fn held_style() -> Style {
    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
}

/// One row.
fn row_line(
    summary: &FlowSummary,
    width: usize,
    selected: bool,
    row: &VisibleRow,
) -> Line<'static> {
    let marker_style = if summary.has_error {
        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else if summary.has_renegotiation {
        Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD)
    } else {
        Style::new().fg(Color::Cyan)
    };
    let time = summary.started_at.map(clock).unwrap_or_default();
    let status = match (summary.status, summary.has_error) {
        (Some(code), _) => code.to_string(),
        (None, true) => "err".to_owned(),
        (None, false) => "…".to_owned(),
    };
    let size = summary.response_size.map(format_size).unwrap_or_default();
    let duration = summary
        .duration_ms
        .map(format_duration_ms)
        .unwrap_or_default();
    let (duration, duration_style) = if let Some(held) = row.held {
        (
            held.label().to_owned(),
            held_style().add_modifier(Modifier::REVERSED),
        )
    } else if row.waiting {
        (
            WAITING_MARKER.to_owned(),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        )
    } else {
        (duration, Style::new())
    };
    let url = sanitize(&summary_url(summary)).into_owned();
    let method = sanitize(&summary.method).into_owned();
    let request_style = if row.held.is_some() {
        held_style()
    } else {
        Style::new()
    };
    let spans = vec![
        Span::raw(if selected { ">" } else { " " }),
        Span::styled(markers(summary), marker_style),
        Span::raw(format!(" {time:<8} ")),
        Span::styled(format!("{} ", fit(&method, 7)), request_style),
        Span::styled(fit(&url, url_width(width)), request_style),
        Span::styled(format!(" {status:>3}"), status_style(summary.status)),
        Span::raw(format!(" {size:>6} ")),
        Span::styled(format!("{duration:>7}"), duration_style),
    ];
    let line = Line::from(spans);
    if selected {
        line.style(Style::new().add_modifier(Modifier::REVERSED))
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn list_with(flows: &[Flow]) -> FlowList {
        let store = Arc::new(FlowStore::temporary().unwrap());
        for flow in flows {
            store.insert(flow).unwrap();
        }
        let mut list = FlowList::new(store);
        list.tick(Instant::now());
        list
    }

    fn ids(list: &mut FlowList) -> Vec<String> {
        (0..list.len())
            .map(|i| list.row(i).map(|s| s.path).unwrap_or_default())
            .collect()
    }

    #[test]
    fn unfiltered_list_pages_through_the_store() {
        let flows: Vec<Flow> = (0..500)
            .map(|i| fixtures::flow_at("GET", "a.example", &format!("/{i}"), Some(200), i))
            .collect();
        let mut list = list_with(&flows);
        assert_eq!(list.len(), 500);
        let rows = list.visible_rows(20);
        assert_eq!(rows.len(), 20);
        assert!(list.window.len() <= 60, "{}", list.window.len());
        list.select_last();
        let rows = list.visible_rows(20);
        assert_eq!(rows.last().unwrap().summary.as_ref().unwrap().path, "/499");
        assert!(list.window.len() <= 60);
        assert_eq!(list.selected_summary().unwrap().path, "/499");
    }

    #[test]
    fn pending_flows_show_until_the_store_has_them() {
        let mut list = list_with(&[fixtures::flow_at("GET", "a", "/stored", Some(200), 0)]);
        let flow = Arc::new(fixtures::flow_at("GET", "a", "/new", None, 1));
        list.on_request(Arc::clone(&flow));
        assert_eq!(ids(&mut list), ["/stored", "/new"]);
        let done = Arc::new(fixtures::flow_at("GET", "a", "/new", Some(201), 1));
        let done = Arc::new(Flow {
            id: flow.id,
            ..(*done).clone()
        });
        list.on_completed(Arc::clone(&done), false);
        assert_eq!(list.len(), 2);
        // The recorder commits it; the next refresh drops the pending copy.
        list.store.insert(&done).unwrap();
        list.last_refresh = None;
        list.tick(Instant::now());
        assert_eq!(ids(&mut list), ["/stored", "/new"]);
        assert!(list.pending.is_empty());
        assert!(!list.wants_refresh());
    }

    /// The text of the rows on a `height`-row screen, 120 columns wide.
    fn rendered_rows(list: &mut FlowList, height: usize) -> Vec<String> {
        let selected = list.selected;
        list.visible_rows(height)
            .into_iter()
            .map(|row| {
                let summary = row.summary.clone().unwrap();
                let line = row_line(&summary, 120, row.index == selected, &row);
                line.spans.iter().map(|s| s.content.as_ref()).collect()
            })
            .collect()
    }

    #[test]
    fn a_request_in_flight_is_marked_until_its_response_arrives() {
        let mut list = list_with(&[fixtures::flow_at("GET", "a", "/stored", Some(200), 0)]);
        let request = Arc::new(fixtures::flow_at("GET", "a", "/slow", None, 1));
        list.on_request(Arc::clone(&request));
        let rows = rendered_rows(&mut list, 10);
        assert!(!rows[0].contains(WAITING_MARKER), "{rows:#?}");
        assert!(rows[1].contains("/slow"), "{rows:#?}");
        assert!(rows[1].trim_end().ends_with(WAITING_MARKER), "{rows:#?}");

        let mut done = fixtures::flow_at("GET", "a", "/slow", Some(201), 1);
        done.id = request.id;
        list.on_completed(Arc::new(done), false);
        let rows = rendered_rows(&mut list, 10);
        assert_eq!(rows.len(), 2, "{rows:#?}");
        assert!(rows[1].contains(" 201 "), "{rows:#?}");
        assert!(!rows[1].contains(WAITING_MARKER), "{rows:#?}");

        // With a filter the in-flight row is marked the same way.
        list.set_filter(Some((
            "~u slow2".into(),
            Filter::parse("~u slow2").unwrap(),
        )));
        list.settle();
        list.on_request(Arc::new(fixtures::flow_at("GET", "a", "/slow2", None, 2)));
        let rows = rendered_rows(&mut list, 10);
        assert_eq!(rows.len(), 1, "{rows:#?}");
        assert!(rows[0].trim_end().ends_with(WAITING_MARKER), "{rows:#?}");
    }

    #[test]
    fn intercepted_flows_show_where_they_wait_until_they_go_on() {
        let mut list = list_with(&[]);
        let mut flow = fixtures::flow_at("GET", "a", "/hold", None, 0);
        flow.intercepted = Some(Interception::Request);
        list.on_request(Arc::new(flow.clone()));
        let rows = rendered_rows(&mut list, 10);
        assert!(rows[0].trim_end().ends_with("at req"), "{rows:#?}");
        assert_eq!(list.held_count(), 1);
        assert!(list.in_flight(flow.id));
        // Resumed: in flight again, no longer held.
        flow.intercepted = None;
        list.on_request(Arc::new(flow.clone()));
        let rows = rendered_rows(&mut list, 10);
        assert!(rows[0].trim_end().ends_with(WAITING_MARKER), "{rows:#?}");
        assert_eq!(list.held_count(), 0);

        // A stored WebSocket flow that holds a message keeps its one row.
        let mut ws = fixtures::flow_at("GET", "a", "/ws", Some(101), 1);
        ws.websocket = Some(Default::default());
        list.store.insert(&ws).unwrap();
        list.last_refresh = None;
        list.tick(Instant::now());
        ws.intercepted = Some(Interception::WebSocketMessage {
            message: fixtures::websocket_text(true, "hello"),
        });
        list.on_request(Arc::new(ws.clone()));
        list.last_refresh = None;
        list.tick(Instant::now());
        assert_eq!(list.len(), 2);
        let rows = rendered_rows(&mut list, 10);
        let ws_row = rows.iter().find(|r| r.contains("/ws")).unwrap();
        assert!(ws_row.trim_end().ends_with("at msg"), "{rows:#?}");
        // The flow ended (killed, or its WebSocket closed): nothing is held.
        list.on_completed(
            Arc::new(fixtures::flow_at("GET", "a", "/ws", Some(101), 1)),
            true,
        );
        ws.intercepted = None;
        list.on_completed(Arc::new(ws), true);
        assert_eq!(list.held_count(), 0);
        // What the proxy has in flight after the console missed events.
        list.on_lagged();
        let mut again = flow;
        again.intercepted = Some(Interception::Response);
        list.set_in_flight(&[again]);
        assert_eq!(list.held_count(), 1);
    }

    #[test]
    fn filter_scans_then_follows_events() {
        let mut list = list_with(&[
            fixtures::flow_at("GET", "a", "/ok", Some(200), 0),
            fixtures::flow_at("POST", "a", "/bad", Some(400), 1),
        ]);
        list.set_filter(Some(("~c 400".into(), Filter::parse("~c 400").unwrap())));
        list.settle();
        assert_eq!(ids(&mut list), ["/bad"]);
        assert_eq!(list.total(), 2);
        // A new matching flow appears without a scan; a non-matching one does not.
        list.on_completed(
            Arc::new(fixtures::flow_at("GET", "a", "/bad2", Some(400), 2)),
            false,
        );
        list.on_completed(
            Arc::new(fixtures::flow_at("GET", "a", "/ok2", Some(200), 3)),
            false,
        );
        assert_eq!(ids(&mut list), ["/bad", "/bad2"]);
        list.set_filter(None);
        list.last_refresh = None;
        list.tick(Instant::now());
        assert_eq!(ids(&mut list), ["/ok", "/bad", "/bad2", "/ok2"]);
    }

    #[test]
    fn flows_arriving_during_a_scan_are_not_lost() {
        let mut list = list_with(&[fixtures::flow_at("GET", "a", "/x", Some(404), 0)]);
        list.set_filter(Some(("~c 404".into(), Filter::parse("~c 404").unwrap())));
        list.on_completed(
            Arc::new(fixtures::flow_at("GET", "a", "/y", Some(404), 5)),
            false,
        );
        list.settle();
        assert_eq!(ids(&mut list), ["/x", "/y"]);
    }

    #[test]
    fn marked_and_removed_flows_show_at_once() {
        let flows = [
            fixtures::flow_at("GET", "a", "/1", Some(200), 0),
            fixtures::flow_at("GET", "a", "/2", Some(200), 1),
        ];
        let mut list = list_with(&flows);
        // The control changes the store; the list shows it at once, without reading
        // the rows it has again.
        assert!(!list.selected_summary().unwrap().marked);
        assert!(list.store.set_marked(flows[0].id, true).unwrap());
        list.note_marked(flows[0].id, true);
        assert!(list.selected_summary().unwrap().marked);
        assert!(list.store.delete(flows[0].id).unwrap());
        list.on_removed(flows[0].id);
        list.last_refresh = None;
        list.tick(Instant::now());
        assert_eq!(ids(&mut list), ["/2"]);
        // With a filter too.
        list.set_filter(Some(("~u /".into(), Filter::parse("~u /").unwrap())));
        list.settle();
        assert_eq!(ids(&mut list), ["/2"]);
        list.on_removed(flows[1].id);
        assert!(ids(&mut list).is_empty());
        list.set_filter(None);
        list.store.clear().unwrap();
        list.forget_all();
        assert!(list.is_empty());
    }

    #[test]
    fn follow_keeps_the_newest_selected() {
        let mut list = list_with(&[fixtures::flow_at("GET", "a", "/1", Some(200), 0)]);
        assert!(list.toggle_follow());
        list.on_request(Arc::new(fixtures::flow_at("GET", "a", "/2", None, 1)));
        assert_eq!(list.selected_index(), 1);
        list.move_by(-1);
        assert!(!list.following());
    }

    #[test]
    fn markers_and_urls() {
        let mut summary = FlowSummary::of(&fixtures::flow("GET", "h", "/p", Some(200)));
        assert_eq!(markers(&summary), "     ");
        summary.has_tls_events = true;
        assert_eq!(markers(&summary), " T   ");
        summary.has_renegotiation = true;
        summary.has_error = true;
        summary.marked = true;
        assert_eq!(markers(&summary), "●R!  ");
        summary.has_comment = true;
        summary.duplicate_of = Some(FlowId::new());
        assert_eq!(markers(&summary), "●R!D#");
        summary.modified = true;
        summary.replay_of = Some(FlowId::new());
        assert_eq!(markers(&summary), "●R!↻✎");
        assert_eq!(summary_url(&summary), "https://h/p");
        summary.port = 8443;
        summary.host = "::1".into();
        assert_eq!(summary_url(&summary), "https://[::1]:8443/p");
    }
}

//! The control API in-process, over real HTTP and WebSocket connections.

mod actions;
mod flows;
mod security;
mod support;
mod ui;
mod updates;

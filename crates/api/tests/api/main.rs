//! The control API in-process, over real HTTP and WebSocket connections.

mod actions;
mod flows;
mod security;
mod session;
mod support;
mod ui;
mod updates;

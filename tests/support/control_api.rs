//! The control API of a running Periscope (`--api --web-port 0`), spoken to with
//! curl: its URL and token from the line Periscope prints at start.

use std::time::Duration;

use super::curl::{Curl, CurlResult};
use super::periscope::Periscope;

pub struct ControlApi {
    pub base: String,
    pub token: String,
}

impl ControlApi {
    pub fn of(proxy: &Periscope) -> ControlApi {
        let line = proxy.wait_for_stderr("control API at ", Duration::from_secs(20));
        let url = line
            .split("control API at ")
            .nth(1)
            .expect("the API URL")
            .trim();
        let (base, token) = url.split_once("/?token=").expect("a token in the URL");
        ControlApi {
            base: base.to_owned(),
            token: token.to_owned(),
        }
    }

    /// `PUT /options` with `json`: the answer.
    pub fn set_options(&self, json: &str) -> CurlResult {
        Curl::new()
            .header(&format!("Authorization: Bearer {}", self.token))
            .header("Content-Type: application/json")
            .method("PUT")
            .data(json)
            .run(&format!("{}/options", self.base))
    }
}

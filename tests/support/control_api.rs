//! The control API of a running Periscope (`--api --web-port 0`), spoken to with
//! curl: its URL and token from the line Periscope prints at start.

use std::time::Duration;

use serde_json::Value;

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

    /// curl with the token.
    pub fn curl(&self) -> Curl {
        Curl::new().header(&format!("Authorization: Bearer {}", self.token))
    }

    /// `GET PATH`, which must answer 200: its JSON.
    pub fn get(&self, path: &str) -> Value {
        let result = self.curl().run(&format!("{}{path}", self.base));
        result.assert_status(200);
        result.json()
    }

    /// `METHOD PATH`, with `body` as JSON: the answer.
    pub fn send(&self, method: &str, path: &str, body: Option<&str>) -> CurlResult {
        let mut curl = self.curl().method(method);
        if let Some(body) = body {
            curl = curl.header("Content-Type: application/json").data(body);
        }
        curl.run(&format!("{}{path}", self.base))
    }

    /// `PUT /options` with `json`: the answer.
    pub fn set_options(&self, json: &str) -> CurlResult {
        self.send("PUT", "/options", Some(json))
    }
}

//! The API started in-process on 127.0.0.1:0 with a fake `FlowControl` that records
//! its calls, a temporary session store, a live feed the tests publish on, and a
//! real HTTP client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use periscope_api::{ApiState, ExportFormat, FlowExporter};
use periscope_control::{
    CertificateChoice, ControlError, FlowControl, FlowEdit, Injection, MessageDecision, Options,
    OptionsUpdate,
};
use periscope_flow::filter::Filter;
use periscope_flow::live::FlowFeed;
use periscope_flow::store::FlowStore;
use periscope_model::{
    Body, ConnectionInfo, Direction, Flow, FlowId, Headers, Interception, Leg, Milestone,
    Request as FlowRequest, Response as FlowResponse, Timeline, Timestamp, TlsEvent, TlsEventKind,
    TlsInfo,
};
use serde_json::Value;

/// A call the API made on the control interface.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Resume(FlowId),
    ResumeAll,
    Kill(FlowId),
    KillAll,
    Edit(FlowId, Box<FlowEdit>),
    Replay(FlowId),
    Duplicate(FlowId),
    Revert(FlowId),
    Delete(FlowId),
    Clear,
    Certificate(FlowId, CertificateChoice),
    Decide(FlowId, MessageDecision),
    Inject(FlowId, Injection),
    SetOptions(OptionsUpdate),
}

/// Records every call and answers with canned flows: the flows "in flight" it holds,
/// and for anything else, as a proxy would, `NotFound` from `flow` (recorded flows
/// are the store's).
#[derive(Default)]
pub struct FakeControl {
    pub calls: Mutex<Vec<Call>>,
    pub in_flight: Mutex<Vec<Flow>>,
    pub options: Mutex<Options>,
    /// What the next call on a flow fails with, if set.
    pub fail_with: Mutex<Option<ControlError>>,
    pub new_id: FlowId,
    /// The session a real control clears.
    pub store: Option<Arc<FlowStore>>,
}

impl FakeControl {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: Call) -> Result<(), ControlError> {
        self.calls.lock().unwrap().push(call);
        match self.fail_with.lock().unwrap().take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn canned(&self, id: FlowId) -> Flow {
        let mut flow = sample_flow("edited.example", "/", 200, 1);
        flow.id = id;
        flow
    }
}

impl FlowControl for FakeControl {
    fn flow(&self, id: FlowId) -> Result<Flow, ControlError> {
        self.in_flight
            .lock()
            .unwrap()
            .iter()
            .find(|flow| flow.id == id)
            .cloned()
            .ok_or(ControlError::NotFound(id))
    }

    fn flows_in_flight(&self) -> Vec<Flow> {
        self.in_flight.lock().unwrap().clone()
    }

    fn resume(&self, id: FlowId) -> Result<(), ControlError> {
        self.record(Call::Resume(id))
    }

    fn resume_all(&self) -> usize {
        let _ = self.record(Call::ResumeAll);
        2
    }

    fn kill(&self, id: FlowId) -> Result<(), ControlError> {
        self.record(Call::Kill(id))
    }

    fn kill_all(&self) -> usize {
        let _ = self.record(Call::KillAll);
        3
    }

    fn edit(&self, id: FlowId, edit: FlowEdit) -> Result<Flow, ControlError> {
        let comment = edit.comment.clone();
        self.record(Call::Edit(id, Box::new(edit)))?;
        let mut flow = self.canned(id);
        flow.annotations.comment = comment.unwrap_or_default();
        flow.annotations.modified = true;
        Ok(flow)
    }

    fn replay(&self, id: FlowId) -> Result<FlowId, ControlError> {
        self.record(Call::Replay(id)).map(|()| self.new_id)
    }

    fn duplicate(&self, id: FlowId) -> Result<FlowId, ControlError> {
        self.record(Call::Duplicate(id)).map(|()| self.new_id)
    }

    fn revert(&self, id: FlowId) -> Result<Flow, ControlError> {
        self.record(Call::Revert(id)).map(|()| self.canned(id))
    }

    fn delete(&self, id: FlowId) -> Result<(), ControlError> {
        self.record(Call::Delete(id))
    }

    fn clear(&self) -> Result<(), ControlError> {
        self.record(Call::Clear)?;
        if let Some(store) = &self.store {
            store
                .clear()
                .map_err(|e| ControlError::Store(e.to_string()))?;
        }
        Ok(())
    }

    fn choose_client_certificate(
        &self,
        id: FlowId,
        choice: CertificateChoice,
    ) -> Result<(), ControlError> {
        self.record(Call::Certificate(id, choice))
    }

    fn decide_message(&self, id: FlowId, decision: MessageDecision) -> Result<(), ControlError> {
        self.record(Call::Decide(id, decision))
    }

    fn inject_message(&self, id: FlowId, message: Injection) -> Result<(), ControlError> {
        self.record(Call::Inject(id, message))
    }

    fn options(&self) -> Options {
        self.options.lock().unwrap().clone()
    }

    fn set_options(&self, update: OptionsUpdate) -> Result<Options, ControlError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::SetOptions(update.clone()));
        let mut options = self.options.lock().unwrap();
        if let Some(intercept) = update.intercept {
            if intercept.is_empty() {
                options.intercept = None;
            } else {
                Filter::parse(&intercept)
                    .map_err(|e| ControlError::InvalidOption(e.to_string()))?;
                options.intercept = Some(intercept);
            }
        }
        if let Some(tls) = update.intercept_tls {
            options.intercept_tls = tls;
        }
        Ok(options.clone())
    }
}

/// Exports as `<format> <method> <url>`.
pub struct FakeExporter;

impl FlowExporter for FakeExporter {
    fn export(&self, flow: &Flow, format: ExportFormat) -> Result<Vec<u8>, String> {
        if format == ExportFormat::RawResponse && flow.response.is_none() {
            return Err("the flow has no response".to_owned());
        }
        Ok(format!("{format:?} {} {}", flow.request.method, flow.request.url()).into_bytes())
    }
}

/// A flow `GET http://host/path` started at `second` (seconds after a fixed epoch)
/// and answered `status` (none when 0).
pub fn sample_flow(host: &str, path: &str, status: u16, second: i64) -> Flow {
    let started = 1_700_000_000_000_000 + second * 1_000_000;
    let mut timeline = Timeline::new();
    timeline.mark(Milestone::ClientConnected, Timestamp(started - 100));
    timeline.mark(Milestone::RequestStarted, Timestamp(started));
    timeline.mark(Milestone::RequestComplete, Timestamp(started + 10));
    let mut request_headers = Headers::default();
    request_headers.push("Host", host);
    request_headers.push("Accept", "*/*");
    let response = (status != 0).then(|| {
        timeline.mark(Milestone::ResponseStarted, Timestamp(started + 1_000));
        timeline.mark(Milestone::ResponseComplete, Timestamp(started + 1_500));
        let mut headers = Headers::default();
        headers.push("Content-Type", "text/html; charset=utf-8");
        FlowResponse {
            status,
            reason: "OK".into(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers,
            body: Body::complete(&b"<script>alert(1)</script>"[..]),
            trailers: None,
            generated: false,
        }
    });
    Flow {
        id: FlowId::new(),
        client: ConnectionInfo {
            id: 1,
            peer: Some("127.0.0.1:50000".parse().unwrap()),
            local: Some("127.0.0.1:8080".parse().unwrap()),
            target: None,
            tls: None,
        },
        server: Some(ConnectionInfo {
            id: 2,
            peer: Some("192.0.2.7:443".parse().unwrap()),
            local: None,
            target: Some(format!("{host}:443")),
            tls: Some(TlsInfo {
                version: "TLSv1.2".into(),
                cipher: "ECDHE-RSA-AES128-GCM-SHA256".into(),
                sni: Some(host.into()),
                alpn: Some("http/1.1".into()),
                peer_chain: Vec::new(),
                peer_certificate: None,
                resumed: false,
                key_exchange: Some("x25519".into()),
            }),
        }),
        request: FlowRequest {
            method: "GET".into(),
            scheme: "https".into(),
            host: host.into(),
            port: 443,
            path: path.into(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers: request_headers,
            body: Body::default(),
            trailers: None,
        },
        response,
        error: None,
        timeline,
        marked: false,
        intercepted_tls: true,
        websocket: None,
        intercepted: None,
        annotations: Default::default(),
        listener: None,
        tcp: None,
        rules: Vec::new(),
    }
}

/// A flow paused at its request, as the proxy lists it in flight.
pub fn intercepted_flow(host: &str, second: i64) -> Flow {
    let mut flow = sample_flow(host, "/paused", 0, second);
    flow.intercepted = Some(Interception::Request);
    flow.timeline.push_tls(
        Timestamp(1_700_000_000_000_000 + second * 1_000_000 + 5),
        TlsEvent {
            leg: Leg::Server,
            kind: TlsEventKind::HelloRequest {
                direction: Direction::Received,
            },
        },
    );
    flow
}

pub struct TestApi {
    pub addr: SocketAddr,
    pub token: String,
    pub control: Arc<FakeControl>,
    pub store: Arc<FlowStore>,
    pub feed: FlowFeed,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// What the API answered.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` of a JSON refusal.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

pub struct Setup {
    pub feed: FlowFeed,
    pub exporter: bool,
    pub is_proxy_connection: Option<periscope_api::ProxyConnectionCheck>,
    /// Serves until this completes (`serve_until`) rather than forever (`serve`).
    pub shutdown: Option<tokio::sync::oneshot::Receiver<()>>,
    /// The web UI's files, if any.
    pub ui: Option<periscope_api::UiAssets>,
    /// The onboarding files, if any.
    pub onboarding: Option<periscope_api::OnboardingFiles>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            feed: FlowFeed::new(),
            exporter: true,
            is_proxy_connection: None,
            shutdown: None,
            ui: None,
            onboarding: None,
        }
    }
}

impl TestApi {
    pub async fn start() -> TestApi {
        Self::start_with(Setup::default()).await
    }

    pub async fn start_with(options: Setup) -> TestApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(FlowStore::temporary().unwrap());
        let control = Arc::new(FakeControl {
            new_id: FlowId::new(),
            store: Some(Arc::clone(&store)),
            ..FakeControl::default()
        });
        let token = periscope_api::random_token();
        let mut state = ApiState::new(
            Arc::clone(&control) as Arc<dyn FlowControl>,
            Arc::clone(&store),
            options.feed.clone(),
            token.clone(),
        );
        if options.exporter {
            state.exporter = Some(Arc::new(FakeExporter));
        }
        state.is_proxy_connection = options.is_proxy_connection;
        state.ui = options.ui;
        state.onboarding = options.onboarding;
        let server = match options.shutdown {
            Some(shutdown) => tokio::spawn(periscope_api::serve_until(listener, state, async {
                let _ = shutdown.await;
            })),
            None => tokio::spawn(periscope_api::serve(listener, state)),
        };
        TestApi {
            addr,
            token,
            control,
            store,
            feed: options.feed,
            server,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with no credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder().method(method).uri(self.url(path))
    }

    /// A request with the token as a Bearer header, as a script sends it.
    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        self.anonymous(method, path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
    }

    pub async fn send(&self, request: http::request::Builder, body: impl Into<Bytes>) -> Reply {
        let request = request.body(Full::new(body.into())).unwrap();
        let response = self.client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path), Bytes::new())
            .await
    }

    pub async fn post(&self, path: &str) -> Reply {
        self.send(self.request(Method::POST, path), Bytes::new())
            .await
    }

    pub async fn send_json(&self, method: Method, path: &str, json: &str) -> Reply {
        let request = self
            .request(method, path)
            .header(header::CONTENT_TYPE, "application/json");
        self.send(request, json.to_owned()).await
    }

    /// Saves `flows` in the session store.
    pub fn record(&self, flows: &[Flow]) {
        for flow in flows {
            self.store.insert(flow).unwrap();
        }
    }
}

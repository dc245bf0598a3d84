//! Writes COUNT made-up flows into a session file, for the `store` scenario of
//! `scripts/bench.sh` and for trying the console on a big session
//! (`periscope -r FILE`).
//!
//! ```sh
//! cargo run --release -p periscope-tui --example fill_session -- /tmp/big.periscope 100000
//! ```
//!
//! The flows look like the ones the proxy records: HTTPS GETs and POSTs with a
//! dozen headers, a 1 KiB JSON response (like the bench origin's `/1k`), both
//! connections with TLS details and the server certificate, every milestone of the
//! timeline. The mix is fixed (a seeded generator): 80% `200`, 5% `404`, 5% `400`,
//! the rest `201`/`302`/`500`; one flow in 20 renegotiated; one in 1000 has `foo`
//! in its body. The file is created (or added to, if it exists).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use periscope_flow::store::FlowStore;
use periscope_flow::{
    Body, CertificateSummary, ConnectionInfo, Direction, Flow, FlowId, Headers, Initiator, Leg,
    Milestone, Request, Response, Timeline, Timestamp, TlsEvent, TlsEventKind, TlsInfo,
};

const BATCH: usize = 512;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(count)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
        eprintln!("usage: fill_session FILE COUNT");
        return ExitCode::from(2);
    };
    let store = match FlowStore::open(std::path::Path::new(path)) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("fill_session: {error}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let mut random = XorShift(0x5045_5249_5343_4f50);
    let base = Timestamp::now().0 - count as i64 * 1000;
    let mut batch = Vec::with_capacity(BATCH);
    for n in 0..count {
        batch.push(Arc::new(made_up_flow(
            n,
            base + n as i64 * 1000,
            &mut random,
        )));
        if batch.len() == BATCH || n + 1 == count {
            if let Err(error) = store.insert_many(&batch) {
                eprintln!("fill_session: {error}");
                return ExitCode::FAILURE;
            }
            batch.clear();
        }
    }
    println!(
        "wrote {count} flows to {path} in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

/// xorshift64*: the same flows on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn made_up_flow(n: usize, start: i64, random: &mut XorShift) -> Flow {
    let hosts = [
        "api.example.com",
        "login.example.com",
        "cdn.example.net",
        "iis.corp.example",
    ];
    let host = hosts[random.below(hosts.len() as u64) as usize];
    let roll = random.below(100);
    let status = match roll {
        0..=79 => 200,
        80..=84 => 404,
        85..=89 => 400,
        90..=94 => 201,
        95..=97 => 302,
        _ => 500,
    };
    let post = random.below(4) == 0;
    let method = if post { "POST" } else { "GET" };
    let path = if post {
        "/vedauth/authorize/oauth".to_owned()
    } else {
        format!("/items/{}?page={}", random.below(100_000), random.below(20))
    };

    let mut timeline = Timeline::new();
    let mut at = start;
    for milestone in Milestone::ALL {
        timeline.mark(milestone, Timestamp(at));
        at += 100 + random.below(900) as i64;
    }
    let request_started = timeline
        .milestone(Milestone::RequestStarted)
        .unwrap_or(Timestamp(start));
    if n.is_multiple_of(20) {
        let events = [
            TlsEventKind::HelloRequest {
                direction: Direction::Received,
            },
            TlsEventKind::RenegotiationStarted {
                initiator: Initiator::Peer,
            },
            TlsEventKind::CertificateRequested {
                ca_names: vec!["CN=Corp Client CA".into()],
                post_handshake: false,
            },
            TlsEventKind::CertificatePresented {
                direction: Direction::Sent,
                subject: None,
            },
            TlsEventKind::RenegotiationCompleted {
                version: "TLSv1.2".into(),
                cipher: "ECDHE-RSA-AES256-GCM-SHA384".into(),
            },
        ];
        for (i, kind) in events.into_iter().enumerate() {
            timeline.push_tls(
                Timestamp(request_started.0 + 300 + i as i64 * 150),
                TlsEvent {
                    leg: Leg::Server,
                    kind,
                },
            );
        }
    }

    let mut request_headers = Headers::default();
    for (name, value) in [
        ("host", host),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) periscope-bench/1.0",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "identity"),
        (
            "cookie",
            "session=4f2c9a61b3e8d7a0c5f1e2d3b4a59687; theme=dark",
        ),
        ("x-request-id", &format!("req-{n:08}")),
    ] {
        request_headers.push(name, value);
    }
    let request_body = if post {
        request_headers.push("content-type", "application/x-www-form-urlencoded");
        Body::complete(format!(
            "grant_type=client_credentials&client_id=bench-{}&scope=vedauth",
            n % 97
        ))
    } else {
        Body::default()
    };

    let word = if n % 1000 == 7 { "foo" } else { "item" };
    let mut json = format!("{{\"id\":{n},\"status\":{status},\"items\":[");
    while json.len() < 1000 {
        json.push_str(&format!(
            "{{\"{word}\":{},\"name\":\"entry-{}\"}},",
            random.below(1_000_000),
            random.below(1000)
        ));
    }
    json.pop();
    json.push_str("]}");
    let mut response_headers = Headers::default();
    for (name, value) in [
        ("date", "Sun, 29 Nov 2026 12:00:00 GMT"),
        ("server", "Microsoft-IIS/10.0"),
        ("content-type", "application/json; charset=utf-8"),
        ("cache-control", "no-store"),
        ("strict-transport-security", "max-age=31536000"),
        ("x-powered-by", "ASP.NET"),
        ("content-length", &json.len().to_string()),
    ] {
        response_headers.push(name, value);
    }

    let tls = |sni: &str, certificate: Option<CertificateSummary>| TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        sni: Some(sni.into()),
        alpn: Some("http/1.1".into()),
        peer_chain: Vec::new(),
        peer_certificate: certificate,
        resumed: false,
        key_exchange: Some("x25519".into()),
    };
    let certificate = CertificateSummary {
        subject: format!("CN={host}"),
        issuer: "CN=Example Issuing CA, O=Example".into(),
        subject_alt_names: vec![format!("DNS:{host}")],
        not_before: "Jan  1 00:00:00 2026 GMT".into(),
        not_after: "Jan  1 00:00:00 2027 GMT".into(),
        serial: format!("{:032X}", random.next()),
        sha256_fingerprint: (0..32)
            .map(|_| format!("{:02X}", random.below(256)))
            .collect::<Vec<_>>()
            .join(":"),
    };
    let client_port = 20_000 + (n % 40_000) as u16;
    Flow {
        id: FlowId::new(),
        client: ConnectionInfo {
            id: n as u64 * 2,
            peer: Some(format!("127.0.0.1:{client_port}").parse().unwrap()),
            local: Some("127.0.0.1:8080".parse().unwrap()),
            target: None,
            tls: Some(tls(host, None)),
        },
        server: Some(ConnectionInfo {
            id: n as u64 * 2 + 1,
            peer: Some("192.0.2.10:443".parse().unwrap()),
            local: Some(format!("192.0.2.1:{client_port}").parse().unwrap()),
            target: Some(format!("{host}:443")),
            tls: Some(tls(host, Some(certificate))),
        }),
        request: Request {
            method: method.into(),
            scheme: "https".into(),
            host: host.into(),
            port: 443,
            path,
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers: request_headers,
            body: request_body,
            trailers: None,
        },
        response: Some(Response {
            status,
            reason: String::new(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers: response_headers,
            body: Body::complete(json),
            trailers: None,
            generated: false,
        }),
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

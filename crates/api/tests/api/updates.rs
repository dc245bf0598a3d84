//! The updates WebSocket: live feed events become mitmweb's messages.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use periscope_flow::live::FlowFeed;
use periscope_model::{
    FlowEvent, LogEntry, LogLevel, Timestamp, WebSocketMessage, WebSocketOpcode,
};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{intercepted_flow, sample_flow, Setup, TestApi};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect_with(
    api: &TestApi,
    query: &str,
    headers: &[(&'static str, String)],
) -> Result<Socket, tungstenite::Error> {
    let mut request = format!("ws://{}/updates{query}", api.addr)
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

async fn connect(api: &TestApi) -> Socket {
    connect_with(
        api,
        "",
        &[("authorization", format!("Bearer {}", api.token))],
    )
    .await
    .unwrap()
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

fn refused_with(result: Result<Socket, tungstenite::Error>) -> StatusCode {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status(),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("the handshake was accepted"),
    }
}

#[tokio::test]
async fn flows_published_on_the_feed_arrive_as_mitmwebs_messages() {
    let api = TestApi::start().await;
    let mut socket = connect(&api).await;

    let paused = Arc::new(intercepted_flow("a.example", 1));
    api.feed
        .send(FlowEvent::RequestReceived(Arc::clone(&paused)));
    let added = next_json(&mut socket).await;
    assert_eq!(added["type"], "flows/add");
    assert_eq!(added["payload"]["flow"]["id"], paused.id.to_string());
    assert_eq!(added["payload"]["flow"]["intercepted"], true);
    assert_eq!(added["payload"]["matching_filters"], json!({}));

    let mut done = (*paused).clone();
    done.intercepted = None;
    api.feed.send(FlowEvent::Completed(Arc::new(done.clone())));
    let completed = next_json(&mut socket).await;
    assert_eq!(completed["type"], "flows/update");
    assert_eq!(completed["payload"]["flow"]["intercepted"], false);

    api.feed.send(FlowEvent::Updated(Arc::new(done.clone())));
    assert_eq!(next_json(&mut socket).await["type"], "flows/update");

    let unseen = Arc::new(sample_flow("b.example", "/", 200, 2));
    api.feed.send(FlowEvent::Completed(Arc::clone(&unseen)));
    let added = next_json(&mut socket).await;
    assert_eq!(
        added["type"], "flows/add",
        "a flow first seen complete is new"
    );
    assert_eq!(added["payload"]["flow"]["response"]["status_code"], 200);

    api.feed.send(FlowEvent::Removed(unseen.id));
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "flows/remove", "payload": unseen.id.to_string()})
    );

    api.feed.send(FlowEvent::Log(LogEntry::new(
        LogLevel::Error,
        "upstream gone",
    )));
    let log = next_json(&mut socket).await;
    assert_eq!(log["type"], "events/add");
    assert_eq!(log["payload"]["message"], "upstream gone");
    assert_eq!(log["payload"]["level"], "error");

    api.feed.send(FlowEvent::WebSocketMessage {
        flow: done.id,
        message: WebSocketMessage {
            from_client: true,
            opcode: WebSocketOpcode::Text,
            content: bytes::Bytes::from_static(b"hello"),
            size: 5,
            truncated: false,
            frames: 1,
            at: Timestamp::now(),
            fate: Default::default(),
        },
    });
    let message = next_json(&mut socket).await;
    assert_eq!(message["type"], "flows/websocketMessage");
    assert_eq!(message["payload"]["id"], done.id.to_string());
    assert_eq!(message["payload"]["message"]["content"], "hello");
    assert_eq!(message["payload"]["message"]["type"], "text");
}

#[tokio::test]
async fn a_flow_in_flight_when_the_socket_opened_completes_as_an_update() {
    let api = TestApi::start().await;
    let paused = intercepted_flow("a.example", 1);
    api.control.in_flight.lock().unwrap().push(paused.clone());
    let mut socket = connect(&api).await;
    api.feed
        .send(FlowEvent::Completed(Arc::new(paused.clone())));
    assert_eq!(next_json(&mut socket).await["type"], "flows/update");
}

#[tokio::test]
async fn a_cleared_session_is_a_reset() {
    let api = TestApi::start().await;
    let mut socket = connect(&api).await;
    api.feed.send(FlowEvent::Cleared { generation: 1 });
    assert_eq!(next_json(&mut socket).await, json!({"type": "flows/reset"}));
}

#[tokio::test]
async fn a_socket_that_fell_behind_is_told_to_reload() {
    let api = TestApi::start_with(Setup {
        feed: FlowFeed::with_limits(4, usize::MAX),
        ..Setup::default()
    })
    .await;
    let mut socket = connect(&api).await;
    // Sent without yielding: the socket's task cannot read in between, so the ring
    // (4 events) lets the first 6 go.
    for n in 0..10 {
        api.feed.send(FlowEvent::Log(LogEntry::new(
            LogLevel::Info,
            format!("line {n}"),
        )));
    }
    assert_eq!(next_json(&mut socket).await, json!({"type": "flows/reset"}));
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "events/reset"})
    );
    let next = next_json(&mut socket).await;
    assert_eq!(next["payload"]["message"], "line 6");
}

#[tokio::test]
async fn named_filters_get_their_matches_and_flow_messages_say_which_match() {
    let api = TestApi::start().await;
    let stored = [
        sample_flow("match.example", "/", 200, 1),
        sample_flow("other.example", "/", 200, 2),
    ];
    api.record(&stored);
    let mut socket = connect(&api).await;
    let register =
        json!({"type": "flows/updateFilter", "payload": {"name": "search", "expr": "~d match"}});
    socket
        .send(Message::text(register.to_string()))
        .await
        .unwrap();
    let update = next_json(&mut socket).await;
    assert_eq!(update["type"], "flows/filterUpdate");
    assert_eq!(update["payload"]["name"], "search");
    assert_eq!(
        update["payload"]["matching_flow_ids"],
        json!([stored[0].id.to_string()])
    );

    api.feed.send(FlowEvent::Completed(Arc::new(sample_flow(
        "match.example",
        "/new",
        200,
        3,
    ))));
    let added = next_json(&mut socket).await;
    assert_eq!(
        added["payload"]["matching_filters"],
        json!({"search": true})
    );
    api.feed.send(FlowEvent::Completed(Arc::new(sample_flow(
        "nope.example",
        "/",
        200,
        4,
    ))));
    let added = next_json(&mut socket).await;
    assert_eq!(
        added["payload"]["matching_filters"],
        json!({"search": false})
    );

    let bad = json!({"type": "flows/updateFilter", "payload": {"name": "broken", "expr": "~zz"}});
    socket.send(Message::text(bad.to_string())).await.unwrap();
    let refused = next_json(&mut socket).await;
    assert_eq!(refused["payload"]["matching_flow_ids"], Value::Null);
    assert!(refused["payload"]["error"]
        .as_str()
        .unwrap()
        .contains("~zz"));

    let drop = json!({"type": "flows/updateFilter", "payload": {"name": "search", "expr": ""}});
    socket.send(Message::text(drop.to_string())).await.unwrap();
    assert_eq!(
        next_json(&mut socket).await["payload"]["matching_flow_ids"],
        Value::Null
    );
    api.feed.send(FlowEvent::Completed(Arc::new(sample_flow(
        "match.example",
        "/",
        200,
        5,
    ))));
    assert_eq!(
        next_json(&mut socket).await["payload"]["matching_filters"],
        json!({})
    );
}

#[tokio::test]
async fn option_changes_made_through_the_api_are_announced() {
    let api = TestApi::start().await;
    let mut socket = connect(&api).await;
    let reply = api
        .send_json(Method::PUT, "/options", r#"{"intercept": "~q"}"#)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let update = next_json(&mut socket).await;
    assert_eq!(update["type"], "options/update");
    assert_eq!(update["payload"]["intercept"], "~q");
}

#[tokio::test]
async fn the_handshake_follows_the_same_rules_as_any_state_changing_request() {
    let api = TestApi::start().await;
    assert_eq!(
        refused_with(connect_with(&api, "", &[]).await),
        StatusCode::UNAUTHORIZED
    );
    let cross_origin = connect_with(
        &api,
        "",
        &[
            ("authorization", format!("Bearer {}", api.token)),
            ("origin", "http://evil.example".to_owned()),
        ],
    )
    .await;
    assert_eq!(refused_with(cross_origin), StatusCode::FORBIDDEN);

    // A browser: logged in with the URL, it has cookies but cannot set headers on a
    // WebSocket handshake, so it sends the XSRF token in the query.
    let login = api
        .send(
            api.anonymous(Method::GET, &format!("/?token={}", api.token)),
            "",
        )
        .await;
    let set_cookies = login.set_cookies();
    let cookies: Vec<&str> = set_cookies
        .iter()
        .map(|c| c.split(';').next().unwrap())
        .collect();
    let xsrf = cookies
        .iter()
        .find_map(|c| c.strip_prefix(&format!("periscope-xsrf-{}=", api.addr.port())))
        .unwrap()
        .to_owned();
    let origin = format!("http://{}", api.addr);
    let browser = |query: String| {
        let cookie = cookies.join("; ");
        let origin = origin.clone();
        let api = &api;
        async move { connect_with(api, &query, &[("cookie", cookie), ("origin", origin)]).await }
    };
    assert_eq!(
        refused_with(browser(String::new()).await),
        StatusCode::FORBIDDEN
    );
    let mut socket = browser(format!("?xsrf_token={xsrf}")).await.unwrap();
    api.feed.send(FlowEvent::Log(LogEntry::new(
        LogLevel::Info,
        "hello browser",
    )));
    assert_eq!(
        next_json(&mut socket).await["payload"]["message"],
        "hello browser"
    );
}

#[tokio::test]
async fn shutting_down_closes_the_sockets_and_the_server_ends() {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let api = TestApi::start_with(Setup {
        shutdown: Some(stopped),
        ..Setup::default()
    })
    .await;
    let mut socket = connect(&api).await;
    stop.send(()).unwrap();
    let close = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("a close frame within 5 s")
        .unwrap()
        .unwrap();
    match close {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("{other:?}"),
    }
    drop(socket);
    let ended = tokio::time::timeout(Duration::from_secs(5), api.server).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}

//! Changing flows and options: every action reaches the right `FlowControl` method.

use std::path::PathBuf;

use http::{header, Method, StatusCode};
use periscope_control::{
    CertificateChoice, Content, ControlError, FlowEdit, Injection, MessageDecision, OptionsUpdate,
    RequestEdit, ResponseEdit,
};
use periscope_model::FlowId;

use crate::support::{sample_flow, Call, Setup, TestApi};

#[tokio::test]
async fn a_mitmweb_shaped_edit_is_passed_through_and_the_edited_flow_returned() {
    let api = TestApi::start().await;
    let id = FlowId::new();
    let reply = api
        .send_json(
            Method::PUT,
            &format!("/flows/{id}"),
            r#"{"request": {"method": "POST", "headers": [["x-debug", "1"]], "content": "a=2"},
                "response": {"status_code": 418},
                "comment": "teapot", "marked": true}"#,
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let flow = reply.json();
    assert_eq!(flow["id"], id.to_string());
    assert_eq!(flow["comment"], "teapot");
    assert_eq!(flow["modified"], true);
    let expected = FlowEdit {
        request: Some(RequestEdit {
            method: Some("POST".into()),
            headers: Some(vec![("x-debug".into(), "1".into())]),
            content: Some(Content::Text("a=2".into())),
            ..RequestEdit::default()
        }),
        response: Some(ResponseEdit {
            status_code: Some(418),
            ..ResponseEdit::default()
        }),
        marked: Some(true),
        comment: Some("teapot".into()),
    };
    assert_eq!(
        api.control.calls(),
        vec![Call::Edit(id, Box::new(expected))]
    );
}

#[tokio::test]
async fn edits_must_be_json_of_the_known_fields() {
    let api = TestApi::start().await;
    let path = format!("/flows/{}", FlowId::new());
    let not_json = api
        .send(
            api.request(Method::PUT, &path)
                .header(header::CONTENT_TYPE, "text/plain"),
            r#"{"comment": "x"}"#,
        )
        .await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let unknown = api
        .send_json(Method::PUT, &path, r#"{"request": {"verb": "GET"}}"#)
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.error().contains("verb"), "{}", unknown.error());
    let malformed = api.send_json(Method::PUT, &path, "{").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(api.control.calls().is_empty());
}

#[tokio::test]
async fn mitmwebs_name_for_the_status_is_accepted() {
    let api = TestApi::start().await;
    let id = FlowId::new();
    let reply = api
        .send_json(
            Method::PUT,
            &format!("/flows/{id}"),
            r#"{"response": {"code": 404}}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.error());
    let Call::Edit(_, edit) = &api.control.calls()[0] else {
        panic!("{:?}", api.control.calls());
    };
    assert_eq!(edit.response.as_ref().unwrap().status_code, Some(404));
}

#[tokio::test]
async fn every_action_is_routed_to_its_control_method() {
    let api = TestApi::start().await;
    let id = FlowId::new();
    let new_id = api.control.new_id.to_string();
    let flow = |action: &str| format!("/flows/{id}/{action}");

    assert_eq!(api.post(&flow("resume")).await.status, StatusCode::OK);
    assert_eq!(api.post(&flow("kill")).await.status, StatusCode::OK);
    assert_eq!(api.post(&flow("replay")).await.json()["id"], new_id);
    assert_eq!(api.post(&flow("duplicate")).await.json()["id"], new_id);
    assert_eq!(api.post(&flow("revert")).await.json()["id"], id.to_string());
    let deleted = api
        .send(api.request(Method::DELETE, &format!("/flows/{id}")), "")
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(api.post("/flows/resume").await.json()["resumed"], 2);
    assert_eq!(api.post("/flows/kill").await.json()["killed"], 3);
    let certificate = api
        .send_json(
            Method::POST,
            &flow("client-certificate"),
            r#"{"certificate": "file", "path": "/tmp/me.pem"}"#,
        )
        .await;
    assert_eq!(certificate.status, StatusCode::OK);
    let decision = api
        .send_json(
            Method::POST,
            &flow("websocket/decision"),
            r#"{"action": "resume", "content": "changed"}"#,
        )
        .await;
    assert_eq!(decision.status, StatusCode::OK);
    let inject = api
        .send_json(
            Method::POST,
            &flow("websocket/inject"),
            r#"{"to_client": true, "content": {"base64": "AP8="}, "binary": true}"#,
        )
        .await;
    assert_eq!(inject.status, StatusCode::OK);

    assert_eq!(
        api.control.calls(),
        vec![
            Call::Resume(id),
            Call::Kill(id),
            Call::Replay(id),
            Call::Duplicate(id),
            Call::Revert(id),
            Call::Delete(id),
            Call::ResumeAll,
            Call::KillAll,
            Call::Certificate(
                id,
                CertificateChoice::File {
                    path: PathBuf::from("/tmp/me.pem")
                }
            ),
            Call::Decide(
                id,
                MessageDecision::Resume {
                    content: Some(Content::Text("changed".into()))
                }
            ),
            Call::Inject(
                id,
                Injection {
                    to_client: true,
                    content: Content::Binary {
                        base64: "AP8=".into()
                    },
                    binary: true,
                }
            ),
        ]
    );
}

#[tokio::test]
async fn control_errors_become_statuses_with_their_message() {
    let api = TestApi::start().await;
    let id = FlowId::new();
    *api.control.fail_with.lock().unwrap() = Some(ControlError::NotIntercepted(id));
    let reply = api.post(&format!("/flows/{id}/resume")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.error(), format!("flow {id} is not intercepted"));
    *api.control.fail_with.lock().unwrap() = Some(ControlError::NotFound(id));
    let reply = api.post(&format!("/flows/{id}/kill")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let bad_choice = api
        .send_json(
            Method::POST,
            &format!("/flows/{id}/client-certificate"),
            r#"{"certificate": "maybe"}"#,
        )
        .await;
    assert_eq!(bad_choice.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn options_round_trip_and_a_bad_filter_changes_nothing() {
    let api = TestApi::start().await;
    let initial = api.get("/options").await.json();
    assert_eq!(
        initial,
        serde_json::json!({"intercept": null, "intercept_tls": false})
    );
    let set = api
        .send_json(
            Method::PUT,
            "/options",
            r#"{"intercept": "~d example.com & ~q", "intercept_tls": true}"#,
        )
        .await;
    assert_eq!(set.status, StatusCode::OK);
    let expected = serde_json::json!({"intercept": "~d example.com & ~q", "intercept_tls": true});
    assert_eq!(set.json(), expected);
    assert_eq!(api.get("/options").await.json(), expected);

    let bad = api
        .send_json(
            Method::PUT,
            "/options",
            r#"{"intercept": "~d (", "intercept_tls": false}"#,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.error().starts_with("intercept: invalid filter"),
        "{}",
        bad.error()
    );
    assert_eq!(api.get("/options").await.json(), expected, "unchanged");
    let unknown = api
        .send_json(Method::PUT, "/options", r#"{"anticache": true}"#)
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        api.control
            .calls()
            .iter()
            .filter(|call| matches!(call, Call::SetOptions(_)))
            .count(),
        1,
        "refused updates never reach the proxy"
    );

    let cleared = api
        .send_json(Method::PUT, "/options", r#"{"intercept": ""}"#)
        .await;
    assert_eq!(cleared.json()["intercept"], serde_json::Value::Null);
    assert!(api
        .control
        .calls()
        .contains(&Call::SetOptions(OptionsUpdate {
            intercept: Some(String::new()),
            ..OptionsUpdate::default()
        })));
}

#[tokio::test]
async fn exports_go_through_the_exporter_and_say_when_there_is_none() {
    let api = TestApi::start().await;
    let flow = sample_flow("a.example", "/x", 0, 1);
    api.record(std::slice::from_ref(&flow));
    let curl = api.get(&format!("/flows/{}/export/curl", flow.id)).await;
    assert_eq!(curl.status, StatusCode::OK);
    assert_eq!(&curl.body[..], b"Curl GET https://a.example/x");
    assert_eq!(
        curl.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let raw = api
        .get(&format!("/flows/{}/export/raw-request", flow.id))
        .await;
    assert_eq!(&raw.body[..], b"RawRequest GET https://a.example/x");
    let no_response = api
        .get(&format!("/flows/{}/export/raw-response", flow.id))
        .await;
    assert_eq!(no_response.status, StatusCode::CONFLICT);
    let unknown = api.get(&format!("/flows/{}/export/wget", flow.id)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let without = TestApi::start_with(Setup {
        exporter: false,
        ..Setup::default()
    })
    .await;
    without.record(std::slice::from_ref(&flow));
    let reply = without
        .get(&format!("/flows/{}/export/curl", flow.id))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED);
}

#[tokio::test]
async fn clear_deletes_every_recorded_flow() {
    let api = TestApi::start().await;
    api.record(&[
        sample_flow("a.example", "/one", 200, 1),
        sample_flow("b.example", "/two", 200, 2),
    ]);
    let reply = api.post("/clear").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), serde_json::json!({}));
    assert!(
        matches!(api.control.calls()[..], [Call::Clear]),
        "cleared through the control, which also drops the flows not yet stored"
    );
    assert_eq!(api.get("/flows/count").await.json()["count"], 0);
    assert_eq!(api.store.count(None).unwrap(), 0);
    let read_only = api.get("/clear").await;
    assert_eq!(read_only.status, StatusCode::METHOD_NOT_ALLOWED);
}

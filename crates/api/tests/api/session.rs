//! Session files: the shown flows saved as one, and one opened into the session.

use http::{header, Method, StatusCode};

use crate::support::{sample_flow, TestApi};

#[tokio::test]
async fn the_matching_flows_are_saved_as_a_session_file_that_another_session_opens() {
    let api = TestApi::start().await;
    let flows = [
        sample_flow("a.example", "/one", 200, 1),
        sample_flow("b.example", "/two", 200, 2),
        sample_flow("a.example", "/three", 404, 3),
    ];
    api.record(&flows);

    let file = api.get("/flows/dump?filter=~d%20a.example").await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(
        file.header("content-type"),
        Some("application/octet-stream")
    );
    assert!(file
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));
    assert!(
        file.body.starts_with(b"SQLite format 3\0"),
        "a session file is the store's SQLite file"
    );

    let other = TestApi::start().await;
    let opened = other
        .send(
            other
                .request(Method::POST, "/flows/dump")
                .header(header::CONTENT_TYPE, "application/octet-stream"),
            file.body.clone(),
        )
        .await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.error());
    assert_eq!(opened.json()["added"], 2);
    let listed = other.get("/flows").await.json();
    let paths: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|flow| flow["request"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/one", "/three"]);
    assert_eq!(listed[0]["id"], flows[0].id.to_string());
}

#[tokio::test]
async fn what_is_not_a_session_file_is_refused_and_changes_nothing() {
    let api = TestApi::start().await;
    let as_json = api.send_json(Method::POST, "/flows/dump", "{}").await;
    assert_eq!(as_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let garbage = api
        .send(
            api.request(Method::POST, "/flows/dump")
                .header(header::CONTENT_TYPE, "application/octet-stream"),
            &b"not a database at all, not even close"[..],
        )
        .await;
    assert_eq!(
        garbage.status,
        StatusCode::BAD_REQUEST,
        "{}",
        garbage.error()
    );
    assert!(
        garbage.error().contains("not a session file"),
        "{}",
        garbage.error()
    );
    assert_eq!(api.store.count(None).unwrap(), 0);
}

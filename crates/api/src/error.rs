//! Errors as the API answers them: a status and `{"error": "..."}`, so a script can
//! show the message and a UI can tell the cases apart by status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use periscope_control::ControlError;
use periscope_flow::store::StoreError;

/// A request the API could not carry out, with the status that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: tells a client which credentials to send.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"periscope\""),
            );
        }
        response
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        let status = match &error {
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            // The flow exists but is not in a state where this makes sense (not
            // paused, already finished): the request was fine, the moment was not.
            ControlError::NotIntercepted(_) | ControlError::NotPossible { .. } => {
                StatusCode::CONFLICT
            }
            ControlError::InvalidEdit(_) | ControlError::InvalidOption(_) => {
                StatusCode::BAD_REQUEST
            }
            ControlError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::internal(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use periscope_model::FlowId;

    #[test]
    fn control_errors_map_to_the_status_a_client_can_act_on() {
        let id = FlowId::new();
        let status = |e: ControlError| ApiError::from(e).status;
        assert_eq!(status(ControlError::NotFound(id)), StatusCode::NOT_FOUND);
        assert_eq!(
            status(ControlError::NotIntercepted(id)),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(ControlError::InvalidOption("bad".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(ControlError::Store("disk".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}

//! The one error type of the HTTP API, rendered in MLflow's `{error_code, message}` shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// MLflow's error codes (the subset this server produces), with their HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidParameterValue,
    BadRequest,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    EndpointNotFound,
    PermissionDenied,
    Unauthenticated,
    InternalError,
    NotImplemented,
    TemporarilyUnavailable,
    /// A service behind the server (the artifact store) did not answer in time: 504.
    DeadlineExceeded,
    /// Too many requests (failed logins): 429.
    ResourceExhausted,
    /// A method the route does not serve: 405 (MLflow has no code of its own for it; the endpoint
    /// is not found for that method).
    MethodNotAllowed,
    /// A request body over `--max-request-body-bytes`: 413.
    RequestTooLarge,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidParameterValue => "INVALID_PARAMETER_VALUE",
            Self::BadRequest => "BAD_REQUEST",
            Self::ResourceAlreadyExists => "RESOURCE_ALREADY_EXISTS",
            Self::ResourceDoesNotExist => "RESOURCE_DOES_NOT_EXIST",
            Self::EndpointNotFound => "ENDPOINT_NOT_FOUND",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::InternalError => "INTERNAL_ERROR",
            Self::NotImplemented => "NOT_IMPLEMENTED",
            Self::TemporarilyUnavailable => "TEMPORARILY_UNAVAILABLE",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::MethodNotAllowed => "ENDPOINT_NOT_FOUND",
            Self::RequestTooLarge => "BAD_REQUEST",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            // MLflow's legacy mapping answers RESOURCE_ALREADY_EXISTS with 400, not 409.
            Self::InvalidParameterValue | Self::BadRequest | Self::ResourceAlreadyExists => {
                StatusCode::BAD_REQUEST
            }
            Self::ResourceDoesNotExist | Self::EndpointNotFound => StatusCode::NOT_FOUND,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Self::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// An error answered to an API caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A client mistake or a missing resource, told to the caller as is.
    #[error("{message}")]
    Client { code: ErrorCode, message: String },
    /// Anything else: logged with its chain, answered as a generic INTERNAL_ERROR.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Client {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterValue, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceDoesNotExist, message)
    }

    pub fn missing(param: &str) -> Self {
        Self::invalid(format!("Missing value for required parameter '{param}'."))
    }

    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(err))
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Client { code, .. } => *code,
            Self::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// MLflow's 503 for a database that cannot be reached (any store on it); the cause is logged,
    /// not sent.
    pub fn store_unavailable(err: &sqlx::Error) -> Self {
        tracing::warn!(error = %err, "backend store unavailable");
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            "The backend store is unavailable; retry shortly.",
        )
    }

    /// A bounded label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        self.code().as_str()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(message) => Self::new(ErrorCode::ResourceDoesNotExist, message),
            StoreError::AlreadyExists(message) => Self::new(ErrorCode::ResourceAlreadyExists, message),
            StoreError::Invalid(message) => Self::new(ErrorCode::InvalidParameterValue, message),
            StoreError::Database(err) if crate::db::is_unavailable(&err) => Self::store_unavailable(&err),
            StoreError::Database(err) if crate::db::is_value_too_long(&err) => Self::new(
                ErrorCode::InvalidParameterValue,
                "A value is longer than the backend store allows for its field.".to_owned(),
            ),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let message = match &self {
            Self::Client { message, .. } => message.clone(),
            Self::Internal(source) => {
                tracing::error!(error = %source, chain = ?source, "internal error while serving a request");
                "Internal server error".to_owned()
            }
        };
        let body = serde_json::json!({ "error_code": code.as_str(), "message": message });
        (code.status(), axum::Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A command-line or configuration-file setting that cannot be accepted (exit status 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

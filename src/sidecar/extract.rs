//! Extractors that turn a request into checked values before a handler runs: the bearer
//! token (a handler taking [`Claims`] is protected by its signature), JSON bodies, path IDs
//! and query strings — each failure mapped to an [`ApiError`].

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::SidecarState;
use super::error::ApiError;
use crate::auth::{AuthError, Claims, Scope};

impl FromRequestParts<SidecarState> for Claims {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SidecarState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError::Invalid("expected `Authorization: Bearer <token>`".into()))?;
        Ok(state.keys().verify(token)?)
    }
}

/// Per-route scope check: `claims.require(Scope::ResultsWrite)?`.
pub trait RequireScope {
    fn require(&self, scope: Scope) -> Result<(), ApiError>;
}

impl RequireScope for Claims {
    fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope).into())
        }
    }
}

/// A JSON body: 415 without `application/json`, 413 over the limit, 400 when malformed.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<SidecarState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SidecarState) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::NotJson),
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::TooLarge {
                    limit: state.body_limit(),
                })
            }
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::BadRequest(e.body_text())),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::BadRequest(e.body_text())),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// Path parameters parsed into validated ID newtypes (400 `invalid_id` otherwise).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                // The newtypes' own message names the parameter and the allowed characters.
                Err(ApiError::InvalidPath(e.into_kind().to_string()))
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// A query string (400 when malformed).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::BadRequest(e.body_text()))
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

//! `POST /v1/logs` and `POST /v1/metrics`: Claude Code's OpenTelemetry export (OTLP/HTTP,
//! protobuf or JSON, optionally gzip) behind the session token. The `claude_code.api_request`
//! log records are decoded into [`CostRecord`]s and forwarded to the sidecar, which stores them.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as Any};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;

use super::DaemonState;
use crate::api::cost::{CostRecord, CostRecords, CostRecordsStored};
use crate::client::{ServiceError, SidecarClient};
use crate::server::error_response;

/// Largest request body accepted as sent (compressed or not).
pub const MAX_OTLP_BODY: usize = 4 * 1024 * 1024;
/// Largest body after gzip decompression: a bound on what a small bomb can expand to.
pub const MAX_DECOMPRESSED: usize = 16 * 1024 * 1024;
/// Records per forward to the sidecar: well under its body limit (1 MiB by default) with
/// every field at its longest.
pub const FORWARD_BATCH: usize = 400;
/// Each forward's limit: the exporter retries a failed export, so a slow sidecar fails fast.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The log record Claude Code writes once per model request.
pub const API_REQUEST: &str = "claude_code.api_request";
/// Its `event.name` attribute.
const API_REQUEST_EVENT: &str = "api_request";

/// How the body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// Why a body was refused; nothing of it is stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OtlpError {
    #[error(
        "Content-Type {0:?} is not OTLP/HTTP; send application/x-protobuf or application/json (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf or http/json)"
    )]
    MediaType(String),
    #[error("Content-Encoding {0:?} is not supported; send gzip or no encoding")]
    ContentEncoding(String),
    #[error("the body decompresses to more than {MAX_DECOMPRESSED} bytes")]
    TooLarge,
    #[error("the body is not a valid OTLP {what} export: {cause}")]
    Garbage { what: &'static str, cause: String },
}

impl OtlpError {
    fn status(&self) -> StatusCode {
        match self {
            OtlpError::MediaType(_) | OtlpError::ContentEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            OtlpError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            OtlpError::Garbage { .. } => StatusCode::BAD_REQUEST,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            OtlpError::MediaType(_) | OtlpError::ContentEncoding(_) => "unsupported_media_type",
            OtlpError::TooLarge => "payload_too_large",
            OtlpError::Garbage { .. } => "bad_request",
        }
    }

    fn into_response(self) -> Response {
        error_response(self.status(), self.code(), self.to_string())
    }
}

/// The encoding the headers name and the body, gunzipped when it says gzip.
pub fn unwrap_body(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
) -> Result<(Encoding, Vec<u8>), OtlpError> {
    let ct = content_type.unwrap_or("").trim();
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let encoding = match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        _ => {
            return Err(OtlpError::MediaType(
                crate::api::inert::line(ct).into_owned(),
            ));
        }
    };
    let bytes = match content_encoding.map(str::trim).unwrap_or("") {
        "" | "identity" => body.to_vec(),
        e if e.eq_ignore_ascii_case("gzip") => gunzip(body)?,
        other => {
            return Err(OtlpError::ContentEncoding(
                crate::api::inert::line(other).into_owned(),
            ));
        }
    };
    Ok((encoding, bytes))
}

fn gunzip(body: &[u8]) -> Result<Vec<u8>, OtlpError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_DECOMPRESSED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| OtlpError::Garbage {
            what: "gzip",
            cause: e.to_string(),
        })?;
    if out.len() > MAX_DECOMPRESSED {
        return Err(OtlpError::TooLarge);
    }
    Ok(out)
}

fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    what: &'static str,
    encoding: Encoding,
    bytes: &[u8],
) -> Result<T, OtlpError> {
    let garbage = |cause: String| OtlpError::Garbage { what, cause };
    match encoding {
        Encoding::Protobuf => T::decode(bytes).map_err(|e| garbage(e.to_string())),
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| garbage(e.to_string())),
    }
}

pub fn decode_logs(
    encoding: Encoding,
    bytes: &[u8],
) -> Result<ExportLogsServiceRequest, OtlpError> {
    decode("logs", encoding, bytes)
}

pub fn decode_metrics(
    encoding: Encoding,
    bytes: &[u8],
) -> Result<ExportMetricsServiceRequest, OtlpError> {
    decode("metrics", encoding, bytes)
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Any> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn text(v: &Any) -> Option<String> {
    match v {
        Any::StringValue(s) => Some(s.clone()),
        Any::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn count(v: &Any) -> Option<u64> {
    match v {
        Any::IntValue(i) => u64::try_from(*i).ok(),
        Any::DoubleValue(d) if d.is_finite() && *d >= 0.0 => Some(d.round() as u64),
        Any::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn dollars(v: &Any) -> Option<f64> {
    match v {
        Any::DoubleValue(d) => Some(*d),
        Any::IntValue(i) => Some(*i as f64),
        Any::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether a log record is Claude Code's api_request event.
fn is_api_request(r: &LogRecord) -> bool {
    let body_says = matches!(
        r.body.as_ref().and_then(|b| b.value.as_ref()),
        Some(Any::StringValue(s)) if s == API_REQUEST
    );
    let name_says = matches!(
        attr(&r.attributes, "event.name"),
        Some(Any::StringValue(s)) if s == API_REQUEST_EVENT || s == API_REQUEST
    );
    body_says || name_says || r.event_name == API_REQUEST
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One api_request log record as a [`CostRecord`]; `None` without `session.id` (it cannot be
/// joined or keyed).
fn cost_record(r: &LogRecord, resource: &[KeyValue]) -> Option<CostRecord> {
    let get = |k: &str| attr(&r.attributes, k).or_else(|| attr(resource, k));
    let text_of = |k: &str| get(k).and_then(text).filter(|s| !s.is_empty());
    let count_of = |k: &str| get(k).and_then(count).unwrap_or(0);
    let session_id = text_of("session.id")?;
    let prompt_id = text_of("prompt.id");
    let model = text_of("model").unwrap_or_else(|| "unknown".into());
    let nanos = if r.time_unix_nano > 0 {
        r.time_unix_nano
    } else {
        r.observed_time_unix_nano
    };
    // `event.sequence` counts a session's events: with the session, a stable identity
    // across retried exports. Without it, what the record says about itself must do.
    let key = match text_of("event.sequence") {
        Some(seq) => format!("{session_id}#{seq}"),
        None => format!(
            "{session_id}#{}#{nanos}#{model}",
            prompt_id.as_deref().unwrap_or("-")
        ),
    };
    Some(CostRecord {
        key,
        session_id,
        prompt_id,
        agent_id: text_of("agent_id"),
        query_source: text_of("query_source"),
        model,
        input_tokens: count_of("input_tokens"),
        output_tokens: count_of("output_tokens"),
        cache_read_tokens: count_of("cache_read_tokens"),
        cache_creation_tokens: count_of("cache_creation_tokens"),
        cost_usd: get("cost_usd").and_then(dollars).unwrap_or(0.0),
        duration_ms: count_of("duration_ms"),
        timestamp_ms: if nanos > 0 {
            nanos / 1_000_000
        } else {
            now_ms()
        },
    })
}

/// The api_request records of one export, and how many were dropped: no `session.id`, or a
/// field the sidecar would refuse (one bad record must not lose the export's others).
pub fn api_requests(req: &ExportLogsServiceRequest) -> (Vec<CostRecord>, usize) {
    let mut out = Vec::new();
    let mut unkeyed = 0;
    for rl in &req.resource_logs {
        let resource = rl
            .resource
            .as_ref()
            .map_or(&[][..], |r| r.attributes.as_slice());
        for sl in &rl.scope_logs {
            for r in sl.log_records.iter().filter(|r| is_api_request(r)) {
                match cost_record(r, resource).map(|c| (crate::sidecar::cost::check(&c), c)) {
                    Some((Ok(()), c)) => out.push(c),
                    Some((Err(why), c)) => {
                        tracing::warn!(key = %crate::api::inert::line(&c.key), why, "OTLP: dropping an api_request record");
                        unkeyed += 1;
                    }
                    None => unkeyed += 1,
                }
            }
        }
    }
    (out, unkeyed)
}

/// The metrics and data points of one export.
pub fn metric_points(req: &ExportMetricsServiceRequest) -> (usize, usize) {
    let mut metrics = 0;
    let mut points = 0;
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                metrics += 1;
                points += match &m.data {
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                    None => 0,
                };
            }
        }
    }
    (metrics, points)
}

/// The verified bearer token, or the 401/503 answer.
fn authorize(state: &DaemonState, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let Some(keys) = state.inner.keys.clone() else {
        return Err(Box::new(error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this daemon has no signing key for tokens; restart it: `cco daemon restart`",
        )));
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(Box::new(error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token: set OTEL_EXPORTER_OTLP_HEADERS=\"Authorization=Bearer <token>\" (the launcher does), or start Claude with `cco`",
        )));
    };
    match keys.verify(token) {
        Ok(_) => Ok(token.to_string()),
        Err(e) => Err(Box::new(error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("{e}; start a new session with `cco`"),
        ))),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The OTLP success answer in the request's encoding: `{}` or the empty protobuf message.
fn success(encoding: Encoding, empty_protobuf: Vec<u8>) -> Response {
    match encoding {
        Encoding::Json => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response(),
        Encoding::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            empty_protobuf,
        )
            .into_response(),
    }
}

/// Stores `records` through the sidecar, [`FORWARD_BATCH`] at a time.
fn forward(
    port: u16,
    token: String,
    records: Vec<CostRecord>,
) -> Result<CostRecordsStored, ServiceError> {
    let client = SidecarClient::new(port)
        .with_token(token)
        .with_timeout(FORWARD_TIMEOUT);
    let mut total = CostRecordsStored::default();
    for chunk in records.chunks(FORWARD_BATCH) {
        let got = client.store_cost_records(&CostRecords {
            records: chunk.to_vec(),
        })?;
        total.stored += got.stored;
        total.duplicates += got.duplicates;
    }
    Ok(total)
}

fn forward_failed(port: u16, e: ServiceError) -> Response {
    match e.status() {
        // The sidecar refused the records themselves: the export will not do better retried.
        Some(status @ (400 | 401 | 403 | 413)) => error_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            e.code().unwrap_or("bad_request"),
            e.to_string(),
        ),
        // A status the exporter retries on (OTLP/HTTP: 502, 503, 504).
        _ => {
            tracing::warn!(error = %e, "OTLP: cannot store cost records in the sidecar");
            error_response(
                StatusCode::BAD_GATEWAY,
                "sidecar_unavailable",
                format!(
                    "the sidecar on 127.0.0.1:{port} did not store the cost records; check it with `cco health`, start it with `cco sidecar start`"
                ),
            )
        }
    }
}

/// `POST /v1/logs`.
pub async fn logs(State(state): State<DaemonState>, headers: HeaderMap, body: Bytes) -> Response {
    let token = match authorize(&state, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let decoded = unwrap_body(
        header_str(&headers, header::CONTENT_TYPE),
        header_str(&headers, header::CONTENT_ENCODING),
        &body,
    )
    .and_then(|(enc, bytes)| decode_logs(enc, &bytes).map(|req| (enc, req)));
    let (encoding, request) = match decoded {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let (records, unkeyed) = api_requests(&request);
    if unkeyed > 0 {
        tracing::warn!(
            dropped = unkeyed,
            "OTLP: api_request records without session.id or with invalid fields were dropped"
        );
    }
    if !records.is_empty() {
        let port = state.inner.config.sidecar.port;
        let work = tokio::task::spawn_blocking(move || forward(port, token, records));
        match work.await {
            Ok(Ok(stored)) => tracing::debug!(
                stored = stored.stored,
                duplicates = stored.duplicates,
                "OTLP: cost records stored"
            ),
            Ok(Err(e)) => return forward_failed(port, e),
            Err(e) => {
                tracing::warn!(error = %e, "OTLP: the forwarding task failed");
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see `cco logs`",
                );
            }
        }
    }
    success(
        encoding,
        ExportLogsServiceResponse::default().encode_to_vec(),
    )
}

/// `POST /v1/metrics`: decoded (garbage is refused) and acknowledged, not stored — Claude's
/// cost and token metrics aggregate the same api_request events the logs carry one by one.
pub async fn metrics(
    State(state): State<DaemonState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    let decoded = unwrap_body(
        header_str(&headers, header::CONTENT_TYPE),
        header_str(&headers, header::CONTENT_ENCODING),
        &body,
    )
    .and_then(|(enc, bytes)| decode_metrics(enc, &bytes).map(|req| (enc, req)));
    match decoded {
        Ok((encoding, request)) => {
            let (metrics, points) = metric_points(&request);
            tracing::debug!(metrics, points, "OTLP: metrics acknowledged");
            success(
                encoding,
                ExportMetricsServiceResponse::default().encode_to_vec(),
            )
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    //! Decoding what Claude Code sends: protobuf, JSON (as the pinned CLI writes it), gzip,
    //! and garbage.
    use std::io::Write;

    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use super::*;

    fn kv(key: &str, v: Any) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..KeyValue::default()
        }
    }

    fn s(v: &str) -> Any {
        Any::StringValue(v.into())
    }

    /// An api_request record as the pinned CLI writes it, `agent` set for a sub-agent.
    pub fn api_request(session: &str, seq: i64, agent: Option<&str>, cost: f64) -> LogRecord {
        let mut attributes = vec![
            kv("session.id", s(session)),
            kv("event.name", s("api_request")),
            kv("event.sequence", Any::IntValue(seq)),
            kv("prompt.id", s("p-1")),
            kv("model", s("claude-test")),
            kv("input_tokens", Any::IntValue(11)),
            kv("output_tokens", Any::IntValue(7)),
            kv("cache_read_tokens", Any::IntValue(5)),
            kv("cache_creation_tokens", Any::IntValue(3)),
            kv("cost_usd", Any::DoubleValue(cost)),
            kv("duration_ms", Any::IntValue(36)),
        ];
        if let Some(a) = agent {
            attributes.push(kv("agent_id", s(a)));
            attributes.push(kv("query_source", s("agent:custom")));
        }
        LogRecord {
            time_unix_nano: 1_796_143_858_986_000_000,
            body: Some(AnyValue {
                value: Some(s(API_REQUEST)),
            }),
            attributes,
            ..LogRecord::default()
        }
    }

    pub fn export(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("claude-code"))],
                    ..Resource::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
    }

    /// The shape the pinned CLI (2.1.332) posts with `http/json`, trimmed: camelCase, times
    /// as strings, `intValue` as a number, one event that is not an api_request.
    const CLAUDE_JSON: &str = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"claude-code"}}],"droppedAttributesCount":0},"scopeLogs":[{"scope":{"name":"com.anthropic.claude_code.events","version":"2.1.332"},"logRecords":[
      {"timeUnixNano":"1796143858872000000","observedTimeUnixNano":"1796143858872000000","body":{"stringValue":"claude_code.user_prompt"},"attributes":[{"key":"session.id","value":{"stringValue":"eea96a46"}},{"key":"event.name","value":{"stringValue":"user_prompt"}},{"key":"event.sequence","value":{"intValue":4}}],"droppedAttributesCount":0},
      {"timeUnixNano":"1796143858986000000","observedTimeUnixNano":"1796143858986000000","body":{"stringValue":"claude_code.api_request"},"attributes":[{"key":"session.id","value":{"stringValue":"eea96a46"}},{"key":"event.name","value":{"stringValue":"api_request"}},{"key":"event.sequence","value":{"intValue":5}},{"key":"prompt.id","value":{"stringValue":"ff76142c"}},{"key":"model","value":{"stringValue":"claude-opus-5-5"}},{"key":"input_tokens","value":{"intValue":11}},{"key":"output_tokens","value":{"intValue":"7"}},{"key":"cache_read_tokens","value":{"intValue":5}},{"key":"cache_creation_tokens","value":{"intValue":3}},{"key":"cost_usd","value":{"doubleValue":0.00019999999999999998}},{"key":"duration_ms","value":{"intValue":36}},{"key":"query_source","value":{"stringValue":"sdk"}}],"droppedAttributesCount":0,"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}]}]}]}"#;

    #[test]
    fn protobuf_yields_the_api_requests_with_their_agent() {
        let req = export(vec![
            api_request("s-1", 5, None, 0.25),
            api_request("s-1", 6, Some("agent-7"), 0.5),
        ]);
        let bytes = req.encode_to_vec();
        let (enc, body) = unwrap_body(Some("application/x-protobuf"), None, &bytes).unwrap();
        assert_eq!(enc, Encoding::Protobuf);
        let (records, unkeyed) = api_requests(&decode_logs(enc, &body).unwrap());
        assert_eq!(unkeyed, 0);
        assert_eq!(records.len(), 2);
        let main = &records[0];
        assert_eq!(main.key, "s-1#5");
        assert_eq!(main.agent_id, None);
        assert_eq!(
            (
                main.input_tokens,
                main.output_tokens,
                main.cache_read_tokens
            ),
            (11, 7, 5)
        );
        assert_eq!(main.cache_creation_tokens, 3);
        assert_eq!(main.cost_usd, 0.25);
        assert_eq!(main.timestamp_ms, 1_796_143_858_986);
        assert_eq!(records[1].agent_id.as_deref(), Some("agent-7"));
        assert_eq!(records[1].query_source.as_deref(), Some("agent:custom"));
    }

    #[test]
    fn claudes_json_decodes_with_hex_ids_and_string_numbers() {
        let (enc, body) = unwrap_body(
            Some("application/json; charset=utf-8"),
            None,
            CLAUDE_JSON.as_bytes(),
        )
        .unwrap();
        assert_eq!(enc, Encoding::Json);
        let req = decode_logs(enc, &body).unwrap();
        let record = &req.resource_logs[0].scope_logs[0].log_records[1];
        assert_eq!(record.trace_id.len(), 16, "traceId is hex, not base64");
        let (records, _) = api_requests(&req);
        assert_eq!(records.len(), 1, "only the api_request is kept");
        let r = &records[0];
        assert_eq!(r.key, "eea96a46#5");
        assert_eq!(r.model, "claude-opus-5-5");
        assert_eq!(r.prompt_id.as_deref(), Some("ff76142c"));
        assert_eq!((r.input_tokens, r.output_tokens), (11, 7));
        assert!((r.cost_usd - 0.0002).abs() < 1e-12);
        assert_eq!(r.duration_ms, 36);
    }

    #[test]
    fn gzip_is_unwrapped_and_bounded() {
        let bytes = export(vec![api_request("s-1", 1, None, 0.1)]).encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        let gz = gz.finish().unwrap();
        let (enc, body) = unwrap_body(Some("application/x-protobuf"), Some("gzip"), &gz).unwrap();
        assert_eq!(body, bytes);
        assert_eq!(api_requests(&decode_logs(enc, &body).unwrap()).0.len(), 1);

        // A bomb: small compressed, over the limit expanded.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; MAX_DECOMPRESSED + 1]).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < MAX_OTLP_BODY);
        assert_eq!(
            unwrap_body(Some("application/x-protobuf"), Some("gzip"), &bomb),
            Err(OtlpError::TooLarge)
        );
        // Not gzip at all.
        assert!(matches!(
            unwrap_body(Some("application/x-protobuf"), Some("gzip"), b"plain"),
            Err(OtlpError::Garbage { .. })
        ));
    }

    #[test]
    fn garbage_and_foreign_media_are_refused() {
        let garbage = b"\xff\xff\xff\xff not protobuf";
        let e = decode_logs(Encoding::Protobuf, garbage).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = decode_logs(Encoding::Json, b"{\"resourceLogs\": 7}").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(decode_metrics(Encoding::Json, b"[").is_err());
        let e = unwrap_body(Some("text/plain"), None, b"").unwrap_err();
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(e.to_string().contains("http/protobuf"), "{e}");
        let e = unwrap_body(Some("application/json"), Some("br"), b"").unwrap_err();
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn a_record_without_sequence_is_keyed_by_what_it_says_and_one_without_session_dropped() {
        let mut r = api_request("s-2", 1, None, 0.1);
        r.attributes.retain(|kv| kv.key != "event.sequence");
        let mut orphan = api_request("x", 1, None, 0.1);
        orphan.attributes.retain(|kv| kv.key != "session.id");
        let mut huge = api_request("s-3", 1, None, 0.1);
        huge.attributes.push(kv("agent_id", s(&"a".repeat(4096))));
        let (records, unkeyed) = api_requests(&export(vec![r, orphan, huge]));
        assert_eq!(
            unkeyed, 2,
            "no session, and an agent id the sidecar would refuse"
        );
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].key, "s-2#p-1#1796143858986000000#claude-test");
    }

    #[test]
    fn metrics_are_counted() {
        let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"claude_code.cost.usage","unit":"USD","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{"asDouble":0.0002,"timeUnixNano":"1796143858986000000"}]}}]}]}]}"#;
        let req = decode_metrics(Encoding::Json, json.as_bytes()).unwrap();
        assert_eq!(metric_points(&req), (1, 1));
    }

    mod route {
        //! The routes in process, through `oneshot`: no socket, no sidecar.
        use std::sync::Arc;

        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;

        use super::super::*;
        use crate::auth::{Keys, TokenSpec};
        use crate::config::Config;
        use crate::listen::Origin;
        use crate::paths::Paths;
        use crate::secret::Secret;
        use crate::server::{Stopper, Tracker};

        const PORT: u16 = 3997;

        fn keys(byte: u8) -> Keys {
            Keys::new(&Secret::from_bytes(vec![byte; 32])).unwrap()
        }

        fn state(with_keys: bool) -> DaemonState {
            let paths = Paths {
                config_file: "/nonexistent/cco/daemon.toml".into(),
                runtime_dir: "/nonexistent/run/cco".into(),
                data_dir: "/nonexistent/.cco".into(),
            };
            let s = DaemonState::new(
                Config::default(),
                paths,
                Origin::Bound,
                PORT,
                1,
                Arc::new(Tracker::default()),
                Stopper::default().subscribe(),
            );
            if with_keys { s.with_keys(keys(7)) } else { s }
        }

        fn token(byte: u8) -> String {
            keys(byte)
                .mint(&TokenSpec::session("t", Duration::from_secs(60)))
                .0
        }

        async fn post(
            state: DaemonState,
            path: &str,
            token: Option<&str>,
            body: Vec<u8>,
        ) -> (StatusCode, Vec<u8>) {
            let mut req = Request::builder()
                .method("POST")
                .uri(path)
                .header(header::HOST, format!("127.0.0.1:{PORT}"))
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(t) = token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let resp = crate::daemon::router(state)
                .oneshot(req.body(Body::from(body)).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, bytes.to_vec())
        }

        #[tokio::test]
        async fn only_this_installations_token_is_accepted() {
            let empty = b"{}".to_vec();
            for path in ["/v1/logs", "/v1/metrics"] {
                let (status, body) = post(state(true), path, Some(&token(7)), empty.clone()).await;
                assert_eq!(
                    (status, body.as_slice()),
                    (StatusCode::OK, &b"{}"[..]),
                    "{path}"
                );
                let (status, _) = post(state(true), path, Some(&token(9)), empty.clone()).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
                let (status, body) = post(state(true), path, None, empty.clone()).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
                let text = String::from_utf8_lossy(&body);
                assert!(text.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{text}");
                let (status, _) = post(state(false), path, Some(&token(7)), empty.clone()).await;
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
            }
        }

        #[tokio::test]
        async fn a_body_over_the_limit_is_refused() {
            let big = vec![b' '; MAX_OTLP_BODY + 1];
            let (status, _) = post(state(true), "/v1/logs", Some(&token(7)), big).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        }
    }
}

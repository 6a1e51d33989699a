//! Counting: every AWS request that is really sent, and the error of every sent
//! attempt that failed, by service, operation and a bounded error code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextMut, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

use crate::api::error_code_label;
use crate::metrics::AwsCallCounters;

/// Counts AWS requests and their errors. Before each attempt is handed to the HTTP
/// client it gets a [`SendProbe`]; the rate-limited connector counts the request when
/// it really goes out (so an attempt that timed out while waiting for the limiter, or
/// failed before sending, is not a request), and this interceptor counts the error of
/// an attempt that was sent.
#[derive(Debug, Clone)]
pub(super) struct CountingInterceptor {
    pub(super) service_code: &'static str,
    pub(super) counters: AwsCallCounters,
}

/// Travels with one attempt's request to the connector.
#[derive(Debug, Clone)]
pub(super) struct SendProbe {
    service_code: &'static str,
    operation: Arc<str>,
    counters: AwsCallCounters,
    sent: Arc<AtomicBool>,
}

impl SendProbe {
    pub(super) fn mark_sent(&self) {
        self.sent.store(true, Ordering::SeqCst);
        self.counters.request(self.service_code, &self.operation);
    }
}

/// The same attempt's probe, kept in the config bag for the interceptor to read back.
#[derive(Debug, Clone)]
struct AttemptProbe(SendProbe);

impl Storable for AttemptProbe {
    type Storer = StoreReplace<Self>;
}

impl Intercept for CountingInterceptor {
    fn name(&self) -> &'static str {
        "headroom::CountingInterceptor"
    }

    fn modify_before_transmit(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation: Arc<str> = cfg
            .load::<Metadata>()
            .map_or("unknown", |m| m.name())
            .into();
        let probe = SendProbe {
            service_code: self.service_code,
            operation,
            counters: self.counters.clone(),
            sent: Arc::new(AtomicBool::new(false)),
        };
        ctx.request_mut().add_extension(probe.clone());
        cfg.interceptor_state().store_put(AttemptProbe(probe));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        ctx: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(AttemptProbe(probe)) = cfg.load::<AttemptProbe>().cloned() else {
            return Ok(());
        };
        if !probe.sent.load(Ordering::SeqCst) {
            return Ok(());
        }
        let error = ctx.output_or_error().and_then(|o| o.err());
        let code = match (error, ctx.response()) {
            (Some(e), _) if e.is_timeout_error() => Some("timeout"),
            (_, Some(resp)) if !resp.status().is_success() || error.is_some() => {
                Some(response_error_code(
                    resp.status().as_u16(),
                    resp.headers()
                        .get("x-amzn-query-error")
                        .or_else(|| resp.headers().get("x-amzn-errortype")),
                    resp.body().bytes(),
                ))
            }
            (_, Some(_)) | (None, None) => None,
            (Some(e), None) => Some(match e.as_connector_error() {
                Some(c) if c.is_timeout() => "timeout",
                Some(c) if c.is_io() => "io",
                _ => "dispatch",
            }),
        };
        if let Some(code) = code {
            self.counters
                .error(self.service_code, &probe.operation, code);
        }
        Ok(())
    }
}

/// The AWS error code of a failed response, as a bounded label. `header` is the
/// query-compatible services' `x-amzn-query-error` (`Code;Sender`: CloudWatch, whose
/// CBOR body the code is not read from), else `x-amzn-errortype` (`Code:uri`).
fn response_error_code(status: u16, header: Option<&str>, body: Option<&[u8]>) -> &'static str {
    let from_header = header.map(|h| h.split([':', ';']).next().unwrap_or(h).trim().to_string());
    let code = from_header
        .filter(|c| !c.is_empty())
        .or_else(|| body.and_then(code_from_body));
    match code {
        Some(c) => match error_code_label(&c) {
            "other" if (200..300).contains(&status) => "malformed_response",
            label => label,
        },
        None if status >= 500 => "http_5xx",
        None if status >= 400 => "http_4xx",
        None => "malformed_response",
    }
}

/// Reads the error code from a JSON (`__type` or `code`) or XML (`<Code>`) error body.
fn code_from_body(body: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let t = v
            .get("__type")
            .or_else(|| v.get("code"))
            .or_else(|| v.get("Code"))?;
        let t = t.as_str()?;
        // awsJson may send "prefix#Code".
        return Some(t.rsplit('#').next().unwrap_or(t).to_string());
    }
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    Some(text[start..end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_come_from_header_json_or_xml() {
        assert_eq!(
            response_error_code(
                400,
                Some("ThrottlingException:http://internal.amazon.com/"),
                None
            ),
            "ThrottlingException"
        );
        assert_eq!(
            response_error_code(
                400,
                None,
                Some(br#"{"__type":"com.amazon#AccessDeniedException","message":"no"}"#)
            ),
            "AccessDeniedException"
        );
        assert_eq!(
            response_error_code(
                503,
                None,
                Some(b"<Error><Code>SlowDown</Code><Message>x</Message></Error>")
            ),
            "SlowDown"
        );
        assert_eq!(
            response_error_code(502, None, Some(b"<html>bad gateway</html>")),
            "http_5xx"
        );
        assert_eq!(
            response_error_code(403, Some("AccessDenied;Sender"), Some(b"\xa2")),
            "AccessDenied"
        );
        assert_eq!(response_error_code(403, None, None), "http_4xx");
        // An unknown code never becomes a label of its own.
        assert_eq!(
            response_error_code(400, Some("SomethingNew"), None),
            "other"
        );
        assert_eq!(
            response_error_code(200, None, Some(b"{\"Parameters\": 7}")),
            "malformed_response"
        );
    }
}

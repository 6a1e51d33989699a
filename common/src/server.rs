//! The HTTP server: `/metrics` (or the configured path), `/healthz`, `/readyz` and a
//! landing page. Rendering reads the snapshot; no handler calls AWS.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::auth::BasicAuth;
use crate::metrics::Metrics;
use crate::reload::Trigger;
use crate::snapshot::Snapshot;

#[derive(Clone)]
pub(crate) struct AppState {
    pub name: &'static str,
    pub version: &'static str,
    pub telemetry_path: String,
    pub snapshot: Arc<Snapshot>,
    pub metrics: Metrics,
    pub auth: Arc<BasicAuth>,
    /// Where `POST /-/reload` goes; none in tests that do not reload.
    pub reload: Option<Trigger>,
}

/// The router; tests drive it in-process.
pub(crate) fn app(state: AppState) -> Router {
    let protected = Router::new()
        .route("/", get(landing))
        .route(&state.telemetry_path, get(metrics))
        // As Prometheus and blackbox_exporter: POST or PUT; behind basic auth when set.
        .route("/-/reload", post(reload).put(reload))
        .route_layer(middleware::from_fn_with_state(state.clone(), basic_auth));
    // Probes stay open so that kubelets need no credentials.
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(state)
}

/// The exposition, as rendered when each entry was published: the body is the
/// rendered pieces themselves (shared, not copied), gzipped when the client accepts it.
async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let gzip = accepts_gzip(&headers);
    let body = s.metrics.scrape(&s.snapshot, SystemTime::now(), gzip);
    let len = body.len();
    let mut response = Response::new(Body::from_stream(futures::stream::iter(
        body.chunks
            .into_iter()
            .map(Ok::<_, std::convert::Infallible>),
    )));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if body.gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// Whether `Accept-Encoding` lists gzip (or `*`) with a weight above zero.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.snapshot.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the first refresh of every target\n",
        )
            .into_response()
    }
}

/// Reads the config file again; 200 when the new one is in force, 500 with the reason
/// when it was refused (the running one stays).
async fn reload(State(s): State<AppState>) -> Response {
    let Some(trigger) = s.reload else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "reloading is not available\n",
        )
            .into_response();
    };
    match trigger.reload().await {
        Ok(c) => (
            StatusCode::OK,
            format!(
                "configuration reloaded; refresh tasks: {} kept, {} restarted, {} started, {} stopped\n",
                c.kept, c.restarted, c.started, c.stopped
            ),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload the configuration: {e}\n"),
        )
            .into_response(),
    }
}

async fn landing(State(s): State<AppState>) -> Html<String> {
    let path = html_escape(&s.telemetry_path);
    Html(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{name}</title></head>\n<body>\n\
         <h1>{name}</h1>\n<p>Version {version}. AWS quota usage and limits for Prometheus, refreshed in the background.</p>\n\
         <ul>\n<li><a href=\"{path}\">Metrics</a></li>\n<li><a href=\"/healthz\">Health</a></li>\n<li><a href=\"/readyz\">Readiness</a></li>\n</ul>\n\
         </body>\n</html>\n",
        name = s.name,
        version = s.version,
    ))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn basic_auth(
    State(s): State<AppState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if s.auth
        .check(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )
        .await
    {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"headroom\"")],
            "Unauthorized\n",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webconfig::WebConfig;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn state(web: WebConfig) -> AppState {
        AppState {
            name: "test_exporter",
            version: "1.2.3",
            telemetry_path: "/metrics".into(),
            snapshot: Arc::new(Snapshot::new(vec![crate::snapshot::Entry::new(
                "c",
                "111111111111".into(),
                "eu-west-1".into(),
                std::time::Duration::from_secs(60),
                std::time::Duration::from_secs(600),
            )])),
            metrics: Metrics::new("1.2.3", "abc").expect("metrics"),
            auth: Arc::new(BasicAuth::new(&web)),
            reload: None,
        }
    }

    async fn get(app: Router, path: &str, auth: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::builder().uri(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = app
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn routes() {
        let s = state(WebConfig::default());
        let (code, body) = get(app(s.clone()), "/", None).await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.contains("test_exporter")
                && body.contains("1.2.3")
                && body.contains("href=\"/metrics\"")
        );
        assert_eq!(
            get(app(s.clone()), "/healthz", None).await.0,
            StatusCode::OK
        );
        assert_eq!(
            get(app(s.clone()), "/readyz", None).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let (code, body) = get(app(s.clone()), "/metrics", None).await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.contains("aws_quota_exporter_build_info{revision=\"abc\",version=\"1.2.3\"} 1"),
            "{body}"
        );
        let mut e = (*s.snapshot.get(0).expect("entry")).clone();
        e.attempted = true;
        s.snapshot.publish_at(0, e);
        assert_eq!(get(app(s.clone()), "/readyz", None).await.0, StatusCode::OK);
        assert_eq!(get(app(s), "/nope", None).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn basic_auth_guards_metrics_but_not_probes() {
        // bcrypt of "secret", cost 4.
        let hash = bcrypt::hash("secret", 4).expect("hash");
        let web = WebConfig::parse(
            &format!("basic_auth_users:\n  alice: '{hash}'\n"),
            std::path::Path::new("."),
        )
        .expect("web config");
        let s = state(web);
        assert_eq!(
            get(app(s.clone()), "/metrics", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        // alice:wrong and alice:secret in base64.
        assert_eq!(
            get(app(s.clone()), "/metrics", Some("Basic YWxpY2U6d3Jvbmc="))
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(app(s.clone()), "/metrics", Some("Basic YWxpY2U6c2VjcmV0"))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            get(app(s.clone()), "/", Some("Basic YWxpY2U6c2VjcmV0"))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(get(app(s), "/healthz", None).await.0, StatusCode::OK);
    }
}

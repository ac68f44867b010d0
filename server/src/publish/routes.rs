//! The routes of the HTTPS API: the feed's reader routes, `/metrics`,
//! health, the OpenAPI document and, when configured, PollHosts. Every
//! route here is in `openapi.json` (a test checks both ways).

use super::feed::{
    count_requests, host, metrics, not_found, openapi, pool_hosts, pools, readyz, replicas,
    require_reader, FeedState, NO_BODY,
};
use super::oat::{self, OatConfig};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// Builds the API's router.
pub fn router(state: FeedState, oat: Option<Arc<OatConfig>>) -> Router {
    let readers = Router::new()
        .route("/v1/pools", get(pools))
        .route("/v1/pools/{pool}/hosts", get(pool_hosts))
        .route("/v1/hosts/{hostname}", get(host))
        .route("/v1/replicas", get(replicas));
    let metrics_route = Router::new().route("/metrics", get(metrics));
    let (readers, metrics_route) = if state.metrics_auth {
        (readers.merge(metrics_route), Router::new())
    } else {
        (readers, metrics_route)
    };
    let readers = readers.route_layer(middleware::from_fn_with_state(
        state.clone(),
        require_reader,
    ));
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi));
    if let Some(cfg) = oat {
        let path = cfg.poll_hosts_path();
        router = router.route(
            &path,
            post(move |s: State<FeedState>, headers: HeaderMap, body: Body| {
                oat::poll_hosts(s, cfg.clone(), headers, body)
            }),
        );
    }
    router
        .merge(metrics_route)
        .merge(readers)
        .fallback(|| async { not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(NO_BODY))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    mod router {
        use super::super::*;
        use crate::clock::now_ms;
        use crate::fleet::registry::Registry;
        use crate::publish::feed::{Health, BODY_READ_TIMEOUT};
        use crate::publish::readers::FeedToken;
        use crate::publish::readers::ReaderAuth;
        use crate::state::AppState;
        use crate::store::{Store, StoredVerdict};
        use axum::body::Body;
        use axum::http::Request;
        use axum::http::StatusCode;
        use sha2::Digest;
        use std::time::Duration;
        use tokio::sync::watch;
        use tower::ServiceExt;
        use trustpool_evidence::ekcert::EkTrust;
        use trustpool_evidence::policy::parse_policy_set;

        struct Fixture {
            _dir: tempfile::TempDir,
            state: FeedState,
            oat: Option<Arc<OatConfig>>,
            _stop: watch::Sender<bool>,
        }

        async fn fixture(blob: Option<&str>) -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(&dir.path().join("t.db")).await.expect("store");
            let registry = Arc::new(Registry::new(1));
            registry.set_pools(&["default".into()], now_ms());
            registry.add_enrolment(crate::store::Enrolment {
                hostname: "host-a".into(),
                ek_public: vec![1],
                ek_certificate: None,
                ak_public: vec![2],
                ak_name: vec![3],
                cert_fingerprint: "f".into(),
                cert_subject: "CN=host-a".into(),
                enrolled_at_ms: 0,
            });
            let _ = registry.record_verdicts(
                vec![StoredVerdict {
                    hostname: "host-a".into(),
                    pool: "default".into(),
                    trusted: true,
                    attested_at_ms: now_ms(),
                    valid_until_ms: now_ms() + 60_000,
                    reasons: vec![],
                    policy_digest: "d".into(),
                }],
                now_ms(),
            );
            let text = format!(
                "require_measured_launch = false\n[[allow]]\nname = \"x\"\npcrs = {{ 0 = \"{}\" }}\n",
                "00".repeat(32)
            );
            let policy = parse_policy_set(&[("default.toml".into(), text)]).expect("policy");
            let app = Arc::new(AppState::new(
                store,
                registry,
                EkTrust::from_der_certs(vec![]).expect("trust"),
                policy,
                Duration::from_secs(30),
                Duration::from_secs(75),
            ));
            let token =
                FeedToken::new("t", &hex::encode(sha2::Sha256::digest(b"tok"))).expect("token");
            let auth = Arc::new(ReaderAuth::new(vec![token], None).expect("auth"));
            let oat_auth = match blob {
                Some(b) => {
                    crate::publish::oat::OatAuth::Blob(sha2::Sha256::digest(b.as_bytes()).into())
                }
                None => crate::publish::oat::OatAuth::Anonymous,
            };
            let oat = Some(Arc::new(OatConfig::new(None, None, oat_auth).expect("oat")));
            let (stop_tx, stop) = watch::channel(false);
            Fixture {
                _dir: dir,
                state: FeedState::new(app, auth, Arc::new(Health::default()), false, stop),
                oat,
                _stop: stop_tx,
            }
        }

        async fn call(f: &Fixture, req: Request<Body>) -> (StatusCode, serde_json::Value) {
            let resp = router(f.state.clone(), f.oat.clone())
                .oneshot(req)
                .await
                .expect("infallible");
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .expect("body");
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            )
        }

        fn get(path: &str, token: Option<&str>) -> Request<Body> {
            let mut b = Request::get(path);
            if let Some(t) = token {
                b = b.header("authorization", format!("Bearer {t}"));
            }
            b.body(Body::empty()).expect("request")
        }

        fn poll(body: impl Into<Body>, blob: Option<&str>) -> Request<Body> {
            let mut b = Request::post("/OpenAttestationWebServices/V1.0/PollHosts")
                .header("content-type", "application/json");
            if let Some(x) = blob {
                b = b.header("x-auth-blob", x);
            }
            b.body(body.into()).expect("request")
        }

        #[tokio::test]
        async fn readers_only_and_fail_closed_when_the_database_is_gone() {
            let f = fixture(None).await;
            assert_eq!(
                call(&f, get("/v1/pools/default/hosts", None)).await.0,
                StatusCode::UNAUTHORIZED
            );
            let (status, body) = call(&f, get("/v1/pools/default/hosts", Some("tok"))).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["hosts"][0]["hostname"], "host-a");
            let (status, body) = call(&f, get("/v1/pools/default/hosts?wait=1", Some("tok"))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(call(&f, get("/readyz", None)).await.0, StatusCode::OK);

            // The database stops answering: 503, never an empty list.
            f.state.app.store.close().await;
            assert!(f.state.app.store.probe().await.is_err());
            let (status, body) = call(&f, get("/v1/pools/default/hosts", Some("tok"))).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body["error"]["code"], "unavailable");
            assert_eq!(
                call(&f, get("/v1/pools", Some("tok"))).await.0,
                StatusCode::SERVICE_UNAVAILABLE
            );
            assert_eq!(
                call(&f, get("/v1/hosts/host-a", Some("tok"))).await.0,
                StatusCode::SERVICE_UNAVAILABLE
            );
            let (status, body) = call(&f, get("/readyz", None)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body["ready"], false);
            let (status, _) = call(&f, poll(r#"{"count":1,"hosts":["host-a"]}"#, None)).await;
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "PollHosts vouches for nobody"
            );
            // Liveness stays up.
            let resp = router(f.state.clone(), f.oat.clone())
                .oneshot(get("/healthz", None))
                .await
                .expect("ok");
            assert_eq!(resp.status(), StatusCode::OK);
        }

        #[tokio::test]
        async fn poll_hosts_refuses_bad_input_without_panicking() {
            let f = fixture(Some("blob")).await;
            let good = r#"{"count": 2, "hosts": ["host-a", "Nobody"]}"#;
            assert_eq!(call(&f, poll(good, None)).await.0, StatusCode::UNAUTHORIZED);
            assert_eq!(
                call(&f, poll(good, Some("wrong"))).await.0,
                StatusCode::UNAUTHORIZED
            );
            let (status, body) = call(&f, poll(good, Some("blob"))).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["hosts"][0]["trust_lvl"], "trusted");
            assert_eq!(body["hosts"][1]["host_name"], "Nobody");
            assert_eq!(body["hosts"][1]["trust_lvl"], "untrusted");
            for bad in [
                "",
                "{",
                "[]",
                r#"{"hosts": "host-a"}"#,
                r#"{"count": 3, "hosts": ["a"]}"#,
                r#"{"count": -1, "hosts": []}"#,
                r#"{"hosts": [1, 2]}"#,
            ] {
                let (status, body) = call(&f, poll(bad, Some("blob"))).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
                assert_eq!(body["error"]["code"], "bad_request", "{bad}");
            }
            let huge = vec![b' '; crate::publish::oat::MAX_BODY + 1];
            let (status, body) = call(&f, poll(huge, Some("blob"))).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
            assert_eq!(body["error"]["code"], "payload_too_large");
            let bin = vec![0xffu8, 0xfe, 0x00, 0x7b];
            assert_eq!(
                call(&f, poll(bin, Some("blob"))).await.0,
                StatusCode::BAD_REQUEST
            );
        }

        /// A body that never arrives: a handler that reads it never returns.
        fn never_arriving(declared: Option<u64>, blob: Option<&str>) -> Request<Body> {
            let mut b = Request::post("/OpenAttestationWebServices/V1.0/PollHosts")
                .header("content-type", "application/json");
            if let Some(n) = declared {
                b = b.header("content-length", n.to_string());
            }
            if let Some(x) = blob {
                b = b.header("x-auth-blob", x);
            }
            let pending = tokio_stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
            b.body(Body::from_stream(pending)).expect("request")
        }

        /// `call`, failing instead of hanging when the handler waits for a
        /// body that never comes (well past [`BODY_READ_TIMEOUT`]: a
        /// handler that read the body would wait for ever).
        async fn call_or_hang(f: &Fixture, req: Request<Body>) -> (StatusCode, serde_json::Value) {
            tokio::time::timeout(BODY_READ_TIMEOUT * 6, call(f, req))
                .await
                .expect("the handler waited for a body it should not have read")
        }

        #[tokio::test]
        async fn attack_poll_hosts_without_blob_is_refused_before_its_body() {
            let f = fixture(Some("blob")).await;
            for blob in [None, Some("wrong")] {
                let (status, body) =
                    call_or_hang(&f, never_arriving(Some(100_000_000), blob)).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
                assert_eq!(body["error"]["code"], "unauthenticated");
            }
        }

        #[tokio::test]
        async fn attack_poll_hosts_declaring_a_huge_body_gets_413_unread() {
            use tokio_stream::StreamExt as _;
            let f = fixture(Some("blob")).await;
            let (status, body) =
                call_or_hang(&f, never_arriving(Some(100_000_000), Some("blob"))).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
            assert_eq!(body["error"]["code"], "payload_too_large");
            // Undeclared (chunked) and larger than the limit: cut at the limit.
            let chunks = (0..64)
                .map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 64 * 1024])));
            let req = Request::post("/OpenAttestationWebServices/V1.0/PollHosts")
                .header("x-auth-blob", "blob")
                .body(Body::from_stream(
                    tokio_stream::iter(chunks).chain(tokio_stream::pending()),
                ))
                .expect("request");
            let (status, body) = call_or_hang(&f, req).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        }

        #[tokio::test]
        async fn attack_poll_hosts_slow_body_gets_408() {
            let f = fixture(Some("blob")).await;
            let (status, body) = call_or_hang(&f, never_arriving(Some(40), Some("blob"))).await;
            assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
            assert_eq!(body["error"]["code"], "body_timeout");
        }

        #[tokio::test]
        async fn poll_hosts_is_not_served_unless_configured() {
            let mut f = fixture(Some("blob")).await;
            f.oat = None;
            let (status, body) = call(&f, poll(r#"{"count":0,"hosts":[]}"#, Some("blob"))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        }

        #[tokio::test]
        async fn unknown_paths_and_methods() {
            let f = fixture(None).await;
            let (status, body) = call(&f, get("/v2/nothing", Some("tok"))).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(body["error"]["code"], "not_found");
            let (status, _) = call(&f, get("/v1/pools/nopool/hosts", Some("tok"))).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            let resp = router(f.state.clone(), f.oat.clone())
                .oneshot(
                    Request::get("/OpenAttestationWebServices/V1.0/PollHosts")
                        .body(Body::empty())
                        .expect("req"),
                )
                .await
                .expect("ok");
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        }
    }

    /// Every route the router declares is in the OpenAPI document, and every
    /// documented path is a route.
    #[test]
    fn every_route_is_documented() {
        use crate::publish::feed::OPENAPI;
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let documented: Vec<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        let source = include_str!("routes.rs");
        let mut routes: Vec<String> = source
            .split(".route(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(String::from)
            .collect();
        routes.push(format!("{}/PollHosts", crate::publish::oat::DEFAULT_PREFIX));
        for r in &routes {
            assert!(documented.contains(r), "route {r} is not in openapi.json");
        }
        for d in &documented {
            assert!(
                routes.contains(d),
                "openapi.json documents {d}, which is not a route"
            );
        }
    }
}

//! The page as `firstcome-local` serves it: `index.html` for every client route (no-cache),
//! content-hashed assets cacheable for a year, brotli/gzip twins when the client accepts them,
//! and API paths that never fall through to the page.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use firstcome_tests::browser::site_dir;
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn app() -> (axum::Router, tempfile::TempDir) {
    app_with(site_dir()).await
}

async fn app_with(site: std::path::PathBuf) -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = firstcome_local::Config {
        ledger_rate: std::num::NonZeroU32::new(100).unwrap(),
        site_dir: Some(site),
        ..firstcome_local::Config::new(dir.path().join("data"))
    };
    let local = firstcome_local::start(config).await.unwrap();
    (firstcome_local::app(&local), dir)
}

async fn get(app: &axum::Router, path: &str, encoding: Option<&str>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::get(path);
    if let Some(e) = encoding {
        req = req.header("accept-encoding", e);
    }
    let res = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = res.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
}

fn asset(suffix: &str, prefix: &str) -> String {
    std::fs::read_dir(site_dir().join("assets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with(prefix) && n.ends_with(suffix))
        .unwrap_or_else(|| panic!("no {prefix}*{suffix} in the built site"))
}

#[tokio::test]
async fn client_routes_get_the_app_and_assets_are_immutable_and_compressed() {
    let (app, _dir) = app().await;
    for path in ["/", "/e/spring-sale", "/admin", "/no/such/page"] {
        let (s, h, body) = get(&app, path, None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
        assert_eq!(h["cache-control"], "no-cache", "{path}: a deploy is picked up at once");
        let html = String::from_utf8(body).unwrap();
        assert!(html.contains("/assets/event-") && html.contains("/assets/admin-"), "{path}");
    }

    let wasm = format!("/assets/{}", asset(".wasm", "event-"));
    let (s, h, body) = get(&app, &wasm, Some("br, gzip")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "application/wasm");
    assert_eq!(h["content-encoding"], "br");
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    let raw = std::fs::read(site_dir().join(&wasm[1..])).unwrap();
    assert!(body.len() < raw.len() / 2, "brotli twin served: {} of {} bytes", body.len(), raw.len());

    let js = format!("/assets/{}", asset(".js", "event-"));
    let (s, h, _) = get(&app, &js, Some("gzip")).await;
    assert_eq!((s, h["content-encoding"].to_str().unwrap()), (StatusCode::OK, "gzip"));
    assert!(h["content-type"].to_str().unwrap().contains("javascript"));
    let (s, h, body) = get(&app, &js, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.get("content-encoding").is_none(), "identity for a client that accepts nothing else");
    assert!(String::from_utf8(body).unwrap().contains("WebAssembly"));

    let (s, h, _) = get(&app, "/assets/event-000000000000.wasm", Some("br")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a missing asset is not the app");
    assert_ne!(h.get("cache-control").map(|v| v.to_str().unwrap()), Some("public, max-age=31536000, immutable"));
}

#[tokio::test]
async fn api_paths_never_fall_through_to_the_page() {
    let (app, _dir) = app().await;
    for path in ["/api/nope", "/api/campaigns/x/nope", "/api"] {
        let (s, h, body) = get(&app, path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(h["content-type"], "application/json", "{path}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "not_found", "{path}");
    }
    let (s, _, body) = get(&app, "/healthz", None).await;
    assert_eq!(
        (s, serde_json::from_slice::<serde_json::Value>(&body).unwrap()["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
}

#[tokio::test]
async fn only_the_page_is_served_from_the_site_dir() {
    // A site dir with the page and what must never be served: files beside the page inside the
    // directory (as cargo's artifacts once were), and a file outside it.
    let root = tempfile::tempdir().unwrap();
    let site = root.path().join("page");
    std::fs::create_dir_all(site.join("assets")).unwrap();
    std::fs::create_dir_all(site.join("deps")).unwrap();
    std::fs::write(site.join("index.html"), "<html>the app</html>").unwrap();
    std::fs::write(site.join("assets/event-0123456789ab.js"), "the bundle").unwrap();
    for (path, secret) in
        [("deps/libsecret.rlib", "rlib bytes"), ("sizes.txt", "a report"), ("../outside.txt", "outside")]
    {
        std::fs::write(site.join(path), secret).unwrap();
    }
    let (app, _dir) = app_with(site).await;
    let (s, _, body) = get(&app, "/assets/event-0123456789ab.js", None).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, b"the bundle".as_slice()));
    for path in [
        "/deps/libsecret.rlib",
        "/sizes.txt",
        "/assets/../deps/libsecret.rlib",
        "/assets/%2e%2e/deps/libsecret.rlib",
        "/assets/..%2fdeps%2flibsecret.rlib",
        "/assets/..%5cdeps%5clibsecret.rlib",
        "/assets/../../outside.txt",
        "/assets/%2e%2e/%2e%2e/outside.txt",
        "/../outside.txt",
        "/assets//../sizes.txt",
    ] {
        let (s, _, body) = get(&app, path, None).await;
        let body = String::from_utf8_lossy(&body);
        assert!(
            !["rlib bytes", "a report", "outside"].iter().any(|secret| body.contains(secret)),
            "{path} served a file that is not the page's ({s}): {body}"
        );
        assert!(s == StatusCode::NOT_FOUND || body == "<html>the app</html>", "{path}: {s} {body}");
    }
}

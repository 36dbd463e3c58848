//! The pages and the scripts and styles they load, all inside the binary.
//!
//! - `/` the viewer page (`viewer.html`), `/host` the host's dashboard (`host.html`). Each is
//!   served inside `shell.html`, which opens the document and loads what every page shares
//!   (`common.css`, `common.js`); the page brings its head's own tags and its body.
//! - `/assets/{name}` the scripts and styles in `assets/`, exactly as written: plain deferred
//!   scripts sharing one namespace, no build step. See `assets/common.js` for how they fit.
//!
//! Caching: a page names each asset as `/assets/NAME?v=HASH`, HASH from the asset's content.
//! At that URL the asset is cached for a year as `immutable`, so a visit loads no script twice;
//! the page itself is `no-cache`, so the first visit after an upgrade gets the new URLs of the
//! files that changed (and only those). An asset asked for without its current hash (an old
//! page during an upgrade, a hand-typed URL) is served `no-cache`, so no cache keeps a file
//! under a hash it does not have.

use std::sync::{LazyLock, OnceLock};

use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::error::AppError;

/// For a URL that names the asset's content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// For the pages, and an asset asked for by another name: ask the server each time.
const NO_CACHE: &str = "no-cache";
/// Where a page goes in the shell.
const PAGE_SLOT: &str = "<!-- page -->";

/// One embedded script or style sheet.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    /// A hash of `body`, computed on first use.
    version: OnceLock<String>,
}

impl Asset {
    const fn script(name: &'static str, body: &'static str) -> Asset {
        Asset {
            name,
            content_type: "text/javascript; charset=utf-8",
            body,
            version: OnceLock::new(),
        }
    }

    const fn style(name: &'static str, body: &'static str) -> Asset {
        Asset {
            name,
            content_type: "text/css; charset=utf-8",
            body,
            version: OnceLock::new(),
        }
    }

    /// 16 hex digits of the content's SHA-256: changes whenever the file does.
    fn version(&self) -> &str {
        self.version.get_or_init(|| {
            Sha256::digest(self.body.as_bytes())[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
    }
}

static ASSETS: [Asset; 8] = [
    Asset::style("common.css", include_str!("assets/common.css")),
    Asset::style("viewer.css", include_str!("assets/viewer.css")),
    Asset::style("host.css", include_str!("assets/host.css")),
    Asset::script("common.js", include_str!("assets/common.js")),
    Asset::script("player.js", include_str!("assets/player.js")),
    Asset::script("chat.js", include_str!("assets/chat.js")),
    Asset::script("modtools.js", include_str!("assets/modtools.js")),
    Asset::script("host.js", include_str!("assets/host.js")),
];

static VIEWER: LazyLock<String> = LazyLock::new(|| page(include_str!("viewer.html")));
static HOST: LazyLock<String> = LazyLock::new(|| page(include_str!("host.html")));

/// `page` inside the shell, every asset named with its version.
fn page(page: &str) -> String {
    let mut html = include_str!("shell.html").replace(PAGE_SLOT, page);
    for asset in &ASSETS {
        html = html.replace(
            &format!("\"/assets/{}\"", asset.name),
            &format!("\"/assets/{}?v={}\"", asset.name, asset.version()),
        );
    }
    html
}

/// The pages' routes; they need no state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(viewer_page))
        .route("/host", get(host_page))
        .route("/assets/{name}", get(asset))
}

/// `/`: the viewer page.
async fn viewer_page() -> Response {
    html(&VIEWER)
}

/// `/host`: the streamer's dashboard. The page itself holds no secret; it reads the key from
/// its URL fragment (never sent to the server) and calls `/api/` with it.
async fn host_page() -> Response {
    html(&HOST)
}

fn html(page: &'static str) -> Response {
    ([(header::CACHE_CONTROL, NO_CACHE)], Html(page)).into_response()
}

/// `/assets/{name}`, immutable when asked for under its current version (`?v=`).
async fn asset(Path(name): Path<String>, RawQuery(query): RawQuery) -> Result<Response, AppError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| AppError::new(StatusCode::NOT_FOUND, "no such asset"))?;
    let current = query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.strip_prefix("v=") == Some(asset.version()))
    });
    let cache = if current { IMMUTABLE } else { NO_CACHE };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// Status, the named headers and the body of `GET uri`.
    async fn get(uri: &str) -> (StatusCode, Option<String>, Option<String>, String) {
        let response = routes::<()>()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
        };
        let (content_type, cache) = (header(header::CONTENT_TYPE), header(header::CACHE_CONTROL));
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            cache,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    /// Every `/assets/…` URL a page names.
    fn asset_urls(html: &str) -> Vec<&str> {
        html.match_indices("\"/assets/")
            .map(|(at, _)| {
                let url = &html[at + 1..];
                &url[..url.find('"').unwrap()]
            })
            .collect()
    }

    #[tokio::test]
    async fn an_asset_under_its_version_is_cached_for_good() {
        for (name, body, content_type) in [
            (
                "chat.js",
                include_str!("assets/chat.js"),
                "text/javascript; charset=utf-8",
            ),
            (
                "viewer.css",
                include_str!("assets/viewer.css"),
                "text/css; charset=utf-8",
            ),
        ] {
            let version = ASSETS.iter().find(|a| a.name == name).unwrap().version();
            let (status, served_as, cache, served) =
                get(&format!("/assets/{name}?v={version}")).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(served_as.as_deref(), Some(content_type), "{name}");
            assert_eq!(
                cache.as_deref(),
                Some("public, max-age=31536000, immutable"),
                "{name}"
            );
            assert_eq!(served, body, "{name}");
        }
    }

    #[tokio::test]
    async fn an_asset_under_another_version_is_revalidated() {
        for uri in ["/assets/chat.js", "/assets/chat.js?v=0123456789abcdef"] {
            let (status, _, cache, body) = get(uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(cache.as_deref(), Some("no-cache"), "{uri}");
            assert_eq!(body, include_str!("assets/chat.js"), "{uri}");
        }
    }

    #[tokio::test]
    async fn an_unknown_asset_is_not_found() {
        for uri in [
            "/assets/nope.js",
            "/assets/chat.js.map",
            "/assets/..%2Fmod.rs",
            "/assets/",
        ] {
            let (status, ..) = get(uri).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        }
    }

    #[tokio::test]
    async fn pages_are_revalidated_and_name_every_asset_by_its_version() {
        for (uri, own) in [("/", "/assets/chat.js?v="), ("/host", "/assets/host.js?v=")] {
            let (status, content_type, cache, html) = get(uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(
                content_type.as_deref(),
                Some("text/html; charset=utf-8"),
                "{uri}"
            );
            assert_eq!(cache.as_deref(), Some("no-cache"), "{uri}");
            assert!(html.starts_with("<!doctype html>"), "{uri}");
            assert!(!html.contains(PAGE_SLOT), "{uri}: the shell's slot is left");
            let urls = asset_urls(&html);
            assert!(
                urls.iter().any(|u| u.starts_with("/assets/common.js?v="))
                    && urls.iter().any(|u| u.starts_with("/assets/common.css?v="))
                    && urls.iter().any(|u| u.starts_with(own)),
                "{uri} does not load its scripts: {urls:?}"
            );
            // A typo in a page would load nothing: every URL it names is served, for good.
            for url in urls {
                let (status, _, cache, _) = get(url).await;
                assert_eq!(status, StatusCode::OK, "{uri} names {url}");
                assert_eq!(cache.as_deref(), Some(IMMUTABLE), "{uri} names {url}");
            }
        }
    }

    #[test]
    fn the_pages_hold_no_script_or_style_of_their_own() {
        // Markup only, so a Content-Security-Policy of 'self' would hold: no inline script,
        // style block or event handler attribute.
        for html in [VIEWER.as_str(), HOST.as_str()] {
            assert!(!html.contains("<script>") && !html.contains("<style"));
            assert!(!html.contains(" style="), "an inline style attribute");
            let handler = html.match_indices(" on").find(|(at, _)| {
                let name = &html[at + 3..];
                let letters = name.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(0);
                letters > 0 && name[letters..].starts_with('=')
            });
            assert!(handler.is_none(), "an event handler attribute: {handler:?}");
        }
    }
}

//! The pages and the scripts and styles they load, all inside the binary.
//!
//! - `/` the viewer page (`viewer.html`), `/host` the host's dashboard (`host.html`), `/phone`
//!   a phone's camera page (`phone.html`, from the dashboard's QR code). Each is
//!   served inside `shell.html`, which opens the document and loads what every page shares
//!   (`common.css`, `common.js`); the page brings its head's own tags and its body.
//! - `/assets/{name}` the scripts and styles in `assets/`, as written: plain deferred scripts
//!   sharing one namespace, with no bundler. `build_assets.rs` only gzips them, and every browser
//!   gets them gzipped. See `assets/common.js` for how they fit.
//!
//! Caching: a page names each asset as `/assets/NAME?v=HASH`, HASH from the asset's content.
//! At that URL the asset is cached for a year as `immutable`, so a visit loads no script twice;
//! the page itself is `no-cache`, so the first visit after an upgrade gets the new URLs of the
//! files that changed (and only those). An asset asked for without its current hash (an old
//! page during an upgrade, a hand-typed URL) is served `no-cache`, so no cache keeps a file
//! under a hash it does not have.

use std::io::Read;
use std::sync::{LazyLock, OnceLock};

use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::error::AppError;

/// For a URL that names the asset's content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// For the pages, and an asset asked for by another name: ask the server each time.
const NO_CACHE: &str = "no-cache";
/// Where a page goes in the shell.
const PAGE_SLOT: &str = "<!-- page -->";

/// Each asset's version: 16 hex digits of its content's SHA-256, from `build_assets.rs`.
const VERSIONS: &[(&str, &str)] = &include!(concat!(env!("OUT_DIR"), "/asset_versions.rs"));

/// One embedded script or style sheet, gzipped by `build_assets.rs`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    gzipped: &'static [u8],
    /// The content itself, unpacked on first use by a client that takes no gzip.
    plain: OnceLock<Vec<u8>>,
}

/// An asset of `src/web/assets/`, as `build_assets.rs` left it in `OUT_DIR`.
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            gzipped: include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".gz")),
            plain: OnceLock::new(),
        }
    };
}

const SCRIPT: &str = "text/javascript; charset=utf-8";
const STYLE: &str = "text/css; charset=utf-8";

static ASSETS: [Asset; 9] = [
    asset!("common.css", STYLE),
    asset!("viewer.css", STYLE),
    asset!("host.css", STYLE),
    asset!("common.js", SCRIPT),
    asset!("player.js", SCRIPT),
    asset!("chat.js", SCRIPT),
    asset!("modtools.js", SCRIPT),
    asset!("host.js", SCRIPT),
    asset!("publish.js", SCRIPT),
];

impl Asset {
    /// The version `build_assets.rs` named after the content.
    fn version(&self) -> &'static str {
        VERSIONS
            .iter()
            .find(|(name, _)| *name == self.name)
            .map_or("", |(_, version)| version)
    }

    /// The content, unpacked once.
    fn plain(&self) -> &[u8] {
        self.plain.get_or_init(|| {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(self.gzipped)
                .read_to_end(&mut plain)
                .expect("build_assets.rs wrote valid gzip");
            plain
        })
    }
}

static VIEWER: LazyLock<String> = LazyLock::new(|| page(include_str!("viewer.html")));
static HOST: LazyLock<String> = LazyLock::new(|| page(include_str!("host.html")));
static PHONE: LazyLock<String> = LazyLock::new(|| page(include_str!("phone.html")));

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
        .route("/phone", get(phone_page))
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

/// `/phone`: a phone's camera page, from the QR code on the dashboard. Like `/host`, it holds
/// no secret: the ingest key is in its URL fragment.
async fn phone_page() -> Response {
    html(&PHONE)
}

fn html(page: &'static str) -> Response {
    ([(header::CACHE_CONTROL, NO_CACHE)], Html(page)).into_response()
}

/// `/assets/{name}`, immutable when asked for under its current version (`?v=`); gzipped
/// for every client that says it takes gzip (every browser does).
async fn asset(
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| AppError::new(StatusCode::NOT_FOUND, "no such asset"))?;
    let current = query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.strip_prefix("v=") == Some(asset.version()))
    });
    let cache = if current { IMMUTABLE } else { NO_CACHE };
    let gzip = accepts_gzip(&headers);
    let mut response = (
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
            // A cache between must not hand the gzipped body to a client that cannot read it.
            (header::VARY, HeaderValue::from_static("Accept-Encoding")),
        ],
        if gzip { asset.gzipped } else { asset.plain() },
    )
        .into_response();
    if gzip {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

/// Whether `Accept-Encoding` lists gzip (or `*`) without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
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
    async fn browsers_get_assets_gzipped_and_others_as_written() {
        let ask = |encoding: Option<&'static str>| async move {
            let mut request = Request::get("/assets/chat.js");
            if let Some(encoding) = encoding {
                request = request.header(header::ACCEPT_ENCODING, encoding);
            }
            let response = routes::<()>()
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let coding = response
                .headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap().to_owned());
            let vary = response.headers().get(header::VARY).cloned();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (coding, vary, body)
        };
        let written = include_str!("assets/chat.js");
        // What Chromium and Firefox send.
        let (coding, vary, body) = ask(Some("gzip, deflate, br, zstd")).await;
        assert_eq!(coding.as_deref(), Some("gzip"));
        assert_eq!(vary.unwrap(), "Accept-Encoding");
        assert!(
            body.len() * 2 < written.len(),
            "{} bytes gzipped",
            body.len()
        );
        let mut unpacked = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, written);
        for refuses in [None, Some("identity"), Some("gzip;q=0, br")] {
            let (coding, _, body) = ask(refuses).await;
            assert_eq!(coding, None, "{refuses:?}");
            assert_eq!(body, written.as_bytes(), "{refuses:?}");
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
        for html in [VIEWER.as_str(), HOST.as_str(), PHONE.as_str()] {
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

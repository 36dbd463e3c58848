//! WHEP signalling over reqwest, on this machine only: POST the offer, read the answer and its
//! `Location`, DELETE the session when done.
//!
//! A URL is refused unless it is plain `http://` and its host resolves to loopback addresses,
//! and the client ([`http::local`]) resolves names to loopback addresses only, so nothing the
//! probe says can leave the machine.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use reqwest::{Response, Url, header};

use super::CONNECT_TIMEOUT;
use crate::tools::http;

/// Largest HTTP response the probe accepts: an SDP answer is a few KiB, so anything far bigger
/// is a misdirected URL rather than an answer.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// A WHEP endpoint on this machine.
pub(crate) struct Whep {
    url: Url,
}

/// The server's answer to an offer.
pub(crate) struct Answer {
    /// HTTP status.
    pub(crate) status: u16,
    /// The SDP answer, or the server's reason for refusing.
    pub(crate) body: String,
    /// The session's resource (`Location`), resolved against the endpoint; `None` when the
    /// server sent none.
    pub(crate) resource: Option<anyhow::Result<Url>>,
    /// `Retry-After` in seconds, on a refusal that is only for now (429, 503).
    pub(crate) retry_after: Option<std::time::Duration>,
}

impl Whep {
    /// Checks the endpoint and resolves its host, so a wrong URL fails before anything is
    /// built or sent.
    pub(crate) async fn open(url: &str) -> anyhow::Result<Self> {
        let url = parse_url(url)?;
        loopback_addrs(&url).await?;
        Ok(Self { url })
    }

    /// The address of the server, for choosing where to receive media.
    pub(crate) async fn server_ip(&self) -> anyhow::Result<std::net::IpAddr> {
        Ok(loopback_addrs(&self.url).await?[0].ip())
    }

    /// POSTs the offer (non-trickle: it already carries its candidates) and reads the whole
    /// answer.
    pub(crate) async fn offer(&self, sdp: &str) -> anyhow::Result<Answer> {
        let url = &self.url;
        let exchange = async {
            let response = http::local()?
                .post(url.clone())
                .header(header::CONTENT_TYPE, "application/sdp")
                .header(header::ACCEPT, "application/sdp")
                .body(sdp.to_owned())
                .send()
                .await
                .with_context(|| format!("cannot connect to {url}"))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(std::time::Duration::from_secs);
            let resource = response.headers().get(header::LOCATION).map(|location| {
                let location = location
                    .to_str()
                    .context("the Location header is not text")?;
                let resource = url
                    .join(location.trim())
                    .with_context(|| format!("the Location {location:?} is not a URL"))?;
                checked(resource)
            });
            let body = read_body(response)
                .await
                .with_context(|| format!("reading the answer to POST {url}"))?;
            anyhow::Ok(Answer {
                status,
                body,
                resource,
                retry_after,
            })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{url} did not answer within {CONNECT_TIMEOUT:?}"))?
    }

    /// DELETEs the session resource, so the server frees the viewer slot at once instead of
    /// waiting for ICE consent to expire.
    pub(crate) async fn delete(&self, resource: &Url) -> anyhow::Result<()> {
        let exchange = async {
            // The Location may name another host: it must be this machine too.
            loopback_addrs(resource).await?;
            let response = http::local()?
                .delete(resource.clone())
                .send()
                .await
                .with_context(|| format!("cannot connect to {resource}"))?;
            let status = response.status();
            if !status.is_success() {
                let body = read_body(response).await.unwrap_or_default();
                bail!("DELETE answered {}: {}", status.as_u16(), one_line(&body));
            }
            Ok(())
        };
        tokio::time::timeout(CONNECT_TIMEOUT, exchange)
            .await
            .context("DELETE timed out")?
    }
}

/// Checks that `url` is one the probe can use: plain `http://` to a host, no credentials.
pub(crate) fn parse_url(url: &str) -> anyhow::Result<Url> {
    if !url.to_ascii_lowercase().starts_with("http") {
        bail!("{url}: expected an http:// URL, e.g. http://127.0.0.1:8080/whep");
    }
    let parsed = Url::parse(url).with_context(|| format!("{url}: not a URL"))?;
    checked(parsed)
}

fn checked(url: Url) -> anyhow::Result<Url> {
    match url.scheme() {
        "http" => {}
        "https" => {
            bail!("{url}: https is not supported; the probe speaks plain http to a loopback server")
        }
        _ => bail!("{url}: expected an http:// URL, e.g. http://127.0.0.1:8080/whep"),
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("{url}: credentials in the URL are not supported");
    }
    Ok(url)
}

/// The host of `url` as a resolver takes it: an IPv6 address without its brackets.
fn host(url: &Url) -> &str {
    let host = url.host_str().unwrap_or_default();
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The loopback (or namespaced test network) addresses of `url`'s host; an error naming the
/// host if it has none.
async fn loopback_addrs(url: &Url) -> anyhow::Result<Vec<SocketAddr>> {
    let host = host(url);
    let port = url.port_or_known_default().unwrap_or(80);
    let loopback: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .filter(|addr| http::is_test_network(addr.ip()))
        .collect();
    if loopback.is_empty() {
        bail!("{url}: {host} is not a loopback address; the probe only connects to this machine");
    }
    Ok(loopback)
}

/// The body as text, refusing one larger than [`MAX_RESPONSE_BYTES`].
async fn read_body(mut response: Response) -> anyhow::Result<String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_RESPONSE_BYTES {
            bail!("response larger than {MAX_RESPONSE_BYTES} bytes");
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The first non-empty line of a server's text, trimmed and bounded, for an error message.
pub(crate) fn one_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("(no reason given)");
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_locations_resolve() {
        let url = parse_url("http://127.0.0.1:8080/whep").unwrap();
        assert_eq!(host(&url), "127.0.0.1");
        assert_eq!(url.port_or_known_default(), Some(8080));
        assert_eq!(url.path(), "/whep");
        assert_eq!(
            url.join("/whep/abc").unwrap().to_string(),
            "http://127.0.0.1:8080/whep/abc"
        );
        assert_eq!(
            url.join("whep/abc").unwrap().to_string(),
            "http://127.0.0.1:8080/whep/abc"
        );
        assert_eq!(
            url.join("http://localhost:9/x").unwrap().to_string(),
            "http://localhost:9/x"
        );
        let nested = parse_url("http://[::1]:81/a/whep?x=1").unwrap();
        assert_eq!(host(&nested), "::1");
        assert_eq!(
            nested.join("s/1").unwrap().to_string(),
            "http://[::1]:81/a/s/1"
        );
        assert_eq!(parse_url("http://h").unwrap().path(), "/");
        let err = parse_url("https://127.0.0.1/whep").unwrap_err();
        assert!(err.to_string().contains("https is not supported"));
        assert!(parse_url("127.0.0.1:8080/whep").is_err());
        // A Location may not lead the probe anywhere it would not go itself.
        let away = checked(url.join("https://127.0.0.1/whep/1").unwrap()).unwrap_err();
        assert!(away.to_string().contains("https is not supported"));
        assert!(parse_url("http://user:pw@127.0.0.1/whep").is_err());
    }

    #[test]
    fn reasons_are_one_line() {
        assert_eq!(
            one_line("\n  party is full\n (100 viewers)"),
            "party is full"
        );
        assert_eq!(one_line(""), "(no reason given)");
        assert_eq!(one_line(&"x".repeat(300)).len(), 200);
    }
}

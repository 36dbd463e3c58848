//! The HTTP client of the tools that talk to a party on this machine (`probe`'s WHEP,
//! `bench`'s `/healthz`): reqwest, kept to this machine.
//!
//! One client serves the whole process. Building a client loads the system's TLS roots, which
//! takes tens of milliseconds: too slow to do per viewer when a benchmark starts a hundred
//! probes at once. It keeps no idle connection, so callers on different tokio runtimes (tests,
//! the benchmarks' short-lived runtimes) never share one. It resolves names to loopback
//! addresses only, uses no proxy and follows no redirect.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::Client;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How long connecting may take; on loopback, only a server that is not there takes long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a tool may send to `ip`: loopback, or the benchmarking range 198.18.0.0/15 (RFC
/// 2544) that cowatch's tests use only inside network namespaces they create
/// (`tools::netns`), where it reaches nothing else.
pub fn is_test_network(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_loopback() || (v4.octets()[0] == 198 && v4.octets()[1] & 0xfe == 18)
        }
        std::net::IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// The client, built on first use.
pub fn local() -> anyhow::Result<&'static Client> {
    static CLIENT: OnceLock<Result<Client, String>> = OnceLock::new();
    let built = CLIENT.get_or_init(|| {
        Client::builder()
            .dns_resolver(Arc::new(LoopbackOnly))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("cowatch/", env!("CARGO_PKG_VERSION")))
            // Header names as RFCs and the WHEP examples write them (`Content-Type`).
            .http1_title_case_headers()
            .build()
            .map_err(|e| e.to_string())
    });
    built
        .as_ref()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))
}

/// Resolves a name to its loopback addresses only, so even a name that also has others
/// cannot take a tool off the machine. An address in a URL is not resolved: the probe checks
/// its own, and the benchmarks only address the loopback ports their children print.
struct LoopbackOnly;

impl Resolve for LoopbackOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|addr| is_test_network(addr.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{} has no loopback address", name.as_str()).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

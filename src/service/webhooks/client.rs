//! The HTTP client of one endpoint: rustls (webpki roots plus an optional `ca_file`),
//! pooled keep-alive connections, the endpoint's timeout, no redirects, no proxy, and the
//! destination guard.
//!
//! **Destination guard.** Unless `allow_private_network`, every address a connection would
//! use is checked *after* DNS resolution, by the client's resolver, on every new connection:
//! a name resolving to loopback, link-local, private, shared (CGNAT), unspecified or multicast
//! space is refused, so DNS rebinding cannot reach the inside. An IP-literal URL is never
//! resolved, so it is checked once, here ([`literal_refusal`]).
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::WebhookConfig;

/// Whether `ip` is a public unicast address (what a webhook may reach by default).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Why an IP-literal URL is refused (a private address without `allow_private_network`).
/// Names (`localhost` too) are checked by the resolver, on every connection.
pub fn literal_refusal(config: &WebhookConfig) -> Option<String> {
    if config.allow_private_network {
        return None;
    }
    let url = reqwest::Url::parse(&config.url).ok()?;
    let host = url.host_str()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    (!is_public(ip)).then(|| refusal(&ip.to_string()))
}

fn refusal(what: &str) -> String {
    format!(
        "refused: the destination {what} is a loopback, link-local or private address \
         (set allow_private_network = true to allow it)"
    )
}

/// Resolves names, refusing non-public addresses unless allowed.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && let Some(bad) = addrs.iter().find(|addr| !is_public(addr.ip())) {
                let error: Box<dyn std::error::Error + Send + Sync> =
                    refusal(&format!("{host} ({})", bad.ip())).into();
                return Err(error);
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Builds the endpoint's client. Fails on an unreadable or invalid `ca_file`.
pub fn build(config: &WebhookConfig) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.timeout_secs))
        .connect_timeout(Duration::from_secs(config.timeout_secs))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("chatsync-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: config.allow_private_network,
        }));
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            anyhow::anyhow!(
                "webhook {:?}: cannot read ca_file {}: {e}",
                config.id,
                path.display()
            )
        })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("webhook {:?}: invalid ca_file: {e}", config.id))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}

//! The SSRF guard: a declared connector talks to the internet, not to the machine it runs on
//! or its private network. Every address a host name resolves to — at every connection, so a
//! name re-pointed after the check is caught too — is refused when it is loopback, private,
//! link-local (cloud metadata at 169.254.169.254), shared, unspecified, multicast or otherwise
//! special, unless the host or address is allow-listed (by the definition's `allow_hosts` or
//! the connector table's). Redirects are followed only to the same scheme, host and port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Hosts and addresses allowed although not public.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    entries: Vec<String>,
}

impl AllowList {
    pub fn new(entries: impl IntoIterator<Item = String>) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|e| e.trim().trim_matches(['[', ']']).to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
        }
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        self.entries.contains(&host)
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.entries
            .iter()
            .any(|e| e.parse::<IpAddr>().is_ok_and(|a| a == ip))
    }

    /// Whether a connection to `ip` (reached through `host`) is allowed.
    pub fn permits(&self, host: &str, ip: IpAddr) -> bool {
        is_public(ip) || self.allows_host(host) || self.allows_ip(ip)
    }
}

/// Why an address is refused, for messages: `loopback`, `private`, …
pub fn class(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(a) => v4_class(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4_class(v4),
            None => v6_class(a),
        },
    }
}

fn v4_class(a: Ipv4Addr) -> &'static str {
    let o = a.octets();
    if a.is_loopback() {
        "loopback"
    } else if a.is_private() {
        "private"
    } else if a.is_link_local() {
        "link-local"
    } else if a.is_unspecified() || o[0] == 0 {
        "unspecified"
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        "shared (carrier-grade NAT)"
    } else if a.is_multicast() || a.is_broadcast() || o[0] >= 240 {
        "multicast or reserved"
    } else if (o[0] == 192 && o[1] == 0 && o[2] == 0) || (o[0] == 198 && (o[1] & 0xfe) == 18) {
        "reserved"
    } else if a.is_documentation() {
        "documentation"
    } else {
        "public"
    }
}

fn v6_class(a: Ipv6Addr) -> &'static str {
    let s = a.segments();
    if a.is_loopback() {
        "loopback"
    } else if a.is_unspecified() {
        "unspecified"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "private (unique local)"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "link-local"
    } else if a.is_multicast() {
        "multicast or reserved"
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64 embeds an IPv4 address: judge that one.
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        v4_class(v4)
    } else if s[0] == 0x2001 && s[1] == 0xdb8 {
        "documentation"
    } else {
        "public"
    }
}

/// Whether `ip` is a public internet address.
pub fn is_public(ip: IpAddr) -> bool {
    class(ip) == "public"
}

/// A resolver that drops refused addresses and fails when none is left.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allow: Arc<AllowList>,
}

impl GuardedResolver {
    pub fn new(allow: Arc<AllowList>) -> Self {
        Self { allow }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (ok, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
                .into_iter()
                .partition(|a| allow.permits(&host, a.ip()));
            if ok.is_empty() {
                let why = refused
                    .first()
                    .map(|a| format!("{} is {}", a.ip(), class(a.ip())))
                    .unwrap_or_else(|| "no address".to_owned());
                return Err(format!(
                    "refused to connect to {host}: {why}; allow-list it (`allow_hosts`) if this is intended"
                )
                .into());
            }
            let addrs: Addrs = Box::new(ok.into_iter());
            Ok(addrs)
        })
    }
}

/// Checks a base URL's host when it is an address literal (the resolver never sees those).
pub fn check_literal(url: &reqwest::Url, allow: &AllowList) -> Result<(), String> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
        Some(url::Host::Domain(d)) => match d.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => return Ok(()),
        },
        None => return Err(format!("{url} names no host")),
    };
    let host = url.host_str().unwrap_or_default();
    if allow.permits(host, ip) {
        Ok(())
    } else {
        Err(format!(
            "refused: {host} is a {} address; allow-list it (`allow_hosts`) if this is intended",
            class(ip)
        ))
    }
}

/// Follows redirects only within the same origin as the request that was redirected.
pub fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(prev) = attempt.previous().last() else {
            return attempt.stop();
        };
        let same = attempt.url().scheme() == prev.scheme()
            && attempt.url().host_str() == prev.host_str()
            && attempt.url().port_or_known_default() == prev.port_or_known_default();
        let to = attempt.url().host_str().unwrap_or("?").to_owned();
        if attempt.previous().len() > 5 {
            attempt.error("too many redirects")
        } else if same {
            attempt.follow()
        } else {
            attempt.error(format!("refused a redirect to another host ({to})"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        for (ip, c) in [
            ("127.0.0.1", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.3.4", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast or reserved"),
            ("::1", "loopback"),
            ("fd00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("8.8.8.8", "public"),
            ("2606:4700::1111", "public"),
        ] {
            assert_eq!(class(ip.parse().unwrap()), c, "{ip}");
        }
    }

    #[test]
    fn literals_need_the_allow_list() {
        let none = AllowList::default();
        for u in [
            "http://10.0.0.1/x/",
            "http://169.254.169.254/latest/",
            "http://127.0.0.1:8000/db/",
            "http://[::1]/",
        ] {
            let url = reqwest::Url::parse(u).unwrap();
            let e = check_literal(&url, &none).unwrap_err();
            assert!(e.contains("refused"), "{e}");
        }
        let allow = AllowList::new(["127.0.0.1".to_owned()]);
        let url = reqwest::Url::parse("http://127.0.0.1:8000/db/").unwrap();
        assert!(check_literal(&url, &allow).is_ok());
        assert!(check_literal(&reqwest::Url::parse("http://10.0.0.1/").unwrap(), &allow).is_err());
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused() {
        let r = GuardedResolver::new(Arc::new(AllowList::default()));
        let name: Name = "localhost".parse().unwrap();
        let e = r.resolve(name).await.err().expect("refused");
        assert!(e.to_string().contains("loopback"), "{e}");
        let r = GuardedResolver::new(Arc::new(AllowList::new(["localhost".to_owned()])));
        let name: Name = "localhost".parse().unwrap();
        assert!(r.resolve(name).await.is_ok());
    }
}

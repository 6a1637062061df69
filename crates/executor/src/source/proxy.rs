//! HTTP proxies from the environment, read the way Go's `net/http` reads them
//! (`golang.org/x/net/http/httpproxy`), which is what podman, skopeo, containerd and
//! the kubelet on the same node do:
//!
//! - `HTTPS_PROXY` (or `https_proxy`) for `https://` URLs, `HTTP_PROXY` (or
//!   `http_proxy`) for `http://` URLs; the upper-case name wins, an empty value is
//!   unset, a value without a scheme means `http://`. Proxy schemes `http` and `https`
//!   are supported. `ALL_PROXY` is not read (Go does not; curl and reqwest do).
//! - `NO_PROXY` (or `no_proxy`): a comma-separated list; `*` alone bypasses the proxy
//!   for everything; an IP address (`10.1.2.3`, `[::1]:5000` with an optional port)
//!   or a CIDR block (`10.0.0.0/8`) matches IP hosts; `example.com` matches that host
//!   and its subdomains, `.example.com` and `*.example.com` its subdomains only; a
//!   `:port` on a name or address restricts the entry to that port (the URL's default
//!   port counts when it names none). Matching ignores case.
//! - `localhost` and loopback addresses are never proxied, whatever `NO_PROXY` says.
//!
//! Where curl differs (a leading dot also matches the domain itself; upper-case
//! `HTTP_PROXY` ignored; `ALL_PROXY` read), Go's rule is kept, so one environment means
//! the same to every tool of a node. reqwest and oci-client would otherwise read the
//! environment with reqwest's own rules (curl's, without the loopback exception):
//! [`crate::source::registry`] turns that off and applies this module's decision to
//! every client it builds.

use reqwest::Url;
use std::net::IpAddr;

/// A proxy variable whose value is not a usable proxy URL.
#[derive(Debug, thiserror::Error)]
#[error("invalid proxy in {variable}: {reason}")]
pub struct ProxyError {
    /// The environment variable (`HTTPS_PROXY`, `http_proxy`, ...).
    pub variable: String,
    /// What is wrong with it (the value itself is left out: it may hold a password).
    pub reason: String,
}

/// The proxies to use, and which hosts bypass them.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    http: Option<Url>,
    https: Option<Url>,
    no_proxy: NoProxy,
}

/// A parsed `NO_PROXY` list.
#[derive(Debug, Clone, Default)]
pub struct NoProxy {
    everything: bool,
    entries: Vec<NoProxyEntry>,
}

#[derive(Debug, Clone)]
enum NoProxyEntry {
    /// One address, on any port or one.
    Ip { ip: IpAddr, port: Option<u16> },
    /// A CIDR block.
    Network { network: IpAddr, bits: u8 },
    /// A domain suffix with a leading dot; `or_itself` when the bare name matches too.
    Domain {
        suffix: String,
        or_itself: bool,
        port: Option<u16>,
    },
}

impl ProxyConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<ProxyConfig, ProxyError> {
        ProxyConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (for tests, and for callers with their own
    /// environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ProxyConfig, ProxyError> {
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| {
                lookup(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
        };
        let proxy = |names| {
            first(names)
                .map(|(name, value)| parse_proxy(name, value.trim()))
                .transpose()
        };
        Ok(ProxyConfig {
            http: proxy(["HTTP_PROXY", "http_proxy"])?,
            https: proxy(["HTTPS_PROXY", "https_proxy"])?,
            no_proxy: NoProxy::parse(
                &first(["NO_PROXY", "no_proxy"])
                    .map(|(_, v)| v)
                    .unwrap_or_default(),
            ),
        })
    }

    /// Whether no proxy is configured at all.
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxy a request to `url` goes through, or `None` for a direct connection.
    pub fn proxy_for(&self, url: &Url) -> Option<&Url> {
        let proxy = match url.scheme() {
            "http" => self.http.as_ref()?,
            "https" => self.https.as_ref()?,
            _ => return None,
        };
        let host = url.host_str()?.to_ascii_lowercase();
        let port = url.port_or_known_default();
        // `host_str` brackets IPv6 addresses.
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        let name = if ip.is_some() { String::new() } else { host };
        if name == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
            return None;
        }
        if self.no_proxy.matches(&name, ip, port) {
            return None;
        }
        Some(proxy)
    }
}

/// A proxy variable's value as a URL: `http://` when it names no scheme.
fn parse_proxy(variable: &str, value: &str) -> Result<Url, ProxyError> {
    let error = |reason: String| ProxyError {
        variable: variable.to_owned(),
        reason,
    };
    let text = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let url = Url::parse(&text).map_err(|e| error(format!("not a URL ({e})")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(error(format!(
                "proxy scheme {other:?} is not supported (http or https)"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(error("the proxy URL names no host".into()));
    }
    Ok(url)
}

impl NoProxy {
    /// Parses a `NO_PROXY` value; entries that name nothing (`:80`) are skipped, as Go does.
    pub fn parse(list: &str) -> NoProxy {
        let mut no_proxy = NoProxy::default();
        for entry in list.split(',') {
            let entry = entry.trim().to_ascii_lowercase();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                no_proxy.everything = true;
                continue;
            }
            if let Some((address, bits)) = entry.split_once('/')
                && let (Ok(network), Ok(bits)) = (address.parse::<IpAddr>(), bits.parse::<u8>())
                && bits <= if network.is_ipv4() { 32 } else { 128 }
            {
                no_proxy
                    .entries
                    .push(NoProxyEntry::Network { network, bits });
                continue;
            }
            let (host, port) = split_host_port(&entry);
            if host.is_empty() {
                continue;
            }
            if let Ok(ip) = host.parse::<IpAddr>() {
                no_proxy.entries.push(NoProxyEntry::Ip { ip, port });
                continue;
            }
            let host = host.strip_prefix('*').unwrap_or(host);
            let (suffix, or_itself) = match host.strip_prefix('.') {
                Some(_) => (host.to_owned(), false),
                None => (format!(".{host}"), true),
            };
            if suffix.len() > 1 {
                no_proxy.entries.push(NoProxyEntry::Domain {
                    suffix,
                    or_itself,
                    port,
                });
            }
        }
        no_proxy
    }

    /// Whether a request to this host (a lower-case `name`, or an `ip`) and port bypasses
    /// the proxy.
    fn matches(&self, name: &str, ip: Option<IpAddr>, port: Option<u16>) -> bool {
        if self.everything {
            return true;
        }
        let port_ok = |wanted: &Option<u16>| wanted.is_none() || *wanted == port;
        self.entries.iter().any(|entry| match (entry, ip) {
            (NoProxyEntry::Ip { ip: want, port: p }, Some(ip)) => *want == ip && port_ok(p),
            (NoProxyEntry::Network { network, bits }, Some(ip)) => in_network(ip, *network, *bits),
            (
                NoProxyEntry::Domain {
                    suffix,
                    or_itself,
                    port: p,
                },
                None,
            ) => {
                (name.ends_with(suffix.as_str()) || (*or_itself && name == &suffix[1..]))
                    && port_ok(p)
            }
            _ => false,
        })
    }
}

/// `host:port`, `[v6]:port`, or a bare host (IPv6 addresses unbracketed included).
fn split_host_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match entry.rsplit_once(':') {
        // More than one colon and no brackets: an IPv6 address without a port.
        Some((host, _)) if host.contains(':') => (entry, None),
        Some((host, port)) => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (entry, None),
        },
        None => (entry, None),
    }
}

fn in_network(ip: IpAddr, network: IpAddr, bits: u8) -> bool {
    let mask = |len: u32| {
        if bits == 0 {
            0u128
        } else {
            (!0u128 << (len - u32::from(bits))) & (!0u128 >> (128 - len))
        }
    };
    match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = mask(32);
            (u128::from(u32::from(a)) & m) == (u128::from(u32::from(n)) & m)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = mask(128);
            (u128::from(a) & m) == (u128::from(n) & m)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> ProxyConfig {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProxyConfig::from_lookup(|name| vars.get(name).cloned()).unwrap()
    }

    fn via(config: &ProxyConfig, url: &str) -> Option<String> {
        config
            .proxy_for(&Url::parse(url).unwrap())
            .map(|u| u.to_string())
    }

    #[test]
    fn the_scheme_picks_the_variable_and_upper_case_wins() {
        let c = config(&[
            ("HTTPS_PROXY", "https-proxy:3128"),
            ("https_proxy", "http://lower:1"),
            ("http_proxy", "http://plain:8080"),
            ("ALL_PROXY", "http://all:1"),
        ]);
        assert_eq!(
            via(&c, "https://quay.io/v2/"),
            Some("http://https-proxy:3128/".into())
        );
        assert_eq!(
            via(&c, "http://registry.internal:5000/v2/"),
            Some("http://plain:8080/".into())
        );
        // ALL_PROXY is not read; an empty value is unset.
        let c = config(&[("ALL_PROXY", "http://all:1"), ("HTTPS_PROXY", " ")]);
        assert!(c.is_empty());
        assert_eq!(via(&c, "https://quay.io/"), None);
    }

    #[test]
    fn loopback_is_never_proxied() {
        let c = config(&[("HTTP_PROXY", "http://p:1"), ("HTTPS_PROXY", "http://p:1")]);
        for url in [
            "http://127.0.0.1:5000/v2/",
            "http://127.1.2.3/",
            "https://[::1]:5000/",
            "http://localhost:5000/",
            "https://LOCALHOST/",
        ] {
            assert_eq!(via(&c, url), None, "{url}");
        }
        assert!(via(&c, "http://10.0.0.1/").is_some());
        assert!(via(&c, "http://localhost.example.com/").is_some());
    }

    #[test]
    fn no_proxy_entries_match_as_go_reads_them() {
        let c = config(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("HTTP_PROXY", "http://p:1"),
            (
                "no_proxy",
                " Example.com, .sub.test,*.wild.test, 10.0.0.0/8, 192.168.1.7, [fd00::1]:5000, only.port:8443, :80, fd00::2",
            ),
        ]);
        let direct = [
            "https://example.com/",
            "https://a.b.EXAMPLE.com/",
            "https://x.sub.test/",
            "https://x.wild.test/",
            "http://10.200.3.4:5000/",
            "http://192.168.1.7:1234/",
            "https://[fd00::1]:5000/",
            "https://only.port:8443/",
            "http://[fd00::2]/",
        ];
        let proxied = [
            "https://notexample.com/",
            "https://example.com.evil/",
            // A leading dot (or `*.`) means subdomains only, as in Go.
            "https://sub.test/",
            "https://wild.test/",
            "http://11.0.0.1/",
            "http://192.168.1.8/",
            "https://[fd00::1]:5001/",
            "https://only.port/",
        ];
        for url in direct {
            assert_eq!(via(&c, url), None, "{url} should bypass the proxy");
        }
        for url in proxied {
            assert!(via(&c, url).is_some(), "{url} should use the proxy");
        }
        // The URL's default port counts for an entry with a port.
        let c = config(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("NO_PROXY", "registry.internal:443"),
        ]);
        assert_eq!(via(&c, "https://registry.internal/v2/"), None);
        assert!(via(&c, "https://registry.internal:5000/v2/").is_some());
    }

    #[test]
    fn a_star_bypasses_everything() {
        let c = config(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "*")]);
        assert_eq!(via(&c, "https://quay.io/"), None);
        assert_eq!(via(&c, "https://10.1.1.1/"), None);
    }

    #[test]
    fn a_bad_proxy_names_the_variable_but_not_the_value() {
        let err = ProxyConfig::from_lookup(|name| {
            (name == "HTTPS_PROXY").then(|| "socks5://user:s3cret@p:1080".to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("HTTPS_PROXY") && err.contains("socks5"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        let err =
            ProxyConfig::from_lookup(|name| (name == "http_proxy").then(|| "http://".to_owned()))
                .unwrap_err()
                .to_string();
        assert!(err.contains("http_proxy"), "{err}");
    }

    #[test]
    fn cidr_masks_work_on_both_families() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_network(v4("10.1.2.3"), v4("10.0.0.0"), 8));
        assert!(!in_network(v4("11.1.2.3"), v4("10.0.0.0"), 8));
        assert!(in_network(v4("1.2.3.4"), v4("0.0.0.0"), 0));
        assert!(in_network(v4("fd00::5"), v4("fd00::"), 64));
        assert!(!in_network(v4("fd01::5"), v4("fd00::"), 64));
        assert!(!in_network(v4("10.1.2.3"), v4("fd00::"), 0));
    }
}

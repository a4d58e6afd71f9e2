//! The egress policy: which URLs and addresses outbound calls may reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use reqwest::Url;
use url::Host;

/// Why a destination is refused. The message names the rule, not the host's answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("is not a valid URL")]
    Malformed,
    #[error("is longer than 2048 characters")]
    TooLong,
    #[error("must use http or https")]
    Scheme,
    #[error("must not contain a user name or password")]
    Userinfo,
    #[error("has no host")]
    NoHost,
    #[error("uses port {0}, which is not allowed")]
    Port(u16),
    #[error("names a local or internal host")]
    InternalName,
    #[error("points at a {0} address, which is not reachable from Gavel")]
    BlockedAddress(&'static str),
    #[error("does not resolve")]
    Unresolvable,
    #[error("points at Gavel itself, which would make a job call itself")]
    Itself,
}

/// Ports of internal services that an agent URL may never target, even inside the opening.
const BLOCKED_PORTS: [u16; 11] = [0, 22, 25, 2375, 2376, 3306, 5432, 6379, 9200, 11211, 27017];

/// Cloud metadata endpoints: closed even when `egress.allow_cidrs` covers them.
const METADATA: [IpAddr; 5] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

/// Special-purpose ranges (IANA registries), each with the word an error uses.
const DENIED: [(&str, &str); 31] = [
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "NAT64"),
    ("100::/64", "discard"),
    ("2001::/23", "IETF protocol (Teredo)"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
    ("2001:10::/28", "ORCHID"),
];

/// What outbound calls may reach.
#[derive(Clone, Debug)]
pub struct EgressPolicy {
    denied: Vec<(IpNet, &'static str)>,
    allowed: Vec<IpNet>,
    /// Gavel's own listen addresses: never an agent, even inside the opening.
    own: Vec<SocketAddr>,
}

impl EgressPolicy {
    /// A policy with the operator's opening (`egress.allow_cidrs`), already validated.
    pub fn new(allow_cidrs: &[String]) -> Result<EgressPolicy, String> {
        let allowed = allow_cidrs
            .iter()
            .map(|cidr| cidr.parse::<IpNet>().map_err(|_| format!("`{cidr}` is not a CIDR")))
            .collect::<Result<Vec<_>, _>>()?;
        let denied = DENIED
            .iter()
            .filter_map(|(cidr, kind)| cidr.parse::<IpNet>().ok().map(|net| (net, *kind)))
            .collect();
        Ok(EgressPolicy { denied, allowed, own: Vec::new() })
    }

    /// Refuses Gavel's own listen address. Bound to an unspecified address, that port on the
    /// loopback addresses is refused too (the ones an agent URL inside the opening could use).
    pub fn with_own_address(mut self, address: SocketAddr) -> EgressPolicy {
        self.own.push(address);
        if address.ip().is_unspecified() {
            self.own.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port()));
            self.own.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), address.port()));
        }
        self
    }

    /// Refuses `ip:port` when it is Gavel's own listen address.
    pub fn check_not_itself(&self, ip: IpAddr, port: u16) -> Result<(), EgressError> {
        let ip = canonical(ip);
        if self.own.iter().any(|own| own.port() == port && canonical(own.ip()) == ip) {
            return Err(EgressError::Itself);
        }
        Ok(())
    }

    /// Checks an address. Metadata addresses are always refused; special-purpose ones unless
    /// the opening covers them; IPv6 outside global unicast (2000::/3) is refused.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EgressError> {
        let canonical = canonical(ip);
        if METADATA.contains(&canonical) || METADATA.contains(&ip) {
            return Err(EgressError::BlockedAddress("cloud metadata"));
        }
        if self.allowed.iter().any(|net| net.contains(&canonical) || net.contains(&ip)) {
            return Ok(());
        }
        for candidate in [ip, canonical] {
            if let Some((_, kind)) = self.denied.iter().find(|(net, _)| net.contains(&candidate)) {
                return Err(EgressError::BlockedAddress(kind));
            }
        }
        if let IpAddr::V6(v6) = canonical
            && (v6.segments()[0] & 0xe000) != 0x2000
        {
            return Err(EgressError::BlockedAddress("non-global IPv6"));
        }
        Ok(())
    }

    /// Checks a URL's shape and, for an IP-literal host, its address. A name still has to be
    /// resolved through the policy (`vet`, or the guarded resolver at call time).
    pub fn check_url(&self, raw: &str) -> Result<Url, EgressError> {
        if raw.len() > 2048 {
            return Err(EgressError::TooLong);
        }
        let url = Url::parse(raw).map_err(|_| EgressError::Malformed)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EgressError::Scheme);
        }
        // The parser drops an empty userinfo (`http://:@host`), so look at what was sent.
        let authority = raw.split_once("://").map_or(raw, |(_, rest)| rest);
        let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') || !url.username().is_empty() || url.password().is_some() {
            return Err(EgressError::Userinfo);
        }
        let port = url.port_or_known_default().ok_or(EgressError::Malformed)?;
        if BLOCKED_PORTS.contains(&port) {
            return Err(EgressError::Port(port));
        }
        match url.host() {
            None => return Err(EgressError::NoHost),
            Some(Host::Ipv4(v4)) => {
                self.check_ip(IpAddr::V4(v4))?;
                self.check_not_itself(IpAddr::V4(v4), port)?;
            }
            Some(Host::Ipv6(v6)) => {
                self.check_ip(IpAddr::V6(v6))?;
                self.check_not_itself(IpAddr::V6(v6), port)?;
            }
            Some(Host::Domain(name)) => check_name(name)?,
        }
        Ok(url)
    }

    /// The literal address of a URL's host, if it is one.
    pub fn literal_ip(url: &Url) -> Option<IpAddr> {
        match url.host() {
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        }
    }
}

/// `::ffff:a.b.c.d` and `::a.b.c.d` are the IPv4 address they embed; classification happens
/// on that.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let segments = v6.segments();
            if segments[..6].iter().all(|s| *s == 0) && (segments[6] != 0 || segments[7] > 1) {
                // IPv4-compatible (deprecated) form.
                return IpAddr::V4(Ipv4Addr::new(
                    (segments[6] >> 8) as u8,
                    segments[6] as u8,
                    (segments[7] >> 8) as u8,
                    segments[7] as u8,
                ));
            }
            ip
        }
        IpAddr::V4(_) => ip,
    }
}

/// Names that mean "this machine" or "this network" are refused before any lookup.
fn check_name(name: &str) -> Result<(), EgressError> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let internal_suffixes =
        [".localhost", ".local", ".internal", ".home.arpa", ".lan", ".intranet"];
    if name == "localhost"
        || !name.contains('.')
        || internal_suffixes.iter().any(|s| name.ends_with(s))
    {
        return Err(EgressError::InternalName);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed() -> EgressPolicy {
        EgressPolicy::new(&[]).unwrap()
    }

    #[test]
    fn public_addresses_pass_and_special_ones_do_not() {
        let policy = closed();
        for ok in ["1.1.1.1", "8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"] {
            assert_eq!(policy.check_ip(ok.parse().unwrap()), Ok(()), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "fec0::1",
        ] {
            assert!(policy.check_ip(bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_opening_admits_its_range_but_never_metadata() {
        let policy = EgressPolicy::new(&["127.0.0.0/8".into(), "169.254.0.0/16".into()]).unwrap();
        assert_eq!(policy.check_ip("127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(policy.check_ip("::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(policy.check_ip("169.254.1.1".parse().unwrap()), Ok(()));
        assert_eq!(
            policy.check_ip("169.254.169.254".parse().unwrap()),
            Err(EgressError::BlockedAddress("cloud metadata"))
        );
        assert!(policy.check_ip("::ffff:169.254.169.254".parse().unwrap()).is_err());
        assert!(policy.check_ip("10.0.0.1".parse().unwrap()).is_err());
        assert!(policy.check_ip("fd00:ec2::254".parse().unwrap()).is_err());
    }
}

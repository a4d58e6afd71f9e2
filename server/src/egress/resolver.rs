//! Name resolution through the egress policy.
//!
//! `GuardedResolver` is what the agent HTTP client resolves with: it looks a name up once,
//! refuses the name if *any* of its addresses is refused (so a name cannot mix a public and
//! a private address and hope for the right one), and hands the vetted addresses to the
//! connector, which connects only to them. The lookup itself is injectable so tests script
//! DNS answers instead of using real DNS.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::egress::policy::{EgressError, EgressPolicy};

/// A future of a lookup's answers.
pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Turns a host name into addresses.
pub trait Lookup: Send + Sync {
    fn lookup(&self, host: &str) -> LookupFuture;
}

/// The operating system's resolver.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let host = host.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|addr| addr.ip()).collect())
        })
    }
}

/// Fixed answers, for tests: a name not in the table does not resolve.
#[derive(Clone, Debug, Default)]
pub struct StaticLookup {
    answers: HashMap<String, Vec<IpAddr>>,
}

impl StaticLookup {
    pub fn new(answers: impl IntoIterator<Item = (&'static str, Vec<IpAddr>)>) -> StaticLookup {
        StaticLookup {
            answers: answers.into_iter().map(|(host, ips)| (host.to_owned(), ips)).collect(),
        }
    }
}

impl Lookup for StaticLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let answer = self.answers.get(host.trim_end_matches('.')).cloned();
        Box::pin(async move {
            answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
        })
    }
}

/// Resolves through the policy.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<EgressPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<EgressPolicy>, lookup: Arc<dyn Lookup>) -> GuardedResolver {
        GuardedResolver { policy, lookup }
    }

    /// Every address of `host`, if all of them pass the policy.
    pub async fn resolve_vetted(&self, host: &str) -> Result<Vec<IpAddr>, EgressError> {
        let ips = self.lookup.lookup(host).await.map_err(|_| EgressError::Unresolvable)?;
        if ips.is_empty() {
            return Err(EgressError::Unresolvable);
        }
        for ip in &ips {
            self.policy.check_ip(*ip)?;
        }
        Ok(ips)
    }

    /// Registration-time check of a URL: its shape, and every address its host resolves to.
    pub async fn vet_url(&self, raw: &str) -> Result<reqwest::Url, EgressError> {
        let url = self.policy.check_url(raw)?;
        if EgressPolicy::literal_ip(&url).is_none()
            && let Some(host) = url.host_str()
        {
            let port = url.port_or_known_default().unwrap_or(0);
            for ip in self.resolve_vetted(host).await? {
                self.policy.check_not_itself(ip, port)?;
            }
        }
        Ok(url)
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let ips = resolver.resolve_vetted(name.as_str()).await?;
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

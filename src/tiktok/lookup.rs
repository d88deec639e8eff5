//! Host lookups for the HTTP client, kept for a while.
//!
//! ureq looks the endpoint's host up before every request, also when a pooled connection carries
//! it, and with a timeout set (ours always are) it does so on a thread of its own: a thread and a
//! `getaddrinfo` per batch (a DNS query where nothing on the till caches one), and a batch that
//! fails when DNS does although its connection is up. [`Lookups`] keeps each host's addresses for
//! [`KEEP_FOR`] and forgets them all when a request gets no answer ([`Lookups::forget`]), so that
//! the retry looks the host up again: kept addresses are only used while they work.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a lookup is used for new requests: about the life of an idle pooled connection (ureq
/// keeps one 15 s), so a host that moves is followed at least as soon as a connection to it ends.
pub const KEEP_FOR: Duration = Duration::from_secs(30);

/// The hosts kept at most: the endpoint and a proxy, with room to spare.
const KEPT_MAX: usize = 4;

/// Lookups made through `R` (ureq's own by default), kept; a clone shares them (the agent owns
/// one, the client another, to forget them).
#[derive(Debug)]
pub struct Lookups<R = DefaultResolver>(Arc<Shared<R>>);

impl<R> Clone for Lookups<R> {
    fn clone(&self) -> Self {
        Lookups(self.0.clone())
    }
}

#[derive(Debug)]
struct Shared<R> {
    resolver: R,
    kept: Mutex<Vec<Kept>>,
}

#[derive(Debug)]
struct Kept {
    /// `scheme://host:port`, as the request has them.
    host: String,
    at: Instant,
    addrs: ResolvedSocketAddrs,
}

impl Default for Lookups {
    fn default() -> Self {
        Lookups::with(DefaultResolver::default())
    }
}

impl<R> Lookups<R> {
    pub fn with(resolver: R) -> Self {
        Lookups(Arc::new(Shared { resolver, kept: Mutex::new(Vec::new()) }))
    }

    /// Forget every lookup: a request got no answer, its host may have moved.
    pub fn forget(&self) {
        self.kept().clear();
    }

    /// How many hosts' lookups are kept.
    #[cfg(test)]
    pub fn kept_hosts(&self) -> usize {
        self.kept().len()
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        self.0.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<R: Resolver> Lookups<R> {
    fn resolve_at(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
        now: Instant,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        // Not the authority: its user information may hold a password.
        let host = format!(
            "{}://{}:{:?}",
            uri.scheme_str().unwrap_or_default(),
            uri.host().unwrap_or_default(),
            uri.port_u16()
        );
        if let Some(kept) = self.kept().iter().find(|k| k.host == host && fresh(k.at, now)) {
            return Ok(kept.addrs.clone());
        }
        // Not under the lock: a lookup may take until its timeout.
        let addrs = self.0.resolver.resolve(uri, config, timeout)?;
        let mut kept = self.kept();
        kept.retain(|k| k.host != host);
        if kept.len() >= KEPT_MAX {
            kept.remove(0);
        }
        kept.push(Kept { host, at: now, addrs: addrs.clone() });
        Ok(addrs)
    }
}

/// Whether a lookup made `at` may still be used `now`.
fn fresh(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) < KEEP_FOR
}

impl<R: Resolver> Resolver for Lookups<R> {
    fn resolve(&self, uri: &Uri, config: &Config, timeout: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        self.resolve_at(uri, config, timeout, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers 127.0.0.1 and the port, counting the lookups; fails while `down`.
    #[derive(Debug, Default)]
    struct Counting {
        lookups: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    impl Resolver for Counting {
        fn resolve(&self, uri: &Uri, _: &Config, _: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(ureq::Error::HostNotFound);
            }
            let mut addrs = self.empty();
            addrs.push(SocketAddr::from(([127, 0, 0, 1], uri.port_u16().unwrap_or(443))));
            Ok(addrs)
        }
    }

    fn lookup(l: &Lookups<Counting>, uri: &str, now: Instant) -> Result<u16, ureq::Error> {
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::from_secs(1),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        };
        l.resolve_at(&uri.parse().unwrap(), &Config::default(), timeout, now).map(|a| a[0].port())
    }

    #[test]
    fn a_lookup_is_kept_for_its_host_until_it_is_stale_or_forgotten() {
        let l = Lookups::with(Counting::default());
        let count = || l.0.resolver.lookups.load(Ordering::SeqCst);
        let t0 = Instant::now();
        assert_eq!(lookup(&l, "https://api.example:8443/a", t0).unwrap(), 8443);
        assert_eq!(lookup(&l, "https://api.example:8443/b?x=1", t0 + Duration::from_secs(29)).unwrap(), 8443);
        assert_eq!(count(), 1, "the same host within KEEP_FOR: kept");
        // Another port, another scheme: other hosts.
        assert_eq!(lookup(&l, "https://api.example:9443/a", t0).unwrap(), 9443);
        assert_eq!(lookup(&l, "http://api.example:8443/a", t0).unwrap(), 8443);
        assert_eq!(count(), 3);
        // Credentials are not part of what is kept.
        lookup(&l, "https://user:s3cr3t@api.example:8443/a", t0).unwrap();
        assert_eq!(count(), 3);
        assert!(!format!("{l:?}").contains("s3cr3t"));
        // Stale: looked up again, and kept from then.
        let t1 = t0 + KEEP_FOR;
        lookup(&l, "https://api.example:8443/a", t1).unwrap();
        lookup(&l, "https://api.example:8443/a", t1 + Duration::from_secs(1)).unwrap();
        assert_eq!(count(), 4);
        // Forgotten after a request without an answer.
        l.forget();
        lookup(&l, "https://api.example:8443/a", t1).unwrap();
        assert_eq!(count(), 5);
    }

    #[test]
    fn a_failed_lookup_is_not_kept_and_the_kept_hosts_are_bounded() {
        let l = Lookups::with(Counting::default());
        let count = || l.0.resolver.lookups.load(Ordering::SeqCst);
        let now = Instant::now();
        l.0.resolver.down.store(true, Ordering::SeqCst);
        assert!(lookup(&l, "https://h:1/", now).is_err());
        l.0.resolver.down.store(false, Ordering::SeqCst);
        assert_eq!(lookup(&l, "https://h:1/", now).unwrap(), 1);
        assert_eq!(count(), 2, "the failure was not kept");
        for port in 2..=5 {
            lookup(&l, &format!("https://h:{port}/"), now).unwrap();
        }
        assert_eq!(l.kept_hosts(), KEPT_MAX);
        // The oldest (port 1) made room.
        lookup(&l, "https://h:1/", now).unwrap();
        assert_eq!(count(), 7);
    }
}

//! Connection governance: a socket is admitted only while the gateway has room for it, and no
//! one network or certificate can take the room partners need.
//!
//! - At `accept`, before any byte is read: under the cap on open connections, on open
//!   connections from its network, and on handshakes in flight from its network. A network
//!   is an IPv4 /24 or an IPv6 /64 (one host has a whole /64; a handful of neighbouring
//!   addresses are one attacker as much as one address is).
//! - When every handshake slot is taken, the oldest handshake that has run for at least
//!   [`EVICT_AFTER`] is cut off to make room: a real client finishes its handshake in
//!   milliseconds, so the oldest is a stalled one, and a flood of stalled sockets from many
//!   networks cannot lock partners out.
//! - After the handshake, under the cap on open connections per certificate (a person's or a
//!   partner's certificate cannot hold every slot; a certificate no partner file names gets
//!   [`UNMAPPED_CONNECTIONS`]).
//!
//! Out of scope: how long an admitted socket may stay silent or idle (the accept loop's time
//! limits and the request-idle watchdog).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::settings::Limits;
use crate::identity::Fingerprint;

/// A handshake in flight this long may be cut off when a new socket needs its slot.
pub const EVICT_AFTER: Duration = Duration::from_secs(1);

/// Open connections a certificate that no partner file names may hold: enough to read the
/// public documents and be told `403 unknown-principal`, never enough to matter.
pub const UNMAPPED_CONNECTIONS: usize = 4;

/// Why a socket was not admitted, or was closed (the metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections` open already.
    Connections,
    /// `limits.max_connections_per_network` open from this network already.
    PerNetwork,
    /// `limits.max_handshakes` in flight, none old enough to cut off.
    Handshakes,
    /// `limits.max_handshakes_per_network` in flight from this network already.
    HandshakesPerNetwork,
    /// The certificate holds its cap of open connections already.
    PerCertificate,
}

impl Refused {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Connections => "connections",
            Refused::PerNetwork => "per-network",
            Refused::Handshakes => "handshakes",
            Refused::HandshakesPerNetwork => "handshakes-per-network",
            Refused::PerCertificate => "per-certificate",
        }
    }
}

/// The network an address counts against: its IPv4 /24 or IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Network(IpAddr);

impl Network {
    /// The network of `ip` (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::v4(v4),
                None => {
                    let s = v6.segments();
                    Self(IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0]))
                }
            },
        }
    }

    fn v4(v4: std::net::Ipv4Addr) -> Self {
        let o = v4.octets();
        Self(IpAddr::from([o[0], o[1], o[2], 0]))
    }
}

/// Per network: open connections and handshakes in flight.
#[derive(Debug, Default)]
struct NetworkCounts {
    open: usize,
    handshaking: usize,
}

/// A handshake in flight: when it began, and how to cut it off.
#[derive(Debug)]
struct InFlight {
    began: Instant,
    cut: oneshot::Sender<()>,
}

/// The counters admission decides on.
#[derive(Debug, Default)]
pub struct Admission {
    open: AtomicUsize,
    handshaking: AtomicUsize,
    networks: Mutex<HashMap<Network, NetworkCounts>>,
    in_flight: Mutex<BTreeMap<u64, InFlight>>,
    next_id: AtomicU64,
    certificates: Mutex<HashMap<Fingerprint, usize>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Holds an open-connection slot (global and per network) until dropped.
#[derive(Debug)]
pub struct OpenSlot(Arc<Admission>, Network);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.release_network(self.1, |c| c.open -= 1);
    }
}

/// Holds a handshake slot (global and per network) until dropped; [`HandshakeSlot::cut`]
/// resolves if the slot is taken away for a newer socket.
#[derive(Debug)]
pub struct HandshakeSlot {
    admission: Arc<Admission>,
    network: Network,
    id: u64,
    cut: Option<oneshot::Receiver<()>>,
}

impl HandshakeSlot {
    /// Resolves when this handshake is cut off to make room (never otherwise).
    pub async fn cut(&mut self) {
        match self.cut.as_mut() {
            Some(rx) => {
                if rx.await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        lock(&self.admission.in_flight).remove(&self.id);
        self.admission.handshaking.fetch_sub(1, Ordering::SeqCst);
        self.admission
            .release_network(self.network, |c| c.handshaking -= 1);
    }
}

/// Holds one of a certificate's open-connection slots until dropped.
#[derive(Debug)]
pub struct CertificateSlot(Arc<Admission>, Fingerprint);

impl Drop for CertificateSlot {
    fn drop(&mut self) {
        let mut map = lock(&self.0.certificates);
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// Takes one slot of `counter` if it is under `cap`.
fn take(counter: &AtomicUsize, cap: usize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < cap).then_some(n + 1)
        })
        .is_ok()
}

impl Admission {
    /// Admits a socket from `peer` under `limits`, or says why not.
    pub fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        limits: &Limits,
    ) -> Result<(OpenSlot, HandshakeSlot), Refused> {
        if !take(&self.open, limits.max_connections) {
            return Err(Refused::Connections);
        }
        let network = Network::of(peer);
        {
            let mut map = lock(&self.networks);
            let counts = map.entry(network).or_default();
            if counts.open >= limits.max_connections_per_network {
                drop(map);
                self.open.fetch_sub(1, Ordering::SeqCst);
                self.forget_network_if_empty(network);
                return Err(Refused::PerNetwork);
            }
            if counts.handshaking >= limits.max_handshakes_per_network {
                drop(map);
                self.open.fetch_sub(1, Ordering::SeqCst);
                self.forget_network_if_empty(network);
                return Err(Refused::HandshakesPerNetwork);
            }
            counts.open += 1;
            counts.handshaking += 1;
        }
        let open = OpenSlot(self.clone(), network);
        if !take(&self.handshaking, limits.max_handshakes) && !self.cut_oldest() {
            self.release_network(network, |c| c.handshaking -= 1);
            return Err(Refused::Handshakes);
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        lock(&self.in_flight).insert(
            id,
            InFlight {
                began: Instant::now(),
                cut: tx,
            },
        );
        Ok((
            open,
            HandshakeSlot {
                admission: self.clone(),
                network,
                id,
                cut: Some(rx),
            },
        ))
    }

    /// Cuts off the oldest handshake in flight if it has run for [`EVICT_AFTER`], taking its
    /// place in the count (its task gives its own slot back as it ends, so the count is over
    /// the cap by at most the handshakes being cut off at that moment).
    fn cut_oldest(&self) -> bool {
        let mut in_flight = lock(&self.in_flight);
        let oldest = in_flight
            .iter()
            .min_by_key(|(_, h)| h.began)
            .filter(|(_, h)| h.began.elapsed() >= EVICT_AFTER)
            .map(|(id, _)| *id);
        let Some(id) = oldest else {
            return false;
        };
        if let Some(h) = in_flight.remove(&id) {
            let _ = h.cut.send(());
        }
        self.handshaking.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// After the handshake: one of `certificate`'s open-connection slots, under `cap`.
    pub fn admit_certificate(
        self: &Arc<Self>,
        certificate: Fingerprint,
        cap: usize,
    ) -> Result<CertificateSlot, Refused> {
        let mut map = lock(&self.certificates);
        let n = map.entry(certificate).or_default();
        if *n >= cap {
            if *n == 0 {
                map.remove(&certificate);
            }
            return Err(Refused::PerCertificate);
        }
        *n += 1;
        Ok(CertificateSlot(self.clone(), certificate))
    }

    fn release_network(&self, network: Network, f: impl FnOnce(&mut NetworkCounts)) {
        let mut map = lock(&self.networks);
        if let Some(c) = map.get_mut(&network) {
            f(c);
            if c.open == 0 && c.handshaking == 0 {
                map.remove(&network);
            }
        }
    }

    fn forget_network_if_empty(&self, network: Network) {
        self.release_network(network, |_| {});
    }

    /// Open connections now (admitted, not yet closed).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(conns: usize, per_net: usize, hs: usize, hs_per_net: usize) -> Limits {
        Limits {
            max_connections: conns,
            max_connections_per_network: per_net,
            max_handshakes: hs,
            max_handshakes_per_network: hs_per_net,
            ..Limits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        assert_eq!(Network::of(ip("10.0.0.1")), Network::of(ip("10.0.0.200")));
        assert_ne!(Network::of(ip("10.0.0.1")), Network::of(ip("10.0.1.1")));
        assert_eq!(
            Network::of(ip("2001:db8:1:2::1")),
            Network::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Network::of(ip("2001:db8:1:2::1")),
            Network::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Network::of(ip("::ffff:10.0.0.7")),
            Network::of(ip("10.0.0.1"))
        );
    }

    #[test]
    fn each_cap_holds_and_slots_come_back() {
        let a = Arc::new(Admission::default());
        let l = limits(4, 2, 2, 1);
        let first = a.admit(ip("10.0.0.1"), &l).unwrap();
        // The same /24: one handshake in flight at a time.
        assert_eq!(
            a.admit(ip("10.0.0.2"), &l).unwrap_err(),
            Refused::HandshakesPerNetwork
        );
        let (open_one, hs_one) = first;
        drop(hs_one); // handshake done, connection still open
        let (open_two, hs_two) = a.admit(ip("10.0.0.2"), &l).unwrap();
        drop(hs_two);
        // Two open from 10.0.0.0/24 already.
        assert_eq!(
            a.admit(ip("10.0.0.3"), &l).unwrap_err(),
            Refused::PerNetwork
        );
        let other = a.admit(ip("10.0.1.1"), &l).unwrap();
        let another = a.admit(ip("10.0.2.1"), &l).unwrap();
        assert_eq!(a.open(), 4);
        assert_eq!(
            a.admit(ip("10.0.3.1"), &l).unwrap_err(),
            Refused::Connections
        );
        drop((open_one, open_two, other, another));
        assert_eq!(a.open(), 0);
        assert!(lock(&a.networks).is_empty(), "counts come back whole");
        assert!(a.admit(ip("10.0.0.1"), &l).is_ok());
    }

    #[tokio::test]
    async fn a_stalled_handshake_gives_way_when_every_slot_is_taken() {
        let a = Arc::new(Admission::default());
        let l = limits(100, 100, 1, 10);
        let (_open, mut stalled) = a.admit(ip("10.0.0.1"), &l).unwrap();
        // Too young to cut off: refused.
        assert_eq!(
            a.admit(ip("10.0.1.1"), &l).unwrap_err(),
            Refused::Handshakes
        );
        lock(&a.in_flight)
            .values_mut()
            .for_each(|h| h.began -= EVICT_AFTER);
        let (_open2, _fresh) = a.admit(ip("10.0.1.1"), &l).unwrap();
        tokio::time::timeout(Duration::from_secs(1), stalled.cut())
            .await
            .expect("the stalled handshake is told to stop");
    }

    #[test]
    fn a_certificate_holds_at_most_its_cap() {
        let a = Arc::new(Admission::default());
        let fp = Fingerprint::of_der(b"cert");
        let one = a.admit_certificate(fp, 2).unwrap();
        let _two = a.admit_certificate(fp, 2).unwrap();
        assert_eq!(
            a.admit_certificate(fp, 2).unwrap_err(),
            Refused::PerCertificate
        );
        assert!(
            a.admit_certificate(Fingerprint::of_der(b"other"), 2)
                .is_ok()
        );
        drop(one);
        assert!(a.admit_certificate(fp, 2).is_ok());
    }
}

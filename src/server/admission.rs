//! Connection governance before TLS: a socket is admitted only while the gateway has room for
//! it — under the cap on open connections, on handshakes in flight, and on handshakes in
//! flight from its address — so a flood of sockets (silent or slow) cannot exhaust file
//! descriptors, memory or handshake CPU, nor take the slots partners need. Admission is
//! decided at `accept`, before any byte is read; the caps come from the configuration in
//! force. Out of scope: how long an admitted socket may stay silent (the accept loop's
//! first-byte and handshake time limits).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::settings::Limits;

/// Why a socket was not admitted (the metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections` open already.
    Connections,
    /// `limits.max_handshakes` in flight already.
    Handshakes,
    /// `limits.max_handshakes_per_address` in flight from this address already.
    PerAddress,
}

impl Refused {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Connections => "connections",
            Refused::Handshakes => "handshakes",
            Refused::PerAddress => "per-address",
        }
    }
}

/// The counters admission decides on.
#[derive(Debug, Default)]
pub struct Admission {
    open: AtomicUsize,
    handshaking: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds an open-connection slot until dropped (the connection's end).
#[derive(Debug)]
pub struct OpenSlot(Arc<Admission>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Holds a handshake slot (global and per address) until dropped (the handshake's end).
#[derive(Debug)]
pub struct HandshakeSlot(Arc<Admission>, IpAddr);

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.handshaking.fetch_sub(1, Ordering::SeqCst);
        self.0.release_address(self.1);
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
        let open = OpenSlot(self.clone());
        {
            let mut map = self
                .per_address
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = map.entry(peer).or_default();
            if *n >= limits.max_handshakes_per_address {
                return Err(Refused::PerAddress);
            }
            *n += 1;
        }
        if !take(&self.handshaking, limits.max_handshakes) {
            self.release_address(peer);
            return Err(Refused::Handshakes);
        }
        Ok((open, HandshakeSlot(self.clone(), peer)))
    }

    /// Gives back one of `peer`'s handshake slots.
    fn release_address(&self, peer: IpAddr) {
        let mut map = self
            .per_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                map.remove(&peer);
            }
        }
    }

    /// Open connections now (admitted, not yet closed).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(conns: usize, hs: usize, per: usize) -> Limits {
        Limits {
            max_connections: conns,
            max_handshakes: hs,
            max_handshakes_per_address: per,
            ..Limits::default()
        }
    }

    #[test]
    fn each_cap_holds_and_slots_come_back() {
        let a = Arc::new(Admission::default());
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let l = limits(3, 2, 1);
        let first = a.admit(one, &l).unwrap();
        assert_eq!(a.admit(one, &l).unwrap_err(), Refused::PerAddress);
        let second = a.admit(two, &l).unwrap();
        let three: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(a.admit(three, &l).unwrap_err(), Refused::Handshakes);
        drop(second.1); // handshake done, connection still open
        let third = a.admit(three, &l).unwrap();
        assert_eq!(a.open(), 3);
        assert_eq!(
            a.admit("10.0.0.4".parse().unwrap(), &l).unwrap_err(),
            Refused::Connections
        );
        drop((first, second.0, third));
        assert_eq!(a.open(), 0);
        assert!(a.admit(one, &l).is_ok());
    }
}

//! Which refused handshakes get a log line: the first from an address, then at most one per
//! address per [`WINDOW`], carrying how many were refused silently in between. A peer with the
//! wrong cookie retries every few seconds, and a hostile client can open connection after
//! connection; logging each would flood the activity log (which every node ships to the `log`
//! service) with one fact. Every refusal still counts in `switchboard_handshake_failures_total`
//! and is still a `ClusterEvent`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one log line per address this often.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at once. Past it, under a spray of addresses, refusals from addresses
/// not remembered go unlogged (the metric still counts them), so memory stays bounded.
const MAX_ADDRESSES: usize = 4096;

/// The addresses refused lately.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    recent: Mutex<HashMap<String, Window>>,
}

#[derive(Debug)]
struct Window {
    logged_at: Instant,
    suppressed: u64,
}

impl RefusalLog {
    /// Whether a refusal from `address` (`host:port`) is logged now: `Some(n)` with the refusals
    /// from that host left unlogged since its last line, or `None` to stay silent.
    pub(crate) fn admit(&self, address: &str) -> Option<u64> {
        self.admit_at(address, Instant::now())
    }

    fn admit_at(&self, address: &str, now: Instant) -> Option<u64> {
        // The port changes with every connection; the host is who keeps trying.
        let host = address
            .parse::<SocketAddr>()
            .map_or_else(|_| address.to_owned(), |a| a.ip().to_string());
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= MAX_ADDRESSES && !recent.contains_key(&host) {
            recent.retain(|_, w| now.duration_since(w.logged_at) < WINDOW);
            if recent.len() >= MAX_ADDRESSES {
                return None;
            }
        }
        match recent.get_mut(&host) {
            Some(window) if now.duration_since(window.logged_at) < WINDOW => {
                window.suppressed += 1;
                None
            }
            Some(window) => {
                let suppressed = window.suppressed;
                *window = Window {
                    logged_at: now,
                    suppressed: 0,
                };
                Some(suppressed)
            }
            None => {
                recent.insert(
                    host,
                    Window {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_host_and_window_with_the_count_it_left_out() {
        let log = RefusalLog::default();
        let start = Instant::now();
        assert_eq!(log.admit_at("10.0.0.1:40000", start), Some(0));
        for port in 40001..40100 {
            assert_eq!(log.admit_at(&format!("10.0.0.1:{port}"), start), None);
        }
        // Another host is logged at once.
        assert_eq!(log.admit_at("10.0.0.2:1", start), Some(0));
        // Past the window, the next one is logged with the 99 left out.
        assert_eq!(
            log.admit_at("10.0.0.1:50000", start + WINDOW),
            Some(99),
            "the count of refusals logged silently"
        );
    }

    #[test]
    fn a_spray_of_addresses_stays_bounded() {
        let log = RefusalLog::default();
        let now = Instant::now();
        let logged = (0..MAX_ADDRESSES as u32 * 3)
            .filter(|i| {
                let address = std::net::Ipv4Addr::from(0x0a00_0000 + i);
                log.admit_at(&format!("{address}:1"), now).is_some()
            })
            .count();
        assert_eq!(logged, MAX_ADDRESSES);
        assert_eq!(log.recent.lock().unwrap().len(), MAX_ADDRESSES);
        // Once the window has passed, remembered hosts make room again.
        assert_eq!(log.admit_at("192.0.2.1:1", now + WINDOW), Some(0));
    }
}

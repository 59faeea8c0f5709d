//! Detection thresholds, layered like every node's settings (defaults < `switchboard.toml` <
//! `SWITCHBOARD_*` environment), with defaults that stay quiet on ordinary chat traffic.

use serde::Deserialize;
use switchboard::NodeError;

/// When activity becomes an anomaly.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// `SWITCHBOARD_FLOOD_POSTS`: posts by one user within 10 s.
    pub flood_posts: usize,
    /// `SWITCHBOARD_SPAM_REPEATS`: the same body posted this often within 10 min...
    pub spam_repeats: usize,
    /// `SWITCHBOARD_SPAM_ROOMS`: ...across at least this many rooms.
    pub spam_rooms: usize,
    /// `SWITCHBOARD_SPIKE_Z`: a room's per-minute count this many standard deviations above its
    /// own 30-minute baseline...
    pub spike_z: f64,
    /// `SWITCHBOARD_SPIKE_MIN`: ...and at least this many messages in the minute.
    pub spike_min: usize,
    /// `SWITCHBOARD_FAILED_LOGINS`: failed logins for one username or from one address in 5 min.
    pub failed_logins: usize,
    /// `SWITCHBOARD_FLAP_DOWNS`: separate downs of one node within 10 min.
    pub flap_downs: usize,
    /// `SWITCHBOARD_REPORT_SURGE`: content reports on one room within 10 min.
    pub report_surge: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            flood_posts: 20,
            spam_repeats: 5,
            spam_rooms: 2,
            spike_z: 3.0,
            spike_min: 30,
            failed_logins: 5,
            flap_downs: 3,
            report_surge: 3,
        }
    }
}

impl Thresholds {
    /// Loads the layered settings.
    pub fn from_env() -> Result<Self, NodeError> {
        switchboard::config::load(&[])
    }
}

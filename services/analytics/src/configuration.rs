//! The analytics node's own settings, layered like every node's (defaults < `switchboard.toml` <
//! `SWITCHBOARD_*` environment).

use serde::Deserialize;
use switchboard::NodeError;

/// Settings of the analytics service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AnalyticsSettings {
    /// `SWITCHBOARD_ANALYTICS_RECONCILE_MS`: how often a replica compares its room cursors with
    /// the database's (to catch a lost broadcast of a room's latest event) and reads the
    /// accounts registered since its last look.
    pub analytics_reconcile_ms: u64,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            analytics_reconcile_ms: 2000,
        }
    }
}

impl AnalyticsSettings {
    /// Loads the layered settings.
    pub fn from_env() -> Result<Self, NodeError> {
        switchboard::config::load(&[])
    }
}

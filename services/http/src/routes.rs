//! The API's handlers, one module per resource.

pub(crate) mod accounts;
pub(crate) mod analytics;
pub(crate) mod anomalies;
pub(crate) mod events;
pub(crate) mod logs;
pub(crate) mod messages;
pub(crate) mod nodes;
pub(crate) mod operations;
pub(crate) mod reports;
pub(crate) mod rooms;

//! Waiting on a condition with a deadline: what tests, tools and start-up code use instead of
//! sleeping and hoping.

use std::future::Future;
use std::time::Duration;

/// Polls `condition` every few milliseconds until it holds or `deadline` passes; returns whether
/// it held.
pub async fn eventually<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

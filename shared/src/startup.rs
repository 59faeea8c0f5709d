//! The start of every node binary: telemetry, configuration and cookie, the node and its
//! applications, then run until SIGTERM or Ctrl-C. Every binary's `main` is one call to
//! [`run_applications`].

use std::future::Future;

use crate::activity;
use crate::application::{Applications, SharedApplication, parse_selection};
use crate::config::NodeConfig;
use crate::cookie::Cookie;
use crate::error::NodeError;
use crate::node::Node;
use crate::telemetry::{self, LogFormat};

/// Sets up logging (stdout, and activity shipped to the `log` service), loads the node
/// configuration and cookie (refusing to start without a valid cookie), starts the node with
/// `start`, and runs it until a shutdown signal.
pub async fn run<F, Fut>(start: F) -> Result<(), NodeError>
where
    F: FnOnce(NodeConfig, Cookie) -> Fut,
    Fut: Future<Output = Result<Node, NodeError>>,
{
    let (layer, activity) = activity::buffer(activity::BUFFER);
    telemetry::init(LogFormat::from_env(), vec![Box::new(layer.filtered())]);
    let config = NodeConfig::from_env()?;
    let cookie = Cookie::from_env()?;
    let node = start(config, cookie).await?;
    activity::ship(&node, activity);
    node.run_until_signal().await;
    Ok(())
}

/// [`run`] for a node hosting `selection` of `catalog` (`log,reporting`, or `all`), named after
/// its one application, or `node@<host>` when it hosts several.
pub async fn run_applications(
    catalog: Vec<SharedApplication>,
    selection: &str,
) -> Result<(), NodeError> {
    let selected = parse_selection(selection, &catalog)?;
    let kind = match selected[..] {
        [only] => only,
        _ => "node",
    };
    run(|config, cookie| async move {
        let (node, _) =
            Applications::boot(kind, config, cookie, catalog.clone(), &selected).await?;
        Ok(node)
    })
    .await
}

/// Turns the outcome of [`run`] into the process exit code, printing a start-up failure (no
/// cookie, a port in use, ...) as one clear line rather than a backtrace.
pub fn exit_code(result: Result<(), NodeError>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let program = std::env::args().next().unwrap_or_default();
            let program = std::path::Path::new(&program)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            eprintln!("{program}: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

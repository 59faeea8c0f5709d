//! The baselines the runtime is measured against, each a server (run by a hidden `serve-*`
//! subcommand in a process of its own) and a client (driven in the bench process): plain tonic
//! over the same HTTP/2 settings the runtime uses, and JSON over HTTP/1.1 with keep-alive.
//! They carry the same payload and run under the same worker counts as the runtime scenarios.

pub(crate) mod json_http;
pub(crate) mod tonic_echo;

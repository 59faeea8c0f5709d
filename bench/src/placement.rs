//! CPU placement: pins the bench (client) and its server processes to disjoint CPUs with
//! `taskset`, so that each side gets the cores its worker count implies, and every scenario sees
//! the same placement.
//!
//! Left to the kernel, a client and a server thread on a 2-CPU virtual machine sometimes share a
//! CPU and sometimes do not, and which one happens decides a single call's latency (a wake-up on
//! the same CPU is a context switch; one across CPUs may wake a halted virtual CPU) by more than
//! the differences being measured. `taskset` (util-linux) is used rather than the affinity
//! syscall because the workspace forbids `unsafe`; without it the run is simply not pinned.

use std::process::{Command, Stdio};

/// Where the processes of a run are placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Client and servers on disjoint CPU lists (in `taskset -c` syntax).
    Pinned { client: String, server: String },
    /// Left to the kernel, and why.
    Unpinned(String),
}

impl Placement {
    /// Disjoint CPUs for `client_workers` and `server_workers` threads among the CPUs this process
    /// may run on, if there are enough.
    pub(crate) fn plan(client_workers: usize, server_workers: usize) -> Self {
        let allowed = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                    .map(|list| parse_cpu_list(list.trim()))
            })
            .unwrap_or_default();
        Self::split(&allowed, client_workers, server_workers)
    }

    fn split(allowed: &[usize], client_workers: usize, server_workers: usize) -> Self {
        if allowed.len() < client_workers + server_workers {
            return Placement::Unpinned(format!(
                "{} usable CPU(s) < {client_workers} client + {server_workers} server workers",
                allowed.len()
            ));
        }
        let (client, rest) = allowed.split_at(client_workers);
        Placement::Pinned {
            client: cpu_list(client),
            server: cpu_list(&rest[..server_workers]),
        }
    }

    /// Pins this whole process (every thread) to the client CPUs. On failure the placement
    /// becomes unpinned, with the reason.
    pub(crate) fn pin_self(self) -> Self {
        let Placement::Pinned { client, .. } = &self else {
            return self;
        };
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", client, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(status) if status.success() => self,
            Ok(status) => Placement::Unpinned(format!("taskset failed ({status})")),
            Err(error) => Placement::Unpinned(format!("taskset unavailable ({error})")),
        }
    }

    /// A command that runs `program` on the server CPUs (or unpinned).
    pub(crate) fn server_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self {
            Placement::Pinned { server, .. } => pinned(server, program),
            Placement::Unpinned(_) => Command::new(program),
        }
    }

    /// A command that runs `program` on the client CPUs (or unpinned): for a client that is a
    /// process of its own, such as an Erlang node, rather than the bench.
    pub(crate) fn client_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self {
            Placement::Pinned { client, .. } => pinned(client, program),
            Placement::Unpinned(_) => Command::new(program),
        }
    }

    /// A command that runs `program` on the client and server CPUs together (or unpinned): for
    /// the many processes of a cluster, which share the machine as a cluster's nodes would,
    /// rather than queue on the one server CPU. Without it they would inherit the bench's own
    /// pinning to the client CPUs.
    pub(crate) fn shared_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self {
            Placement::Pinned { client, server } => pinned(&format!("{client},{server}"), program),
            Placement::Unpinned(_) => Command::new(program),
        }
    }

    /// The CPUs [`Placement::shared_command`] runs on, for a family's notes.
    pub(crate) fn describe_shared(&self) -> String {
        match self {
            Placement::Pinned { client, server } => {
                format!(
                    "on CPUs {client},{server} (shared with the bench, which is on CPU {client})"
                )
            }
            Placement::Unpinned(_) => "wherever the kernel puts them (not pinned)".into(),
        }
    }

    /// For the report's header.
    pub(crate) fn describe(&self) -> String {
        match self {
            Placement::Pinned { client, server } => {
                format!("client pinned to CPU {client}, servers to CPU {server}")
            }
            Placement::Unpinned(why) => format!("not pinned to CPUs: {why}"),
        }
    }
}

/// `taskset -c <cpus> <program>`: the program execs in place of taskset, keeping its pid.
fn pinned(cpus: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("taskset");
    command.arg("-c").arg(cpus).arg(program);
    command
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(part.parse::<usize>().ok()),
        }
    }
    cpus
}

/// CPUs as `taskset -c` takes them.
fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), vec![0, 1]);
        assert_eq!(parse_cpu_list("0-2,5,7-8"), vec![0, 1, 2, 5, 7, 8]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
    }

    #[test]
    fn splits_cpus_between_client_and_servers() {
        assert_eq!(
            Placement::split(&[0, 1], 1, 1),
            Placement::Pinned {
                client: "0".into(),
                server: "1".into()
            }
        );
        assert_eq!(
            Placement::split(&[2, 3, 6, 7], 1, 2),
            Placement::Pinned {
                client: "2".into(),
                server: "3,6".into()
            }
        );
        assert!(matches!(
            Placement::split(&[0, 1], 2, 1),
            Placement::Unpinned(_)
        ));
    }
}

//! What the kernel says a member process costs: CPU time (`utime` + `stime` of
//! `/proc/<pid>/stat`, every thread of the process, those that have exited included), resident
//! memory (`VmRSS`), and established TCP connections (its socket inodes under `/proc/<pid>/fd`,
//! looked up in the network namespace's `/proc/net/tcp` and `tcp6`).
//!
//! The TCP tables are read once per measurement, not once per process: at 128 nodes they hold
//! tens of thousands of sockets.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context, bail};

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, which Linux fixes at 100 a second on
/// every architecture whatever the kernel's own tick rate (`CONFIG_HZ`) is.
const USER_HZ: u64 = 100;

/// The kernel's `TCP_ESTABLISHED` state, as `/proc/net/tcp` writes it.
const ESTABLISHED: &str = "01";

/// CPU time `pid` has used so far, user and system, all threads.
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_time(&stat).with_context(|| format!("the stat of process {pid}"))
}

/// `utime` + `stime` of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so fields are counted from the last
/// `)`: `utime` and `stime` are fields 14 and 15, the 12th and 13th after it.
fn parse_cpu_time(stat: &str) -> anyhow::Result<Duration> {
    let (_, rest) = stat.rsplit_once(')').context("no command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .context("too few fields")?
            .parse()
            .context("a CPU time that is not a number")
    };
    let ticks = tick(11)? + tick(12)?;
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// The resident set of `pid` (`VmRSS`), in bytes.
pub(crate) fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .with_context(|| format!("process {pid} has no VmRSS"))?;
    match line.split_whitespace().collect::<Vec<_>>()[..] {
        [kib, "kB"] => Ok(kib.parse::<u64>().context("VmRSS is not a number")? * 1024),
        _ => bail!("VmRSS of process {pid} is not in kB: {line:?}"),
    }
}

/// The state of every TCP socket of this network namespace, by inode.
#[derive(Debug, Default)]
pub(crate) struct TcpTable {
    states: HashMap<u64, String>,
}

impl TcpTable {
    /// Reads `/proc/net/tcp` and `/proc/net/tcp6`.
    pub(crate) fn read() -> anyhow::Result<Self> {
        let mut table = Self::default();
        for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
            // A kernel without IPv6 has no tcp6.
            if let Ok(text) = std::fs::read_to_string(path) {
                table.add(&text);
            }
        }
        Ok(table)
    }

    /// Adds the rows of one table: `sl local remote st ... uid timeout inode ...`.
    fn add(&mut self, text: &str) {
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let (Some(state), Some(inode)) = (fields.get(3), fields.get(9))
                && let Ok(inode) = inode.parse::<u64>()
                && inode != 0
            {
                self.states.insert(inode, (*state).to_owned());
            }
        }
    }

    /// How many established TCP connections `pid` holds open.
    pub(crate) fn established(&self, pid: u32) -> anyhow::Result<usize> {
        let inodes = socket_inodes(pid)?;
        Ok(inodes
            .iter()
            .filter(|inode| self.states.get(inode).is_some_and(|s| s == ESTABLISHED))
            .count())
    }
}

/// The inodes of the sockets among `pid`'s open files (`socket:[<inode>]` links).
fn socket_inodes(pid: u32) -> anyhow::Result<HashSet<u64>> {
    let dir = format!("/proc/{pid}/fd");
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        // A descriptor closed while the directory is read is simply gone.
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok())
        {
            inodes.insert(inode);
        }
    }
    Ok(inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_from_the_last_parenthesis() {
        let stat = "4242 (weird) name)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 \
                    3 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_time(stat).unwrap(), Duration::from_millis(3250));
        assert!(parse_cpu_time("1 (x) S 1 2").is_err());
        let own = cpu_time(std::process::id()).unwrap();
        assert!(own < Duration::from_secs(3600), "{own:?}");
        assert!(rss(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn counts_only_established_sockets_of_the_process() {
        let mut table = TcpTable::default();
        table.add(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0  0 111 1\n\
             1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  0  0 222 1\n\
             2: 0100007F:C350 0100007F:1F90 06 00000000:00000000 00:00000000 00000000  0  0 0 1\n",
        );
        assert_eq!(table.states.get(&111).map(String::as_str), Some("0A"));
        assert_eq!(
            table.states.get(&222).map(String::as_str),
            Some(ESTABLISHED)
        );
        assert!(!table.states.contains_key(&0));
        // A process with a loopback connection of its own holds two established sockets.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _server = listener.accept().unwrap();
        let table = TcpTable::read().unwrap();
        assert!(table.established(std::process::id()).unwrap() >= 2);
    }
}

//! README's walkthrough, run as it is written: the ```sh blocks of its "## Walkthrough" section,
//! taken from README.md itself, run top to bottom by `bash -euo pipefail` against a fresh
//! `switchboard up`, so that README and the API cannot drift apart. Only the line that sets
//! `API=http://127.0.0.1:8080` is changed, to the cluster's real address (its ports are free ones
//! the kernel picked). The walkthrough's `curl -f` turns any 4xx or 5xx into a failed command, and
//! `-e` fails the script on it. Needs `bash`, `curl` and `python3`, and the service binaries
//! (`cargo build --workspace --bins`).

mod local_cluster;

use std::process::Stdio;

use local_cluster::{DEADLINE, Up};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// README as this test was built with it.
const README: &str = include_str!("../../README.md");

/// The line of the walkthrough that names the API's address.
const API_LINE: &str = "API=http://127.0.0.1:8080";

/// The ```sh blocks of README's "## Walkthrough" section, joined in order.
fn walkthrough(readme: &str) -> String {
    let section = readme
        .split_once("\n## Walkthrough\n")
        .expect("README has a \"## Walkthrough\" section")
        .1;
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut script = String::new();
    let mut in_block = false;
    for line in section.lines() {
        if in_block {
            if line.trim_end() == "```" {
                in_block = false;
            } else {
                script.push_str(line);
                script.push('\n');
            }
        } else if line.trim_end() == "```sh" {
            in_block = true;
        }
    }
    assert!(!in_block, "a ```sh block of the walkthrough is not closed");
    script
}

#[test]
fn the_walkthrough_is_found_with_its_api_line() {
    let script = walkthrough(README);
    assert!(script.contains("curl "), "{script}");
    assert_eq!(
        script.lines().filter(|line| *line == API_LINE).count(),
        1,
        "the walkthrough sets `{API_LINE}` on a line of its own, once"
    );
}

#[tokio::test]
async fn the_readme_walkthrough_runs_as_written_on_a_fresh_cluster() {
    run_walkthrough(Up::start("")).await;
}

/// The one-process shape serves the same chat: the walkthrough runs on it unchanged.
#[tokio::test]
async fn the_readme_walkthrough_runs_as_written_on_one_process() {
    run_walkthrough(Up::start_with(&["--single"])).await;
}

/// Runs the walkthrough against `up`, failing with its output if any command fails.
async fn run_walkthrough(up: Up) {
    let script = walkthrough(README)
        .lines()
        .map(|line| {
            if line == API_LINE {
                format!("API={}", up.urls[0])
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = up.work_dir();
    std::fs::write(dir.join("walkthrough.sh"), &script).unwrap();
    let stdout = std::fs::File::create(dir.join("walkthrough.out")).unwrap();
    let stderr = std::fs::File::create(dir.join("walkthrough.err")).unwrap();
    // Run from the directory `up` was started in, as README says, where `switchboard-data/` is.
    // A process group of its own, so that whatever the script left running in the background
    // (its event streams, if it failed before stopping them) can be stopped with it. Output goes
    // to files, so no pipe stays open after the script ends.
    let mut bash = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "walkthrough.sh"])
        .current_dir(dir)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .expect("bash runs");
    let group = Pid::from_raw(-(bash.id().expect("a pid") as i32));
    let status = match tokio::time::timeout(DEADLINE, bash.wait()).await {
        Ok(waited) => Some(waited.expect("bash was waited for")),
        Err(_) => None,
    };
    let _ = kill(group, Signal::SIGKILL);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let report = || {
        format!(
            "script:\n{script}\n\nits output:\n{}\n\nits errors:\n{}\n\n`switchboard up`:\n{}",
            read("walkthrough.out"),
            read("walkthrough.err"),
            up.output()
        )
    };
    match status {
        Some(status) => assert!(
            status.success(),
            "the walkthrough failed ({status}); {}",
            report()
        ),
        None => panic!(
            "the walkthrough did not finish within {DEADLINE:?}; {}",
            report()
        ),
    }
}

#[test]
fn blocks_other_than_sh_and_other_sections_are_left_out() {
    let readme = "# T\n\n```sh\nnot this\n```\n\n## Walkthrough\n\ntext\n\n```sh\na\nb\n```\n\n\
                  ```\nplain\n```\n\n```sh\nc\n```\n\n## Next\n\n```sh\nnor this\n```\n";
    assert_eq!(walkthrough(readme), "a\nb\nc\n");
}

//! The chaos run's cluster where a Docker engine answers: docker-compose.yml brought up as a
//! project of its own at the run's scale, its API behind the compose balancer on a free port,
//! and each fault applied to one of its containers with the docker CLI: `docker kill` + `docker
//! start`, `docker pause` + `unpause`, `docker network disconnect` + `connect`, a graceful
//! `docker restart` of an http node or of PostgreSQL, and a 200 ms delay with 5% loss on the
//! container's interface ([`super::impairment`]).

use std::path::PathBuf;

use anyhow::{Context, ensure};

use super::faults::{Fault, Kind, run_async};
use super::impairment;

/// A compose project the run brought up, or attached to.
pub(crate) struct ComposeCluster {
    project: String,
    repo: PathBuf,
    /// The balancer's API, `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// Whether the run brought the project up, and so takes it down.
    owned: bool,
}

impl ComposeCluster {
    /// `docker compose up` of `repo`'s docker-compose.yml as `project`, at `scale`, with the
    /// balancer on a free port.
    pub(crate) fn up(
        project: &str,
        repo: PathBuf,
        scale: &[(&str, usize)],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let cluster = Self {
            project: project.to_string(),
            repo,
            base: format!("http://127.0.0.1:{port}"),
            owned: true,
        };
        let mut args = vec!["up", "-d", "--no-build"];
        let scales: Vec<String> = scale.iter().map(|(s, n)| format!("{s}={n}")).collect();
        for scale in &scales {
            args.extend(["--scale", scale.as_str()]);
        }
        super::progress(&format!("docker compose up (API on port {port})"));
        cluster.compose(&args, Some(port))?;
        Ok(cluster)
    }

    /// The running `project` of `repo`, its balancer at `base`; left running at the end.
    pub(crate) fn attach(project: &str, repo: PathBuf, base: &str) -> Self {
        Self {
            project: project.to_string(),
            repo,
            base: base.to_string(),
            owned: false,
        }
    }

    /// `docker compose -p PROJECT -f REPO/docker-compose.yml ARGS...`.
    fn compose(&self, args: &[&str], port: Option<u16>) -> anyhow::Result<String> {
        let file = self.repo.join("docker-compose.yml");
        let mut command = std::process::Command::new("docker");
        command
            .args(["compose", "-p", &self.project, "-f"])
            .arg(&file)
            .args(args)
            .env("COMPOSE_DISABLE_ENV_FILE", "1");
        if let Some(port) = port {
            command.env("SWITCHBOARD_HTTP_PORT", port.to_string());
        }
        let output = command.output().context("running docker compose")?;
        ensure!(
            output.status.success(),
            "docker compose {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// The admin token, as an operator reads it.
    pub(crate) fn admin_token(&self) -> anyhow::Result<String> {
        self.compose(&["exec", "-T", "http", "switchboard", "admin-token"], None)
    }

    /// `docker compose down -v`, if the run brought the project up and `keep` is false.
    pub(crate) fn down(&self, keep: bool) {
        if self.owned && !keep {
            super::progress("docker compose down -v");
            if let Err(error) = self.compose(&["down", "-v"], None) {
                super::progress(&format!("{error:#}"));
            }
        }
    }

    /// The container ids of `service`, sorted.
    async fn containers(&self, service: &str) -> anyhow::Result<Vec<String>> {
        let out = run_async(
            "docker",
            vec![
                "ps".into(),
                "-aq".into(),
                "--filter".into(),
                format!("label=com.docker.compose.project={}", self.project),
                "--filter".into(),
                format!("label=com.docker.compose.service={service}"),
            ],
        )
        .await?;
        let mut ids: Vec<String> = out.lines().map(str::to_string).collect();
        ids.sort();
        Ok(ids)
    }

    /// The container `fault` hits.
    pub(crate) async fn instance(&self, fault: &Fault) -> anyhow::Result<String> {
        let ids = self.containers(fault.service).await?;
        ensure!(!ids.is_empty(), "no container of {}", fault.service);
        Ok(ids[fault.replica % ids.len()].clone())
    }

    /// Applies `fault` to container `id`, holds it, heals it.
    pub(crate) async fn inflict(&self, fault: &Fault, id: &str) -> anyhow::Result<()> {
        let d =
            |args: &[&str]| run_async("docker", args.iter().map(|s| (*s).to_string()).collect());
        let hold = tokio::time::sleep(fault.hold);
        match fault.kind {
            Kind::Kill => {
                d(&["kill", id]).await?;
                hold.await;
                d(&["start", id]).await?;
            }
            Kind::Pause => {
                d(&["pause", id]).await?;
                hold.await;
                d(&["unpause", id]).await?;
            }
            Kind::Disconnect => {
                let network = format!("{}_default", self.project);
                d(&["network", "disconnect", &network, id]).await?;
                hold.await;
                // Reconnect with the service's name as an alias, as compose attached it.
                d(&["network", "connect", "--alias", fault.service, &network, id]).await?;
            }
            Kind::RestartHttp | Kind::RestartPostgres => {
                d(&["restart", "-t", "10", id]).await?;
            }
            Kind::Netem => {
                let pid = d(&["inspect", "-f", "{{.State.Pid}}", id]).await?;
                impairment::impaired_for(&pid, fault.hold).await?;
            }
        }
        Ok(())
    }
}

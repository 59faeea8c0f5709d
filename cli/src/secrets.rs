//! The cluster's secrets on disk, as Erlang keeps `.erlang.cookie`: generated on first use,
//! readable by the owner only (mode 0600), never printed except the admin token, which `up`
//! shows once and `switchboard admin-token` prints so the operator can use the admin API.
//!
//! `switchboard secrets init --dir DIR` does the same for containers: run once as root before
//! the nodes start (docker-compose.yml's `secrets` service), it fills a volume with the cookie,
//! the admin token and the PostgreSQL password, each readable only by the users that need it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use rand::RngCore;

/// Reads the secret in `path`, creating it (0600, 32 random bytes as hex) if it does not exist.
pub(crate) fn load_or_create(path: &Path) -> Result<String> {
    if path.exists() {
        let mode = fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by others (mode {mode:o}); run: chmod 600 {}",
                path.display(),
                path.display()
            );
        }
        return Ok(fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_owned());
    }
    let secret = random_secret();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    Ok(secret)
}

/// 32 random bytes as hex.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Prints the admin token: `SWITCHBOARD_ADMIN_TOKEN`, else the file named by
/// `SWITCHBOARD_ADMIN_TOKEN_FILE`, else `admin-token` in the default data directory.
#[allow(clippy::print_stdout, reason = "a command's output is its job")]
pub(crate) fn print_admin_token() -> Result<()> {
    let token = admin_token(
        std::env::var("SWITCHBOARD_ADMIN_TOKEN").ok(),
        std::env::var_os("SWITCHBOARD_ADMIN_TOKEN_FILE").map(PathBuf::from),
        &crate::default_data_dir().join("admin-token"),
    )?;
    println!("{token}");
    Ok(())
}

/// The rule behind [`print_admin_token`], apart from the process environment.
fn admin_token(
    value: Option<String>,
    file: Option<PathBuf>,
    default_file: &Path,
) -> Result<String> {
    if let Some(value) = value.filter(|v| !v.trim().is_empty()) {
        return Ok(value.trim().to_owned());
    }
    let file = file
        .filter(|f| !f.as_os_str().is_empty())
        .unwrap_or_else(|| default_file.to_owned());
    let token = fs::read_to_string(&file)
        .with_context(|| {
            format!(
                "reading the admin token from {} (set SWITCHBOARD_ADMIN_TOKEN or SWITCHBOARD_ADMIN_TOKEN_FILE)",
                file.display()
            )
        })?
        .trim()
        .to_owned();
    if token.is_empty() {
        bail!("{} is empty", file.display());
    }
    Ok(token)
}

/// `switchboard secrets ...`
#[derive(Debug, Args)]
pub(crate) struct SecretsArgs {
    #[command(subcommand)]
    command: SecretsCommand,
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Fills DIR with the cluster's secrets for containers (run as root, before the nodes start):
    /// a value in SWITCHBOARD_COOKIE, SWITCHBOARD_ADMIN_TOKEN or POSTGRES_PASSWORD is written over
    /// its file; a file that exists is kept; a missing one gets 32 random bytes as hex.
    /// Prints which, never a value.
    Init(InitArgs),
}

#[derive(Debug, Args)]
struct InitArgs {
    /// The directory (a volume the nodes mount read-only).
    #[arg(long)]
    dir: PathBuf,
    /// The nodes' user and group (uid:gid): owner of `cookie` and `admin-token` (mode 0400),
    /// and group of `postgres-password`.
    #[arg(long, default_value = "10001:10001", value_parser = parse_owner)]
    nodes: (u32, u32),
    /// The PostgreSQL server's user id (999 in the postgres image): owner of `postgres-password`
    /// (mode 0440), which the server reads as that user and the database node through its group.
    #[arg(long, default_value_t = 999)]
    postgres_uid: u32,
}

fn parse_owner(value: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = value.split_once(':').unwrap_or((value, value));
    let id = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("not a numeric uid:gid: {value}"))
    };
    Ok((id(uid)?, id(gid)?))
}

/// Runs `switchboard secrets ...`.
pub(crate) fn secrets(args: SecretsArgs) -> Result<()> {
    match args.command {
        SecretsCommand::Init(args) => {
            let (uid, gid) = args.nodes;
            let plan = [
                SecretFile {
                    name: "cookie",
                    variable: "SWITCHBOARD_COOKIE",
                    min_len: switchboard::cookie::MIN_COOKIE_LEN,
                    owner: (uid, gid),
                    mode: 0o400,
                },
                SecretFile {
                    name: "admin-token",
                    variable: "SWITCHBOARD_ADMIN_TOKEN",
                    min_len: 1,
                    owner: (uid, gid),
                    mode: 0o400,
                },
                SecretFile {
                    name: "postgres-password",
                    variable: "POSTGRES_PASSWORD",
                    min_len: 1,
                    owner: (args.postgres_uid, gid),
                    mode: 0o440,
                },
            ];
            for secret in &plan {
                let value = std::env::var(secret.variable).ok();
                let outcome = init_secret(&args.dir, secret, value)?;
                eprintln!(
                    "secrets: {} {outcome}",
                    args.dir.join(secret.name).display()
                );
            }
            Ok(())
        }
    }
}

/// One file `secrets init` keeps.
#[derive(Debug)]
struct SecretFile {
    /// The file's name in the directory.
    name: &'static str,
    /// The environment variable whose value, when not empty, replaces the file's.
    variable: &'static str,
    /// The shortest value accepted from the variable.
    min_len: usize,
    /// Owner and group.
    owner: (u32, u32),
    /// Permission bits.
    mode: u32,
}

/// What `init_secret` did, as `secrets init` reports it.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Generated,
    Kept,
    FromVariable(&'static str),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Generated => f.write_str("generated"),
            Outcome::Kept => f.write_str("kept"),
            Outcome::FromVariable(variable) => write!(f, "set from {variable}"),
        }
    }
}

/// Settles one secret file in `dir`: the variable's value (`value`) when not empty, else the
/// file's current contents, else a new random secret; then its owner and mode. A new value is
/// written to a temporary file, given its owner and mode, and renamed over the old one, so a
/// reader sees the old secret or the new one, never part of one.
fn init_secret(dir: &Path, secret: &SecretFile, value: Option<String>) -> Result<Outcome> {
    let path = dir.join(secret.name);
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let (contents, outcome) = match value {
        Some(value) => {
            if value.len() < secret.min_len {
                bail!(
                    "{} is {} bytes; it must be at least {}",
                    secret.variable,
                    value.len(),
                    secret.min_len
                );
            }
            (Some(value), Outcome::FromVariable(secret.variable))
        }
        None => match fs::read_to_string(&path) {
            Ok(existing) if !existing.trim().is_empty() => (None, Outcome::Kept),
            Ok(_) => (Some(random_secret()), Outcome::Generated),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (Some(random_secret()), Outcome::Generated)
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        },
    };
    let (uid, gid) = secret.owner;
    match contents {
        Some(contents) => {
            let temporary = dir.join(format!(".{}.new", secret.name));
            let _ = fs::remove_file(&temporary);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)
                .with_context(|| format!("creating {}", temporary.display()))?;
            file.write_all(contents.as_bytes())?;
            file.sync_all()?;
            drop(file);
            std::os::unix::fs::chown(&temporary, Some(uid), Some(gid))
                .with_context(|| format!("chown {uid}:{gid} {}", temporary.display()))?;
            fs::set_permissions(&temporary, fs::Permissions::from_mode(secret.mode))?;
            fs::rename(&temporary, &path).with_context(|| {
                format!("renaming {} to {}", temporary.display(), path.display())
            })?;
        }
        None => {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .with_context(|| format!("chown {uid}:{gid} {}", path.display()))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(secret.mode))?;
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn created_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        let first = load_or_create(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create(&path).unwrap(), first);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            load_or_create(&path).is_err(),
            "a world-readable cookie is refused"
        );
    }

    fn owned_by_me(dir: &Path, name: &'static str, variable: &'static str) -> SecretFile {
        let meta = fs::metadata(dir).unwrap();
        SecretFile {
            name,
            variable,
            min_len: 16,
            owner: (meta.uid(), meta.gid()),
            mode: 0o400,
        }
    }

    #[test]
    fn init_generates_once_then_keeps_unless_a_variable_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let secret = owned_by_me(dir.path(), "cookie", "SWITCHBOARD_COOKIE");
        let path = dir.path().join("cookie");

        assert_eq!(
            init_secret(dir.path(), &secret, None).unwrap(),
            Outcome::Generated
        );
        let first = fs::read_to_string(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o400
        );

        assert_eq!(
            init_secret(dir.path(), &secret, Some(String::new())).unwrap(),
            Outcome::Kept
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), first);

        let chosen = "a-cookie-chosen-by-the-operator".to_owned();
        assert_eq!(
            init_secret(dir.path(), &secret, Some(chosen.clone())).unwrap(),
            Outcome::FromVariable("SWITCHBOARD_COOKIE")
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), chosen);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o400
        );
        assert_eq!(
            init_secret(dir.path(), &secret, None).unwrap(),
            Outcome::Kept
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), chosen);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["cookie"], "no temporary file is left behind");
    }

    #[test]
    fn init_refuses_a_short_value_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let secret = owned_by_me(dir.path(), "cookie", "SWITCHBOARD_COOKIE");
        let error = init_secret(dir.path(), &secret, Some("tiny-secret".into())).unwrap_err();
        let shown = format!("{error:#}");
        assert!(
            shown.contains("SWITCHBOARD_COOKIE") && !shown.contains("tiny-secret"),
            "{shown}"
        );
    }

    #[test]
    fn init_rewrites_an_empty_file_and_fixes_modes() {
        let dir = tempfile::tempdir().unwrap();
        let secret = owned_by_me(dir.path(), "admin-token", "SWITCHBOARD_ADMIN_TOKEN");
        let path = dir.path().join("admin-token");
        fs::write(&path, "").unwrap();
        assert_eq!(
            init_secret(dir.path(), &secret, None).unwrap(),
            Outcome::Generated
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            init_secret(dir.path(), &secret, None).unwrap(),
            Outcome::Kept
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o400
        );
    }

    #[test]
    fn the_admin_token_comes_from_the_variable_then_the_file_then_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token-file");
        let default = dir.path().join("admin-token");
        fs::write(&file, "from-file\n").unwrap();
        fs::write(&default, "from-data-dir").unwrap();
        assert_eq!(
            admin_token(Some("from-env".into()), Some(file.clone()), &default).unwrap(),
            "from-env"
        );
        assert_eq!(
            admin_token(Some(String::new()), Some(file), &default).unwrap(),
            "from-file"
        );
        assert_eq!(admin_token(None, None, &default).unwrap(), "from-data-dir");
        assert!(admin_token(None, Some(dir.path().join("missing")), &default).is_err());
    }

    #[test]
    fn owners_parse_as_uid_and_gid() {
        assert_eq!(parse_owner("10001:10001"), Ok((10001, 10001)));
        assert_eq!(parse_owner("999"), Ok((999, 999)));
        assert!(parse_owner("switchboard").is_err());
    }
}

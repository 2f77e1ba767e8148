//! Resolves where and how to connect: flags, then environment (both through clap), then the
//! config file, then defaults.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::args::ConnectionArgs;

/// The collector address when nothing says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7440";

/// The config file's keys (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Collector address.
    pub server: Option<String>,
    /// Bearer token.
    pub token: Option<String>,
    /// CA certificate (PEM).
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    pub key: Option<PathBuf>,
}

/// Everything needed to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `http://` or `https://` address.
    pub server: String,
    /// Bearer token.
    pub token: Option<String>,
    /// CA certificate file.
    pub ca: Option<PathBuf>,
    /// Client certificate and key files.
    pub identity: Option<(PathBuf, PathBuf)>,
}

fn default_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("tapwire/config.toml"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config/tapwire/config.toml"))
}

/// Reads a config file; a missing default file is no error, a missing explicit one is.
fn read_config(path: &Path, explicit: bool) -> Result<ConfigFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok(ConfigFile::default())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Merges flags/environment with the config file.
pub fn resolve(args: &ConnectionArgs) -> Result<Settings> {
    let file = match (&args.config, default_config_path()) {
        (Some(path), _) => read_config(path, true)?,
        (None, Some(path)) => read_config(&path, false)?,
        (None, None) => ConfigFile::default(),
    };
    let mut server = args
        .server
        .clone()
        .or(file.server)
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    if !server.contains("://") {
        server = format!("http://{server}");
    }
    let cert = args.cert.clone().or(file.cert);
    let key = args.key.clone().or(file.key);
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => anyhow::bail!("a client certificate needs both cert and key"),
    };
    Ok(Settings {
        server,
        token: args.token.clone().or(file.token).filter(|t| !t.is_empty()),
        ca: args.ca.clone().or(file.ca),
        identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: &Path) -> ConnectionArgs {
        ConnectionArgs {
            server: None,
            token: None,
            ca: None,
            cert: None,
            key: None,
            config: Some(config.to_path_buf()),
        }
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "server = \"collector:7440\"\ntoken = \"from-file\"\nca = \"/ca.pem\"\n",
        )
        .unwrap();
        let from_file = resolve(&args(&path)).unwrap();
        assert_eq!(from_file.server, "http://collector:7440");
        assert_eq!(from_file.token.as_deref(), Some("from-file"));
        assert_eq!(from_file.ca, Some(PathBuf::from("/ca.pem")));
        let mut flags = args(&path);
        flags.server = Some("https://other:1".into());
        flags.token = Some("from-flag".into());
        let resolved = resolve(&flags).unwrap();
        assert_eq!(resolved.server, "https://other:1");
        assert_eq!(resolved.token.as_deref(), Some("from-flag"));
    }

    #[test]
    fn bad_config_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "sever = \"typo\"\n").unwrap();
        assert!(resolve(&args(&path)).is_err(), "unknown keys are refused");
        assert!(resolve(&args(&dir.path().join("missing.toml"))).is_err());
        std::fs::write(&path, "cert = \"/c.pem\"\n").unwrap();
        assert!(
            resolve(&args(&path)).is_err(),
            "a certificate without its key"
        );
    }
}

//! How PostgreSQL's programs are run for the managed database.
//!
//! - Trixie root (TimescaleDB): the binaries need the root's newer glibc, so they run under
//!   `chroot --userspec=UID:GID` of the root's `postgres` user.
//! - Host binaries as root: `runuser -u postgres`.
//! - Host binaries as an ordinary user: directly.
//!
//! As root, the data folder is bind-mounted at a fixed path inside a private mount
//! namespace (`unshare --mount`) that lives exactly as long as the program (and the server
//! it starts), so it is visible inside the chroot, needs no traversable parents, and
//! leaves no mount behind even when the collector is SIGKILLed.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use tokio::process::Command;

use super::PostgresError;

/// Where the data folder appears inside the trixie root.
const DATA_IN_ROOT: &str = "/var/lib/tapwire-collector/pgdata";
/// Where the data folder appears for host binaries run as root.
const DATA_ON_HOST_AS_ROOT: &str = "/run/tapwire-collector/pgdata";
const BIND_AND_EXEC: &str = r#"d=$1 m=$2; shift 2; mount --bind "$d" "$m" && exec "$@""#;

/// Runs PostgreSQL programs for one data folder.
#[derive(Debug, Clone)]
pub enum Launcher {
    /// Binaries inside a chroot root.
    Chroot {
        /// The root filesystem.
        root: PathBuf,
        /// The bin folder, as seen inside the root.
        bin: PathBuf,
        /// The root's postgres user and group ids.
        uid: u32,
        /// The root's postgres group id.
        gid: u32,
    },
    /// Host binaries run as the host `postgres` user (when we are root).
    HostAsPostgres {
        /// The bin folder.
        bin: PathBuf,
        /// The host postgres user id.
        uid: u32,
        /// The host postgres group id.
        gid: u32,
    },
    /// Host binaries run as ourselves.
    Direct {
        /// The bin folder.
        bin: PathBuf,
    },
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Reads `postgres`'s uid and gid from a passwd file.
fn postgres_ids(passwd: &Path) -> Result<(u32, u32), PostgresError> {
    let text = std::fs::read_to_string(passwd)
        .map_err(|e| PostgresError::Setup(format!("cannot read {}: {e}", passwd.display())))?;
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .next()
        .ok_or_else(|| PostgresError::Setup(format!("no postgres user in {}", passwd.display())))
}

/// The newest `/usr/lib/postgresql/N/bin` inside `prefix` (the host's `/` or a root).
fn newest_bin(prefix: &Path) -> Option<PathBuf> {
    let base = prefix.join("usr/lib/postgresql");
    let mut versions: Vec<u32> = std::fs::read_dir(&base)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|v| base.join(format!("{v}/bin/postgres")).exists())
        .collect();
    versions.sort_unstable();
    versions
        .last()
        .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
}

impl Launcher {
    /// Chooses how to run PostgreSQL: explicit host binaries, else the trixie root when it
    /// holds PostgreSQL (and we are root), else the newest host PostgreSQL.
    pub fn choose(
        postgres_bin: Option<&Path>,
        postgres_root: Option<&Path>,
    ) -> Result<Self, PostgresError> {
        let host = |bin: PathBuf| -> Result<Self, PostgresError> {
            if is_root() {
                let (uid, gid) = postgres_ids(Path::new("/etc/passwd"))?;
                Ok(Self::HostAsPostgres { bin, uid, gid })
            } else {
                Ok(Self::Direct { bin })
            }
        };
        if let Some(bin) = postgres_bin {
            return host(bin.to_path_buf());
        }
        if let Some(root) = postgres_root
            && let Some(bin) = newest_bin(root).filter(|_| is_root())
        {
            let (uid, gid) = postgres_ids(&root.join("etc/passwd"))?;
            return Ok(Self::Chroot {
                root: root.to_path_buf(),
                bin,
                uid,
                gid,
            });
        }
        newest_bin(Path::new("/")).map(host).unwrap_or_else(|| {
            Err(PostgresError::Setup(
                "no PostgreSQL found: give --database-url, --postgres-bin or --postgres-root"
                    .into(),
            ))
        })
    }

    /// The owner the data folder must have.
    pub fn owner(&self) -> Option<(u32, u32)> {
        match self {
            Self::Chroot { uid, gid, .. } | Self::HostAsPostgres { uid, gid, .. } => {
                Some((*uid, *gid))
            }
            Self::Direct { .. } => None,
        }
    }

    /// The data folder's path as the programs see it.
    pub fn data_path(&self, host_data: &Path) -> PathBuf {
        match self {
            Self::Chroot { .. } => PathBuf::from(DATA_IN_ROOT),
            Self::HostAsPostgres { .. } => PathBuf::from(DATA_ON_HOST_AS_ROOT),
            Self::Direct { .. } => host_data.to_path_buf(),
        }
    }

    /// True when the server can load TimescaleDB.
    pub fn has_timescaledb(&self) -> bool {
        let lib = match self {
            Self::Chroot { root, bin, .. } => root
                .join(bin.strip_prefix("/").unwrap_or(bin))
                .join("../lib/timescaledb.so"),
            Self::HostAsPostgres { bin, .. } | Self::Direct { bin } => {
                bin.join("../lib/timescaledb.so")
            }
        };
        lib.exists()
    }

    /// True when the server runs inside the chroot (no `/dev/shm` there).
    pub fn is_chroot(&self) -> bool {
        matches!(self, Self::Chroot { .. })
    }

    /// A command running `program` (e.g. `pg_ctl`) with `args`, the data folder
    /// `host_data` visible at [`Self::data_path`].
    pub fn command(
        &self,
        program: &str,
        args: &[OsString],
        host_data: &Path,
    ) -> Result<Command, PostgresError> {
        let mut command = match self {
            Self::Direct { bin } => Command::new(bin.join(program)),
            Self::Chroot {
                root,
                bin,
                uid,
                gid,
            } => {
                let mount_point = root.join(DATA_IN_ROOT.trim_start_matches('/'));
                std::fs::create_dir_all(&mount_point).map_err(|e| {
                    PostgresError::Setup(format!("cannot create {}: {e}", mount_point.display()))
                })?;
                let mut c = bind_and_exec(host_data, &mount_point);
                c.arg("chroot")
                    .arg(format!("--userspec={uid}:{gid}"))
                    .arg(root)
                    .arg(bin.join(program));
                c
            }
            Self::HostAsPostgres { bin, .. } => {
                std::fs::create_dir_all(DATA_ON_HOST_AS_ROOT).map_err(|e| {
                    PostgresError::Setup(format!("cannot create {DATA_ON_HOST_AS_ROOT}: {e}"))
                })?;
                let mut c = bind_and_exec(host_data, Path::new(DATA_ON_HOST_AS_ROOT));
                c.args(["runuser", "-u", "postgres", "--"])
                    .arg(bin.join(program));
                c
            }
        };
        command.args(args);
        // The server outlives this process on purpose (a restarted collector reuses it);
        // keep it out of our process group so a Ctrl-C on a terminal does not hit it twice.
        command.process_group(0);
        command.kill_on_drop(false);
        Ok(command)
    }
}

fn bind_and_exec(host_data: &Path, mount_point: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        BIND_AND_EXEC,
        "sh",
    ])
    .arg(host_data)
    .arg(mount_point);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_postgres_ids() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\npostgres:x:999:998:PG:/var/lib/postgresql:/bin/sh\n",
        )?;
        assert_eq!(postgres_ids(&passwd)?, (999, 998));
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\n")?;
        assert!(postgres_ids(&passwd).is_err());
        Ok(())
    }
}

//! Test PKI made with the `openssl` command: a CA, a server certificate for
//! localhost/127.0.0.1, a client certificate from that CA, and a rogue client certificate
//! from another CA.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::Error;

/// Paths of the generated PEM files.
pub struct TestPki {
    /// The trusted CA certificate.
    pub ca: PathBuf,
    /// The server certificate and key.
    pub server_cert: PathBuf,
    /// The server key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// A client certificate signed by an unrelated CA.
    pub rogue_cert: PathBuf,
    /// Its key.
    pub rogue_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), Error> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

fn ca(dir: &Path, name: &str) -> Result<(), Error> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )
}

fn leaf(dir: &Path, name: &str, ca: &str, ext: &str) -> Result<(), Error> {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    )?;
    std::fs::write(dir.join(format!("{name}.ext")), ext)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    )
}

/// True when the `openssl` command runs.
pub fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl TestPki {
    /// Generates everything in `dir`.
    pub fn generate(dir: &Path) -> Result<Self, Error> {
        ca(dir, "ca")?;
        ca(dir, "rogue-ca")?;
        leaf(
            dir,
            "server",
            "ca",
            "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )?;
        leaf(
            dir,
            "client",
            "ca",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )?;
        leaf(
            dir,
            "rogue",
            "rogue-ca",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )?;
        Ok(Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            rogue_cert: dir.join("rogue.pem"),
            rogue_key: dir.join("rogue.key"),
        })
    }
}

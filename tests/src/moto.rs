//! A local S3-compatible server (moto) for the tests of the `s3` provider.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::{free_port, wait_for};

/// A moto S3 server on a loopback port, killed when dropped (and with the test process).
pub struct Moto {
    child: Child,
    /// `host:port` of its S3 API.
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto on a free loopback port, logging to `log`; fails (saying how to install it)
    /// when moto is missing.
    pub async fn start(log: &Path) -> Result<Self> {
        let python = std::env::var("WINGKV_PYTHON").unwrap_or_else(|_| "python3".into());
        let probe = Command::new(&python).args(["-c", "import moto.server"]).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            bail!("moto is not installed for {python}: `./run.sh test` installs it (pip install 'moto[server]')");
        }
        let port = free_port()?;
        let log = std::fs::File::create(log)?;
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        crate::die_with_test(&mut cmd);
        let mut moto = Moto { child: cmd.spawn().context("start moto_server")?, endpoint: format!("127.0.0.1:{port}") };
        wait_for("moto to listen", Duration::from_secs(60), || {
            let exited = moto.child.try_wait().ok().flatten();
            let up = TcpStream::connect(&moto.endpoint).is_ok();
            async move {
                match exited {
                    Some(status) => Some(Err(anyhow::anyhow!("moto exited at start: {status}"))),
                    None => up.then_some(Ok(())),
                }
            }
        })
        .await??;
        Ok(moto)
    }

    /// Creates `bucket` (moto accepts unsigned requests).
    pub fn create_bucket(&mut self, bucket: &str) -> Result<()> {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(&self.endpoint)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.endpoint
        )?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        ensure!(answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"), "create bucket: {answer}");
        Ok(())
    }

    /// The `[s3]` table body of a provider config that points at `bucket` on this server.
    pub fn s3_config(&self, bucket: &str) -> String {
        format!(
            "endpoint = \"http://{}\"\nbucket = \"{bucket}\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\nallow_http = true\n",
            self.endpoint
        )
    }
}

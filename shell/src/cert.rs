//! `wingkv cert`: a CA and the certificates of a secure cluster, for operators without a PKI.
//!
//! ```text
//! wingkv cert new-ca --dir tls
//! wingkv cert issue-server --dir tls --role meta --name meta1 --host 10.0.0.5 --host meta1.example
//! wingkv cert issue-client --dir tls --user admin
//! ```
//! Each writes `NAME.crt` and `NAME.key` (0600) into `--dir`, next to `ca.crt` and `ca.key`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use wingkv_security::certs;
use wingkv_security::Role;

/// `wingkv cert` arguments.
#[derive(Args, Debug)]
pub struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
    /// Directory of the CA and the issued files.
    #[arg(long, global = true, default_value = "./tls")]
    dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum CertCommand {
    /// Create the cluster's CA (`ca.crt`, `ca.key`); refuses to replace an existing one.
    NewCa {
        /// The CA's name.
        #[arg(long, default_value = "wingkv CA")]
        name: String,
    },
    /// Issue a server certificate stating its role (`NAME.crt`, `NAME.key`).
    IssueServer {
        /// `meta` or `replica`.
        #[arg(long)]
        role: String,
        /// The server's name (also the file name).
        #[arg(long)]
        name: String,
        /// Host names and addresses the certificate names (repeatable); default localhost,
        /// 127.0.0.1.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Issue a user's client certificate (`USER.crt`, `USER.key`).
    IssueClient {
        /// The user name (what `admin_users` and table ACLs name).
        #[arg(long)]
        user: String,
    },
}

/// Runs `wingkv cert`.
pub fn run(args: CertArgs) -> Result<std::process::ExitCode> {
    match args.command {
        CertCommand::NewCa { name } => {
            if args.dir.join("ca.key").exists() {
                bail!("{} already holds a CA (ca.key): refusing to replace it", args.dir.display());
            }
            let (cert, _) = certs::write(&certs::new_ca(&name)?, &args.dir, "ca")?;
            println!("CA written: {}", cert.display());
        }
        CertCommand::IssueServer { role, name, mut hosts } => {
            let role = Role::parse(&role).with_context(|| format!("--role '{role}': use meta or replica"))?;
            if hosts.is_empty() {
                hosts = vec!["localhost".into(), "127.0.0.1".into()];
            }
            let issued = certs::issue_server(&load_ca(&args.dir)?, role, &name, &hosts)?;
            let (cert, key) = certs::write(&issued, &args.dir, &name)?;
            println!("{} server certificate written: {} {}", role.as_str(), cert.display(), key.display());
        }
        CertCommand::IssueClient { user } => {
            let issued = certs::issue_user(&load_ca(&args.dir)?, &user)?;
            let (cert, key) = certs::write(&issued, &args.dir, &user)?;
            println!("certificate of user '{user}' written: {} {}", cert.display(), key.display());
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn load_ca(dir: &Path) -> Result<certs::Issued> {
    certs::load(&dir.join("ca.crt"), &dir.join("ca.key"))
        .with_context(|| format!("no CA in {} (run `wingkv cert new-ca --dir {}` first)", dir.display(), dir.display()))
}

//! `wingkv shell`: the Pegasus-style shell. Interactive with history and completion, or
//! non-interactive with `-e "cmd; cmd"` or commands on stdin (exits non-zero on the first
//! error); `--json` prints one JSON document per command for scripts.

mod backup;
mod bulk_load;
mod cluster;
mod commands;
mod data;
mod envs;
mod escape;
mod format;
mod session;
mod table;
mod tokenize;

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::{Args, CommandFactory, Parser};
use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::Helper;
use wingkv_client::{Client, ClientConfig};

use commands::{Cmd, Line};
use session::{Session, Watched};
use wingkv_common::sync::MutexExt;

/// Arguments of `wingkv shell`.
#[derive(Args, Debug)]
pub struct ShellArgs {
    /// Meta server addresses, comma separated.
    #[arg(long, env = "WINGKV_META", default_value = "127.0.0.1:34601", value_delimiter = ',')]
    meta: Vec<String>,
    /// Commands to run (separated by ';'), then exit.
    #[arg(short = 'e', long = "exec")]
    exec: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Deadline of one request, in seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
}

/// Runs `wingkv shell`.
pub fn run(args: ShellArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut config = ClientConfig::new(args.meta.clone());
    config.request_timeout = Duration::from_secs(args.timeout.max(1));
    config.tls = args.tls.config()?;
    let client = rt
        .block_on(Client::with_config(config))
        .map_err(|e| anyhow!("cannot reach the meta servers {}: {e}", args.meta.join(",")))?;
    let mut shell = Shell { rt, session: Session::new(client), json: args.json, live: false };
    if let Some(script) = &args.exec {
        return Ok(shell.run_script(std::iter::once(script.clone())));
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let lines = stdin.lock().lines().map_while(Result::ok);
        return Ok(shell.run_script(lines));
    }
    shell.interactive()
}

struct Shell {
    rt: tokio::runtime::Runtime,
    session: Session,
    json: bool,
    /// A person at a terminal: the status of a bulk load, a backup or a restore is shown as a
    /// live progress display.
    live: bool,
}

/// What running a line did.
enum Outcome {
    Continue,
    Exit,
}

impl Shell {
    /// Runs every line; stops at the first error with exit code 1.
    fn run_script(&mut self, lines: impl Iterator<Item = String>) -> ExitCode {
        for line in lines {
            match self.run_line(&line) {
                Ok(Outcome::Continue) => {}
                Ok(Outcome::Exit) => break,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
        ExitCode::SUCCESS
    }

    fn interactive(&mut self) -> Result<ExitCode> {
        self.live = !self.json;
        let names = Arc::new(Mutex::new(Vec::new()));
        let mut editor = rustyline::Editor::<ShellHelper, rustyline::history::DefaultHistory>::new()?;
        editor.set_helper(Some(ShellHelper { commands: commands::command_names(), tables: names.clone() }));
        let history = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".wingkv_history"));
        if let Some(h) = &history {
            let _ = editor.load_history(h);
        }
        self.rt.block_on(self.session.refresh_table_names());
        println!("wingkv shell — `help` lists the commands, `exit` leaves.");
        loop {
            *names.locked() = self.session.table_names.clone();
            let line = match editor.readline(">>> ") {
                Ok(l) => l,
                Err(rustyline::error::ReadlineError::Interrupted) => continue,
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            };
            if line.trim().is_empty() {
                continue;
            }
            let _ = editor.add_history_entry(line.as_str());
            match self.run_line(&line) {
                Ok(Outcome::Exit) => break,
                Ok(Outcome::Continue) => {}
                Err(e) => eprintln!("error: {e:#}"),
            }
        }
        if let Some(h) = &history {
            let _ = editor.save_history(h);
        }
        Ok(ExitCode::SUCCESS)
    }

    fn run_line(&mut self, line: &str) -> Result<Outcome> {
        for cmd in tokenize::split_commands(line).map_err(|e| anyhow!(e))? {
            let words = tokenize::split_words(&cmd).map_err(|e| anyhow!(e))?;
            if words.is_empty() || words[0].starts_with('#') {
                continue;
            }
            let parsed = match Line::try_parse_from(&words) {
                Ok(p) => p.command,
                Err(e) => match e.kind() {
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                        println!("{e}");
                        continue;
                    }
                    clap::error::ErrorKind::InvalidSubcommand => {
                        return Err(anyhow!("unknown command '{}'; `help` lists the commands", words[0]))
                    }
                    _ => {
                        // clap's text starts with its own "error: "; the shell adds one.
                        let text = e.to_string();
                        let text = text.trim_end();
                        return Err(anyhow!("{}", text.strip_prefix("error: ").unwrap_or(text)));
                    }
                },
            };
            match parsed {
                Cmd::Exit => return Ok(Outcome::Exit),
                Cmd::Help { command } => println!("{}", help(command.as_deref())?),
                Cmd::QueryBulkLoadStatus { app_name, partition_index, detailed } if self.live => {
                    self.watch(Watched::BulkLoad { table: app_name, partition: partition_index, detailed })?
                }
                Cmd::QueryBackupStatus { app_name, backup_id, detailed } if self.live => {
                    self.watch(Watched::Backup { table: app_name, backup_id, detailed })?
                }
                Cmd::QueryRestoreStatus { app_name, detailed } if self.live => {
                    self.watch(Watched::Restore { table: app_name, detailed })?
                }
                cmd => {
                    let session = &mut self.session;
                    let out = if self.live {
                        // At a terminal, Ctrl-C ends the command, not the shell (tokio owns SIGINT
                        // once the first live display has listened for it).
                        self.rt.block_on(async {
                            tokio::select! {
                                out = session.run(cmd) => out,
                                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
                            }
                        })?
                    } else {
                        self.rt.block_on(session.run(cmd))?
                    };
                    if self.json {
                        println!("{}", out.json);
                    } else {
                        println!("{}", out.text);
                    }
                }
            }
        }
        Ok(Outcome::Continue)
    }
}

impl Shell {
    /// Shows the status of a bulk load, a backup or a restore with a progress bar, redrawn
    /// every second while it runs; returns when it stops running or on Ctrl-C.
    fn watch(&mut self, watched: Watched) -> Result<()> {
        let session = &self.session;
        self.rt.block_on(async {
            let ctrl_c = tokio::signal::ctrl_c();
            tokio::pin!(ctrl_c);
            let mut drawn = 0usize;
            loop {
                let frame = match session.frame(&watched).await {
                    Ok(frame) => frame,
                    // A lost answer (a meta changing leader) does not end the display.
                    Err(e) => {
                        let note = format!("(query failed, retrying: {e:#})");
                        if drawn > 0 {
                            print!("\x1b[{drawn}A\x1b[J");
                        }
                        println!("{note}");
                        drawn = terminal_rows(&note, terminal_width());
                        tokio::select! {
                            _ = &mut ctrl_c => return Ok(()),
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                };
                if drawn > 0 {
                    // Back to the first line of the previous frame, and erase it all.
                    print!("\x1b[{drawn}A\x1b[J");
                }
                if !frame.running {
                    println!("{}", frame.text);
                    return Ok(());
                }
                let shown = format!(
                    "{}\n{}\n(live: refreshed every second until the {} ends; Ctrl-C stops watching)",
                    frame.bar,
                    frame.text,
                    watched.what()
                );
                println!("{shown}");
                drawn = terminal_rows(&shown, terminal_width());
                tokio::select! {
                    _ = &mut ctrl_c => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
    }
}

/// Columns of the terminal on stdout, if it is one.
fn terminal_width() -> Option<usize> {
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize we pass and touches nothing else.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(size.ws_col as usize)
}

/// Terminal rows `text` takes when lines wrap at `width` columns.
fn terminal_rows(text: &str, width: Option<usize>) -> usize {
    text.lines().map(|l| width.map_or(1, |w| l.chars().count().div_ceil(w).max(1))).sum()
}

fn help(command: Option<&str>) -> Result<String> {
    let mut root = Line::command();
    match command {
        Some(name) => {
            let sub = root
                .find_subcommand_mut(name)
                .ok_or_else(|| anyhow!("unknown command '{name}'; `help` lists the commands"))?;
            Ok(sub.render_long_help().to_string())
        }
        None => {
            let mut out = String::from("Commands (`help COMMAND` for its usage):\n");
            for sub in root.get_subcommands() {
                out.push_str(&format!(
                    "  {:<16} {}\n",
                    sub.get_name(),
                    sub.get_about().map(|a| a.to_string()).unwrap_or_default()
                ));
            }
            Ok(out.trim_end().to_string())
        }
    }
}

/// Completion of command names (first word) and table names (after `use`, `app`, `drop`).
struct ShellHelper {
    commands: Vec<String>,
    tables: Arc<Mutex<Vec<String>>>,
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map(|i| i + 1).unwrap_or(0);
        let word = &before[start..];
        let words: Vec<&str> = before[..start].split_whitespace().collect();
        let pool: Vec<String> = match words.as_slice() {
            [] => self.commands.clone(),
            [cmd] if matches!(*cmd, "use" | "app" | "drop") => self.tables.locked().clone(),
            _ => Vec::new(),
        };
        Ok((start, pool.into_iter().filter(|c| c.starts_with(word)).collect()))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::terminal_rows;

    #[test]
    fn wrapped_lines_take_more_rows() {
        assert_eq!(terminal_rows("ab\n\nabcdef", Some(4)), 1 + 1 + 2);
        assert_eq!(terminal_rows("ab\nabcdef", None), 2);
    }
}

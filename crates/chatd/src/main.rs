//! The `chatd` binary: parses the command line and runs one subcommand of the `chatd`
//! library (`serve`, `migrate` or `token`).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use chatd::config::{Cli, Command};
use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    chatd::init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => chatd::serve(args).await,
        Command::Migrate(args) => chatd::migrate(args).await,
        Command::Token(args) => chatd::token(&args),
        Command::Reencrypt(args) => chatd::reencrypt(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chatd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

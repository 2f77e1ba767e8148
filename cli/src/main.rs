//! `tapwire`: the command-line client of a tapwire collector's query API.

mod args;
mod connect;
mod filter_args;
mod pairs_cmd;
mod render;
mod settings;
mod timespec;
mod views;

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Result;
use clap::Parser;

use args::{Cli, Command, PairsCommand};
use filter_args::to_filter;

async fn run(cli: Cli) -> Result<()> {
    let settings = settings::resolve(&cli.connection)?;
    let mut client = connect::connect(&settings).await?;
    let now = SystemTime::now();
    let output = cli.output;
    match cli.command {
        Command::Pairs(PairsCommand::List {
            limit,
            cursor,
            filter,
        }) => pairs_cmd::list(&mut client, output, to_filter(&filter, now)?, limit, cursor).await,
        Command::Pairs(PairsCommand::Get { id, decode }) => {
            pairs_cmd::get(&mut client, output, id, decode).await
        }
        Command::Throughput { interval, filter } => {
            views::throughput(&mut client, output, to_filter(&filter, now)?, interval).await
        }
        Command::Endpoints { limit, filter } => {
            views::endpoints(&mut client, output, to_filter(&filter, now)?, limit).await
        }
        Command::Deps { filter } => {
            views::deps(&mut client, output, to_filter(&filter, now)?).await
        }
        Command::Services { filter } => {
            views::services(&mut client, output, to_filter(&filter, now)?).await
        }
        Command::Tail { filter } => {
            pairs_cmd::tail(&mut client, output, to_filter(&filter, now)?).await
        }
        Command::Export {
            format,
            output_file,
            limit,
            filter,
        } => {
            pairs_cmd::export(
                &mut client,
                to_filter(&filter, now)?,
                format,
                limit,
                output_file,
            )
            .await
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A gRPC status carries the server's explanation: show it plainly.
            match e.downcast_ref::<tonic::Status>() {
                Some(status) => {
                    eprintln!("tapwire: {e}: {} ({:?})", status.message(), status.code())
                }
                None => eprintln!("tapwire: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

//! `cargo xtask`: everything around the code. Run it through `./x`, which first installs
//! the pinned toolchains and bpf-linker.
//!
//! - `setup`: installs the system packages, Python tools and the TimescaleDB root the tests
//!   and the local stack use (idempotent; a second run only checks).
//! - `test`: formatting, clippy and every test, the end-to-end suite included (CI runs this).
//! - `up [--demo]`: the local stack: collector with its managed database, the agent capturing
//!   this machine, and optionally demo servers and clients.
//! - `bench [NAME…]`: the benchmarks, with results in `target/bench/`.

mod bench;
mod demo;
mod process;
mod setup;
mod test;
mod tools;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "tapwire's development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the tests and the local stack need (system packages, Python tools,
    /// the TimescaleDB root).
    Setup,
    /// Run formatting, clippy and every test, the end-to-end suite included.
    Test(test::TestArgs),
    /// Start the collector and the agent on this machine and keep them running until Ctrl-C.
    Up(up::UpArgs),
    /// Run benchmarks (all of them without a name) and write target/bench/.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(setup::Needs::all()),
        Command::Test(args) => test::run(&args),
        Command::Up(args) => up::run(&args),
        Command::Bench(args) => bench::run(&args),
    }
}

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    respawn::ui::init_logging(args.verbose, args.log_format);
    cli::run(args)
}

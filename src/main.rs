use clap::Parser;

use hearth::cli::{self, Cli};

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match cli::load_config(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hearth: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    hearth::telemetry::init(&config.log.filter);
    match cli::run(cli, config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // CliError messages carry paths, ids and SQLSTATEs, never resource content.
            eprintln!("hearth: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

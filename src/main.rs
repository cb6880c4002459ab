use clap::Parser;

fn main() -> std::process::ExitCode {
    match licensor::cli::Cli::try_parse() {
        Ok(cli) => licensor::cli::main(cli),
        Err(e) => licensor::cli::refuse(e),
    }
}

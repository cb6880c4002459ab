use clap::Parser;

fn main() -> std::process::ExitCode {
    licensor::cli::main(licensor::cli::Cli::parse())
}

//! The `chaosbot` command. Parsing and wiring only; the work is in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = chaosbot::cli::Cli::parse();
    chaosbot::cli::init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let code = runtime.block_on(chaosbot::cli::execute(cli));
    std::process::ExitCode::from(code)
}

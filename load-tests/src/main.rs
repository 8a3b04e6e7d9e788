//! `live-load`: drive a running engine and report. See the crate docs.

use std::process::ExitCode;

use clap::Parser;
use load_tests::cli::{Cli, Command};
use load_tests::scenario;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = cli.threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Danmaku(args) => {
                args.validate()?;
                let report = scenario::run(&args).await?;
                println!("{}", report.render());
                if let Some(path) = &args.json {
                    report.write_json(path)?;
                    eprintln!("wrote {}", path.display());
                }
                anyhow::Ok(())
            }
            Command::Gifts(args) => {
                args.validate()?;
                let report = load_tests::gifts::run(&args).await?;
                println!("{}", report.render());
                if let Some(path) = &args.json {
                    load_tests::report::write_json_file(&report, path)?;
                    eprintln!("wrote {}", path.display());
                }
                report.verify()
            }
            Command::Transcode(args) => {
                args.validate()?;
                let json = args.json.clone();
                // Codec work blocks: off the runtime's workers.
                let report = tokio::task::spawn_blocking(move || load_tests::transcode::run(&args))
                    .await??;
                println!("{}", report.render());
                if let Some(path) = &json {
                    load_tests::report::write_json_file(&report, path)?;
                    eprintln!("wrote {}", path.display());
                }
                anyhow::Ok(())
            }
            Command::SfuFanout(args) => {
                args.validate()?;
                let report = load_tests::fanout::run(&args).await?;
                println!("{}", report.render());
                if let Some(path) = &args.json {
                    load_tests::report::write_json_file(&report, path)?;
                    eprintln!("wrote {}", path.display());
                }
                anyhow::Ok(())
            }
        }
    });
    // Do not wait for stragglers (sockets still closing) on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

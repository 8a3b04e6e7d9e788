//! `load-tests`: drive an engine, or start one beside a peer and compare.
//! See the crate docs.

use std::process::ExitCode;

use clap::Parser;
use load_tests::cli::{Cli, Command};
use load_tests::suite::{self, Bench};

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
    let result = runtime.block_on(run(cli));
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(dir) = &cli.profile {
        load_tests::peers::profile::enable(dir)?;
    }
    let bench = || Bench::new(cli.engine_bin.clone(), cli.server_cpus.clone());
    match cli.command {
        Command::Danmaku(args) => {
            args.validate()?;
            match args.target.given() {
                Some(target) => {
                    let report = load_tests::scenario::run(&target, &args).await?;
                    println!("{}", report.render());
                    suite::write_outputs(&args.out, &report, None)
                }
                None => suite::write_comparison(&args.out, suite::danmaku(&bench()?, &args).await?),
            }
        }
        Command::Gifts(args) => {
            args.validate()?;
            match args.target.given() {
                Some(target) => {
                    let report = load_tests::gifts::run(&target, &args).await?;
                    println!("{}", report.render());
                    suite::write_outputs(&args.out, &report, None)?;
                    report.verify()
                }
                None => suite::write_comparison(&args.out, suite::gifts(&bench()?, &args).await?),
            }
        }
        Command::Captions(args) => {
            args.validate()?;
            match args.target.given() {
                Some(target) => {
                    let report = load_tests::captions::run(&target, &args).await?;
                    println!("{}", report.render());
                    suite::write_outputs(&args.out, &report, None)
                }
                None => {
                    suite::write_comparison(&args.out, suite::captions(&bench()?, &args).await?)
                }
            }
        }
        Command::Transcode(args) => {
            args.validate()?;
            suite::write_comparison(&args.out, suite::transcode(&args).await?)
        }
        Command::SfuFanout(args) => {
            args.validate()?;
            match args.target.given() {
                Some(target) => {
                    let report =
                        load_tests::fanout::run(load_tests::fanout::Sfu::Engine(&target), &args)
                            .await?;
                    println!("{}", report.render());
                    suite::write_outputs(&args.out, &report, None)
                }
                None => {
                    suite::write_comparison(&args.out, suite::sfu_fanout(&bench()?, &args).await?)
                }
            }
        }
        Command::Join(args) => {
            args.validate()?;
            match args.target.given() {
                Some(target) => {
                    let args = load_tests::cli::FanoutArgs {
                        join_concurrency: 1,
                        serial_joins: true,
                        ..args
                    };
                    let report =
                        load_tests::fanout::run(load_tests::fanout::Sfu::Engine(&target), &args)
                            .await?;
                    println!("{}", report.render());
                    suite::write_outputs(&args.out, &report, None)
                }
                None => suite::write_comparison(&args.out, suite::join(&bench()?, &args).await?),
            }
        }
        Command::All(args) => suite::all(&bench()?, &args).await,
    }
}

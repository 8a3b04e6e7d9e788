//! Progress on stderr, so stdout carries only reports: a bar over the
//! run's scenarios (indicatif) when stderr is a terminal, plain lines when
//! it is not (CI logs keep every note).

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A bar of `steps` for the run, shown until [`finish`].
pub fn start(steps: u64) {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    *BAR.lock().unwrap() = Some(bar);
}

/// The step now running.
pub fn step(message: &str) {
    note(message);
    if let Some(bar) = BAR.lock().unwrap().as_ref() {
        bar.set_message(message.to_owned());
    }
}

/// One step done.
pub fn advance() {
    if let Some(bar) = BAR.lock().unwrap().as_ref() {
        bar.inc(1);
    }
}

pub fn finish() {
    if let Some(bar) = BAR.lock().unwrap().take() {
        bar.finish_and_clear();
    }
}

/// A line of progress: above the bar when one is drawn, else on stderr.
pub fn note(line: &str) {
    match BAR.lock().unwrap().as_ref() {
        Some(bar) if !bar.is_hidden() => bar.println(format!("load-tests: {line}")),
        _ => eprintln!("load-tests: {line}"),
    }
}

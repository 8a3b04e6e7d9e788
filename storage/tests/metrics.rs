//! The writer's two histograms, read back through a recorder installed for
//! this test binary alone (a global recorder is per process, hence its own
//! file). Run with `--nocapture` to see the commit latency on this disk;
//! nothing here asserts a duration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use protocol::v1::DanmakuItem;
use storage::{EmbeddedOptions, EmbeddedStore, OutboxEvent, Store};

#[derive(Default)]
struct Samples(Mutex<HashMap<String, Vec<f64>>>);

struct Series {
    name: String,
    samples: Arc<Samples>,
}

impl HistogramFn for Series {
    fn record(&self, value: f64) {
        let mut all = self.samples.0.lock().unwrap();
        all.entry(self.name.clone()).or_default().push(value);
    }
}

struct Capture(Arc<Samples>);

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Series {
            name: key.name().to_owned(),
            samples: Arc::clone(&self.0),
        }))
    }
}

fn take(samples: &Samples, name: &str) -> Vec<f64> {
    samples.0.lock().unwrap().remove(name).unwrap_or_default()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

fn report(label: &str, commits: &mut [f64], groups: &[f64]) {
    commits.sort_by(f64::total_cmp);
    let mean_group = groups.iter().sum::<f64>() / groups.len() as f64;
    eprintln!(
        "{label}: {} commits, commit p50 {:.3} ms, p99 {:.3} ms, mean group {:.1} commands",
        commits.len(),
        percentile(commits, 0.5) * 1e3,
        percentile(commits, 0.99) * 1e3,
        mean_group
    );
}

fn event(id: String) -> OutboxEvent {
    OutboxEvent {
        subject: "live.test".into(),
        payload: Bytes::from_static(b"x"),
        id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn every_command_is_counted_in_exactly_one_recorded_group() {
    let samples = Arc::new(Samples::default());
    metrics::set_global_recorder(Capture(Arc::clone(&samples))).unwrap();

    let dir = tempfile::TempDir::new().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    take(&samples, "live_store_group_size");
    take(&samples, "live_store_commit_seconds");

    // One at a time: each command is its own group.
    const SEQUENTIAL: u64 = 100;
    for seq in 1..=SEQUENTIAL {
        let item = DanmakuItem {
            seq,
            ..Default::default()
        };
        store
            .append_danmaku("r1", vec![item], event(format!("s{seq}")))
            .await
            .unwrap();
    }
    let groups = take(&samples, "live_store_group_size");
    let mut commits = take(&samples, "live_store_commit_seconds");
    assert_eq!(groups, vec![1.0; SEQUENTIAL as usize]);
    assert_eq!(commits.len(), SEQUENTIAL as usize);
    assert!(commits.iter().all(|s| *s >= 0.0));
    report("sequential, synchronous=FULL", &mut commits, &groups);

    // All at once: they share commits, and none is lost or counted twice.
    const CONCURRENT: u64 = 1000;
    let mut tasks = Vec::new();
    for seq in SEQUENTIAL + 1..=SEQUENTIAL + CONCURRENT {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let item = DanmakuItem {
                seq,
                ..Default::default()
            };
            store
                .append_danmaku("r1", vec![item], event(format!("c{seq}")))
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let groups = take(&samples, "live_store_group_size");
    let mut commits = take(&samples, "live_store_commit_seconds");
    assert_eq!(groups.iter().sum::<f64>(), CONCURRENT as f64);
    assert_eq!(commits.len(), groups.len());
    assert!(groups.iter().all(|g| *g >= 1.0 && *g <= 1024.0));
    report("concurrent, synchronous=FULL", &mut commits, &groups);

    assert_eq!(
        store.last_danmaku_seq("r1").await.unwrap(),
        SEQUENTIAL + CONCURRENT
    );
    store.close().await.unwrap();
}

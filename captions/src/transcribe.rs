//! The node's speech recognizer, shared by every stream: one thread, one
//! model, a queue in front.
//!
//! Recognition is the one expensive step of captions (a Whisper pass costs
//! a few hundred ms of CPU), so its queue decides what is worth the time:
//! final lines in the order they were said, never dropped; a partial line
//! only while nothing final waits, and only the newest per stream (an
//! older snapshot of the same speech is stale before it is read).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::recognize::{Effort, Recognizer, caption_text};
use crate::segment::{SAMPLE_RATE, Utterance};

/// A final line that waited this long in the queue finds the recognizer
/// behind.
const BEHIND: Duration = Duration::from_secs(2);

/// What the recognizer heard in one utterance of a stream.
#[derive(Debug, Clone)]
pub struct Heard {
    /// Wall clock (ms since the epoch) of the utterance's first and last
    /// sound, as the engine received it.
    pub start_ms: u64,
    pub end_ms: u64,
    /// `None`: nothing that is speech (noise, music, a cough).
    pub text: Option<String>,
    pub final_: bool,
    pub lang: String,
    /// When the recognizer finished.
    pub heard_at: std::time::SystemTime,
    /// Time spent recognizing, and waiting in the queue before.
    pub compute: Duration,
    pub queued: Duration,
}

/// An utterance on its way to the recognizer.
pub struct Job {
    /// The listener it came from (partials replace their stream's older ones).
    pub listener: u64,
    pub utterance: Utterance,
    /// Wall clock (ms) of the utterance's time 0.
    pub origin_ms: u64,
    pub reply: UnboundedSender<Heard>,
}

/// A handle on the node's recognizer thread; clones share it. The thread
/// ends when the last handle is dropped.
pub struct Transcriber {
    queue: Arc<Queue>,
    lang: Arc<str>,
}

struct Queue {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

#[derive(Default)]
struct Jobs {
    finals: VecDeque<(Job, Instant)>,
    partials: Vec<(Job, Instant)>,
    handles: usize,
}

impl Transcriber {
    /// Starts the recognizer's thread.
    pub fn start(recognizer: Box<dyn Recognizer>) -> std::io::Result<Self> {
        let lang: Arc<str> = recognizer.language().into();
        let queue = Arc::new(Queue {
            jobs: Mutex::new(Jobs {
                handles: 1,
                ..Jobs::default()
            }),
            ready: Condvar::new(),
        });
        let worker = queue.clone();
        let worker_lang = lang.clone();
        std::thread::Builder::new()
            .name("asr".into())
            .spawn(move || work(&worker, recognizer, &worker_lang))?;
        Ok(Self { queue, lang })
    }

    /// The language the recognizer writes.
    pub fn language(&self) -> &str {
        &self.lang
    }

    /// Queues an utterance: a final one after the other finals (and in
    /// place of its stream's waiting partial), a partial in place of its
    /// stream's older partial.
    pub fn submit(&self, job: Job) {
        let mut jobs = self.queue.lock();
        let listener = job.listener;
        let before = jobs.partials.len();
        jobs.partials
            .retain(|(waiting, _)| waiting.listener != listener);
        let replaced = before - jobs.partials.len();
        if replaced > 0 {
            metrics::counter!("live_caption_partials_skipped_total").increment(replaced as u64);
        }
        if job.utterance.final_ {
            jobs.finals.push_back((job, Instant::now()));
        } else {
            jobs.partials.push((job, Instant::now()));
        }
        drop(jobs);
        self.queue.ready.notify_one();
    }
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clone for Transcriber {
    fn clone(&self) -> Self {
        self.queue.lock().handles += 1;
        Self {
            queue: self.queue.clone(),
            lang: self.lang.clone(),
        }
    }
}

impl Drop for Transcriber {
    fn drop(&mut self) {
        let mut jobs = self.queue.lock();
        jobs.handles -= 1;
        drop(jobs);
        self.queue.ready.notify_one();
    }
}

fn work(queue: &Queue, mut recognizer: Box<dyn Recognizer>, lang: &str) {
    loop {
        let (job, queued_at, finals_waiting) = {
            let mut jobs = queue.lock();
            let (job, queued_at) = loop {
                if let Some(next) = jobs.finals.pop_front() {
                    break next;
                }
                if !jobs.partials.is_empty() {
                    break jobs.partials.remove(0);
                }
                if jobs.handles == 0 {
                    return;
                }
                jobs = queue.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
            };
            (job, queued_at, !jobs.finals.is_empty())
        };
        let queued = queued_at.elapsed();
        let Job {
            utterance,
            origin_ms,
            reply,
            ..
        } = job;
        let effort = match utterance.final_ {
            false => Effort::Partial,
            true if finals_waiting || queued > BEHIND => Effort::FinalBehind,
            true => Effort::Final,
        };
        let started = Instant::now();
        let text = match recognizer.recognize(&utterance.samples, effort) {
            Ok(raw) => caption_text(&raw),
            Err(error) => {
                tracing::warn!(%error, "an utterance was not recognized");
                metrics::counter!("live_caption_asr_errors_total").increment(1);
                None
            }
        };
        let compute = started.elapsed();
        let audio = utterance.samples.len() as f64 / f64::from(SAMPLE_RATE);
        let kind = effort.label();
        metrics::histogram!("live_caption_asr_seconds", "kind" => kind)
            .record(compute.as_secs_f64());
        if audio > 0.0 {
            metrics::histogram!("live_caption_asr_realtime_factor", "kind" => kind)
                .record(compute.as_secs_f64() / audio);
        }
        let _ = reply.send(Heard {
            start_ms: origin_ms + utterance.start_ms,
            end_ms: origin_ms + utterance.end_ms,
            text,
            final_: utterance.final_,
            lang: lang.to_owned(),
            heard_at: std::time::SystemTime::now(),
            compute,
            queued,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::recognize::RecognizeError;

    /// A recognizer whose every call waits for the test's go-ahead and
    /// reports what it was given: the queue's policy, seen from the
    /// recognizer's side.
    struct Gated {
        entered: mpsc::Sender<()>,
        go: mpsc::Receiver<()>,
        calls: mpsc::Sender<(u64, Effort)>,
    }

    impl Recognizer for Gated {
        fn language(&self) -> &str {
            "en"
        }

        fn recognize(&mut self, speech: &[f32], effort: Effort) -> Result<String, RecognizeError> {
            self.entered.send(()).unwrap();
            self.go
                .recv()
                .map_err(|_| RecognizeError("stopped".into()))?;
            // The first sample carries the utterance's number.
            let id = speech[0] as u64;
            self.calls.send((id, effort)).unwrap();
            if id == 99 {
                return Err(RecognizeError("broken".into()));
            }
            Ok(format!("line {id} [noise]"))
        }
    }

    fn job(listener: u64, id: u64, final_: bool, reply: &UnboundedSender<Heard>) -> Job {
        Job {
            listener,
            utterance: Utterance {
                start_ms: id * 1000,
                end_ms: id * 1000 + 500,
                samples: vec![id as f32; 8000],
                final_,
            },
            origin_ms: 1_000_000,
            reply: reply.clone(),
        }
    }

    #[test]
    fn finals_go_first_in_order_and_only_the_newest_partial_of_a_stream_waits() {
        let (go, gate) = mpsc::channel();
        let (entered_tx, entered) = mpsc::channel();
        let (calls_tx, calls) = mpsc::channel();
        let transcriber = Transcriber::start(Box::new(Gated {
            entered: entered_tx,
            go: gate,
            calls: calls_tx,
        }))
        .unwrap();
        let (reply, mut heard) = tokio::sync::mpsc::unbounded_channel();
        // The recognizer is busy with the first job while the rest queue.
        transcriber.submit(job(1, 1, false, &reply));
        entered.recv().unwrap();
        transcriber.submit(job(1, 2, false, &reply));
        transcriber.submit(job(2, 3, false, &reply));
        transcriber.submit(job(1, 4, false, &reply)); // replaces 2
        transcriber.submit(job(2, 5, true, &reply)); // drops 3
        transcriber.submit(job(1, 6, true, &reply)); // drops 4
        transcriber.submit(job(2, 99, true, &reply));
        transcriber.submit(job(2, 7, false, &reply));
        for _ in 0..5 {
            go.send(()).unwrap();
        }
        let wait = std::time::Duration::from_secs(10);
        let order: Vec<(u64, Effort)> = (0..5).map(|_| calls.recv_timeout(wait).unwrap()).collect();
        // Finals with others waiting behind them are hurried (the
        // recognizer is behind); the last one gets the best effort.
        use Effort::{Final, FinalBehind, Partial};
        assert_eq!(
            order,
            [
                (1, Partial),
                (5, FinalBehind),
                (6, FinalBehind),
                (99, Final),
                (7, Partial)
            ]
        );

        let answers: Vec<Heard> = (0..5).map(|_| heard.blocking_recv().unwrap()).collect();
        let texts: Vec<Option<&str>> = answers.iter().map(|h| h.text.as_deref()).collect();
        // Tags are cleaned away; a failed recognition is no text, not a
        // lost line.
        assert_eq!(
            texts,
            [
                Some("line 1"),
                Some("line 5"),
                Some("line 6"),
                None,
                Some("line 7")
            ]
        );
        assert_eq!(
            (answers[1].start_ms, answers[1].end_ms),
            (1_005_000, 1_005_500)
        );
        assert!(answers[1].final_ && !answers[0].final_);
        assert!(answers.iter().all(|h| h.lang == "en"));
        drop(transcriber);
    }
}

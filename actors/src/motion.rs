//! The virtual host's motion on disk, for VOD: every `avatar_motion` frame
//! a room relays, appended to an hourly file of length-delimited protobuf
//! (`<root>/<room>/<hour since the epoch>.pb`) and read back by time range
//! when a recording's viewer asks for it.
//!
//! Why files and not the store: at up to 60 frames a second a host makes
//! 216 000 records an hour, read only in bulk by time; an append-only file
//! per room and hour costs one buffered write and serves a minute of VOD
//! with one sequential read. One thread writes (buffered, flushed every
//! half second and before every read), so a relay never waits on a disk.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::{Duration, Instant};

use prost::Message;
use protocol::v1::AvatarMotion;

const HOUR_MS: u64 = 3_600_000;
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// A room that has sent nothing this long has its file closed.
const IDLE: Duration = Duration::from_secs(60);

enum Record {
    Frame {
        room: String,
        motion: AvatarMotion,
    },
    /// Answered once everything before it is in the files.
    Flush(SyncSender<()>),
}

/// A node's motion log; cheap to clone.
#[derive(Clone)]
pub struct MotionLog {
    root: PathBuf,
    records: Sender<Record>,
}

impl std::fmt::Debug for MotionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotionLog")
            .field("root", &self.root)
            .finish()
    }
}

impl MotionLog {
    /// Starts the writer thread; files go under `root`.
    pub fn start(root: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&root)?;
        let (records, inbox) = std::sync::mpsc::channel();
        let dir = root.clone();
        std::thread::Builder::new()
            .name("motion-log".into())
            .spawn(move || write_records(&dir, &inbox))?;
        Ok(Self { root, records })
    }

    /// Appends a frame of `room` (stamped with its `at_ms`).
    pub fn append(&self, room: &str, motion: AvatarMotion) {
        let record = Record::Frame {
            room: room.to_owned(),
            motion,
        };
        if self.records.send(record).is_err() {
            metrics::counter!("live_avatar_motion_unrecorded_total").increment(1);
        }
    }

    /// The frames of `room` with `from_ms <= at_ms < to_ms`, in order.
    /// Blocking (waits for the writer, reads files): call it off the async
    /// workers.
    pub fn read(&self, room: &str, from_ms: u64, to_ms: u64) -> std::io::Result<Vec<AvatarMotion>> {
        let (done, flushed) = std::sync::mpsc::sync_channel(1);
        if self.records.send(Record::Flush(done)).is_ok() {
            let _ = flushed.recv_timeout(Duration::from_secs(5));
        }
        let mut frames = Vec::new();
        if to_ms <= from_ms {
            return Ok(frames);
        }
        for hour in from_ms / HOUR_MS..=(to_ms - 1) / HOUR_MS {
            let bytes = match std::fs::read(file_of(&self.root, room, hour)) {
                Ok(bytes) => bytes,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            let mut rest = bytes.as_slice();
            // A record cut short (the node stopped mid-write) ends the file.
            while let Ok(motion) = AvatarMotion::decode_length_delimited(&mut rest) {
                if (from_ms..to_ms).contains(&motion.at_ms) {
                    frames.push(motion);
                }
            }
        }
        Ok(frames)
    }
}

fn file_of(root: &Path, room: &str, hour: u64) -> PathBuf {
    root.join(room).join(format!("{hour}.pb"))
}

/// A room's open file: its hour, and when it was last written.
type Open = HashMap<String, (u64, BufWriter<File>, Instant)>;

/// The writer thread: one open file per room (its current hour), flushed
/// every half second whatever the rate, closed when the room goes quiet.
fn write_records(root: &Path, inbox: &Receiver<Record>) {
    let mut open: Open = HashMap::new();
    let mut flushed = Instant::now();
    loop {
        if flushed.elapsed() >= FLUSH_EVERY {
            flush(&mut open);
            open.retain(|_, (_, _, written)| written.elapsed() < IDLE);
            flushed = Instant::now();
        }
        match inbox.recv_timeout(FLUSH_EVERY) {
            Ok(Record::Frame { room, motion }) => {
                let hour = motion.at_ms / HOUR_MS;
                if let Err(error) = append(root, &mut open, room, hour, &motion) {
                    tracing::warn!(%error, "avatar motion not recorded");
                    metrics::counter!("live_avatar_motion_unrecorded_total").increment(1);
                }
            }
            Ok(Record::Flush(done)) => {
                flush(&mut open);
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                flush(&mut open);
                return;
            }
        }
    }
}

fn append(
    root: &Path,
    open: &mut Open,
    room: String,
    hour: u64,
    motion: &AvatarMotion,
) -> std::io::Result<()> {
    let stale = open
        .get(&room)
        .is_none_or(|(open_hour, _, _)| *open_hour != hour);
    if stale {
        if let Some((_, mut old, _)) = open.remove(&room) {
            old.flush()?;
        }
        let path = file_of(root, &room, hour);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        cut_partial_record(&path)?;
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        open.insert(room.clone(), (hour, BufWriter::new(file), Instant::now()));
    }
    let (_, writer, written) = open.get_mut(&room).expect("opened above");
    *written = Instant::now();
    writer.write_all(&motion.encode_length_delimited_to_vec())
}

/// A file a crash left with a record cut short is cut back to its last
/// whole record before more are appended: otherwise the reader, which
/// stops at the first record it cannot decode, would never reach them.
fn cut_partial_record(path: &Path) -> std::io::Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        // On a copy: a failed decode has already consumed the length.
        let mut probe = rest;
        if AvatarMotion::decode_length_delimited(&mut probe).is_err() {
            break;
        }
        rest = probe;
    }
    if !rest.is_empty() {
        let whole = (bytes.len() - rest.len()) as u64;
        tracing::warn!(file = %path.display(), dropped = rest.len(), "avatar motion: a cut record removed");
        OpenOptions::new().write(true).open(path)?.set_len(whole)?;
    }
    Ok(())
}

fn flush(open: &mut Open) {
    for (room, (_, writer, _)) in open.iter_mut() {
        if let Err(error) = writer.flush() {
            tracing::warn!(%room, %error, "avatar motion not flushed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(at_ms: u64, full: bool) -> AvatarMotion {
        AvatarMotion {
            full,
            root: vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            at_ms,
            ..AvatarMotion::default()
        }
    }

    #[test]
    fn frames_come_back_by_room_and_time_across_hours_and_a_cut_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = MotionLog::start(dir.path().to_owned()).unwrap();
        let start = 5 * HOUR_MS - 1_000;
        for i in 0..120 {
            log.append("r1", frame(start + i * 20, i % 50 == 0));
        }
        log.append("r2", frame(start + 10, true));
        // Two hours' files, each frame once, in order; nothing of r2.
        let all = log.read("r1", start, start + 10_000).unwrap();
        assert_eq!(all.len(), 120);
        assert!(all.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        let window = log.read("r1", start + 500, start + 1_500).unwrap();
        assert_eq!(window.len(), 50);
        assert_eq!(window[0].at_ms, start + 500);
        assert!(log.read("r1", start + 10, start + 10).unwrap().is_empty());
        assert!(
            log.read("nobody", start, start + 10_000)
                .unwrap()
                .is_empty()
        );

        // A record cut short by a crash: the records before it still read.
        let path = file_of(dir.path(), "r1", 5);
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(
            &frame(5 * HOUR_MS + 5_000, true).encode_length_delimited_to_vec()[..6],
        );
        std::fs::write(&path, &bytes).unwrap();
        assert!(whole > 0);
        assert_eq!(log.read("r1", start, start + 10_000).unwrap().len(), 120);

        // The node starts again within that hour: the cut record goes, and
        // what it writes next is read.
        drop(log);
        let log = MotionLog::start(dir.path().to_owned()).unwrap();
        log.append("r1", frame(5 * HOUR_MS + 6_000, true));
        let after = log.read("r1", 5 * HOUR_MS, 6 * HOUR_MS).unwrap();
        assert_eq!(after.len(), 71, "70 before the crash and the new one");
        assert_eq!(after.last().unwrap().at_ms, 5 * HOUR_MS + 6_000);
    }
}

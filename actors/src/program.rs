//! Rooms' programs: the stream a room's story plays into (its clips, its
//! host's voice), one per room with a story, watched like any stream.
//!
//! The registry lives beside the room actors, not inside them: a RoomActor
//! that restarts finds its program still playing (viewers keep their
//! sessions and their picture) and tells it the scene it restored, which
//! is already the one showing, so nothing restarts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use interactive::story::{Scene, StoryGraph};
use protocol::v1::Caption;
use protocol::v1::server_frame::Frame;
use sfu::{Cue, MediaPlane, Program, Spoken, StreamKey, Voice};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::captions::{Captions, Line};
use crate::hub::{Broadcast, RoomHub};

/// What programs need and where they find it.
#[derive(Clone)]
pub struct ProgramsConfig {
    pub media: MediaPlane,
    /// Where `clip` scenes' files are (`<data_dir>/clips`).
    pub clips_dir: PathBuf,
    /// The stream name programs publish under in their room.
    pub stream: String,
    /// The host's voice; none: host lines stay text.
    pub voice: Option<Voice>,
    /// FFmpeg's H.264 encoder for live scenes whose stream is VP8.
    pub encoder: String,
    /// Where the host's lines go to be translated and recorded; none:
    /// straight to the room, in the voice's language.
    pub captions: Option<Captions>,
}

/// The programs of this node's rooms.
#[derive(Clone)]
pub struct Programs {
    config: Arc<ProgramsConfig>,
    running: Arc<Mutex<HashMap<String, Running>>>,
}

struct Running {
    program: Program,
    /// The scene shown, so that showing it again changes nothing.
    showing: Option<Scene>,
}

impl std::fmt::Debug for Programs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Programs")
            .field("clips_dir", &self.config.clips_dir)
            .field("stream", &self.config.stream)
            .field("voice", &self.config.voice)
            .finish_non_exhaustive()
    }
}

impl Programs {
    pub fn new(config: ProgramsConfig) -> Self {
        Self {
            config: Arc::new(config),
            running: Arc::default(),
        }
    }

    pub fn stream_name(&self) -> &str {
        &self.config.stream
    }

    /// What stops a graph's clips from playing, one line per clip: missing
    /// files, names that leave the clips directory, clips a WebRTC viewer
    /// could not play. Checked when a run starts (files may come after
    /// the graph was uploaded).
    pub fn check(&self, graph: &StoryGraph) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for node in graph.spec().nodes.iter() {
            let Scene::Clip(name) = &node.scene else {
                continue;
            };
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            let problem = match self.clip_path(name) {
                None => Some(format!(
                    "node `{}`: clip `{name}` must be a file name in the clips directory",
                    node.id
                )),
                Some(path) => codec::clip::probe(&path)
                    .err()
                    .map(|error| format!("node `{}`: clip `{name}`: {error}", node.id)),
            };
            problems.extend(problem);
        }
        problems
    }

    /// A clip's file: a plain name inside the clips directory, never a
    /// path that leaves it.
    fn clip_path(&self, name: &str) -> Option<PathBuf> {
        let plain = Path::new(name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        (plain && !name.is_empty() && !name.contains('/')).then(|| self.config.clips_dir.join(name))
    }

    /// Shows `scene` in `room`'s program, starting the program if it has
    /// none. A clip plays from its start (looping); a live scene shows the
    /// room's stream from its next keyframe, or as soon as it goes live.
    /// The scene already showing is left alone. The lines a program speaks
    /// go to the room's viewers as captions, timed with the sound.
    pub async fn show(&self, room: &str, scene: &Scene, owner: &str, hub: &Arc<RoomHub>) {
        let dead = self
            .lock()
            .get(room)
            .is_some_and(|running| !running.program.is_alive());
        if dead {
            tracing::warn!(%room, "the room's program ended by itself: starting another");
            self.lock().remove(room);
        }
        if self.showing(room) == Some(scene.clone()) {
            return;
        }
        if !self.is_running(room) {
            let key = StreamKey::new(room, self.config.stream.clone());
            match self
                .config
                .media
                .program(
                    key,
                    owner.to_owned(),
                    self.config.voice.clone(),
                    self.config.encoder.clone(),
                )
                .await
            {
                Ok((program, spoken)) => {
                    tracing::info!(%room, stream = %self.config.stream, "program started");
                    let lines = self.config.captions.as_ref().map(|captions| {
                        captions.lines(&StreamKey::new(room, self.config.stream.clone()), hub)
                    });
                    tokio::spawn(caption(
                        spoken,
                        self.config.stream.clone(),
                        hub.clone(),
                        lines,
                    ));
                    self.lock().insert(
                        room.to_owned(),
                        Running {
                            program,
                            showing: None,
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(%room, %error, "the room's program did not start");
                    return;
                }
            }
        }
        let cue = match scene {
            Scene::Clip(name) => self.clip_path(name).map_or(Cue::Hold, Cue::Clip),
            // The program cannot show itself.
            Scene::Live(stream) if *stream == self.config.stream => Cue::Hold,
            Scene::Live(stream) => {
                let source = StreamKey::new(room, stream.clone());
                match self.config.media.relay(source).await {
                    Ok(frames) => Cue::Live {
                        source: StreamKey::new(room, stream.clone()),
                        frames,
                    },
                    Err(error) => {
                        tracing::warn!(%room, %stream, %error, "a live scene cannot be shown");
                        Cue::Hold
                    }
                }
            }
        };
        if let Some(running) = self.lock().get_mut(room) {
            running.program.cue(cue);
            running.showing = Some(scene.clone());
        }
    }

    fn showing(&self, room: &str) -> Option<Scene> {
        self.lock().get(room).and_then(|r| r.showing.clone())
    }

    /// Speaks a host line in `room`'s program, if it runs.
    pub fn say(&self, room: &str, text: &str) {
        if let Some(running) = self.lock().get(room) {
            running.program.cue(Cue::Say(text.to_owned()));
        }
    }

    /// Ends `room`'s program (its viewers' sessions end with it).
    pub fn stop(&self, room: &str) {
        if self.lock().remove(room).is_some() {
            tracing::info!(%room, "program stopped");
        }
    }

    pub fn is_running(&self, room: &str) -> bool {
        self.lock()
            .get(room)
            .is_some_and(|running| running.program.is_alive())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Each line the program speaks, as a caption of its stream (until the
/// program ends): through the stream's captioner when there is one.
async fn caption(
    mut spoken: UnboundedReceiver<Spoken>,
    stream: String,
    hub: Arc<RoomHub>,
    lines: Option<UnboundedSender<Line>>,
) {
    while let Some(line) = spoken.recv().await {
        let caption = Caption {
            stream: stream.clone(),
            lang: line.lang,
            start_ms: line.start_ms,
            end_ms: line.end_ms,
            text: line.text,
            r#final: true,
            source: "host".into(),
            translated_from: String::new(),
        };
        match &lines {
            Some(lines) => {
                let _ = lines.send(Line {
                    caption,
                    recognized: None,
                });
            }
            None => hub.publish(Broadcast::new(Frame::Caption(caption), None)),
        }
    }
}

//! A recording's captions: a WebVTT subtitle playlist per language beside
//! the video's (`subs-<lang>/index.m3u8`, named in the master playlist by
//! the ladder), and the whole text as one file per language when the
//! recording ends (`subs-<lang>/all.vtt`), so the VOD has them too.
//!
//! The tracks live as long as their recording: its recorder creates them
//! (empty playlists, before any player can ask for the master that names
//! them), cuts their segments each time the video reports one, and ends
//! them with the recording. Captioners only push final lines into them.
//!
//! Cue times are the recording's media time (wall clock less the
//! recording's origin). Segments are cut [`LAG_MS`] behind the media
//! clock: a final line arrives a few seconds after its sound (recognition,
//! translation), and a cue pushed after its segment was written would be
//! lost from the live playlist.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use captions::webvtt::{Cue, SubtitleTrack};

/// How far behind the media clock live subtitle segments are cut.
pub const LAG_MS: u64 = 10_000;

/// The name of a subtitle track's file inside its directory.
pub const PLAYLIST: &str = "index.m3u8";
/// The whole track as one file, written when the recording ends.
pub const WHOLE_FILE: &str = "all.vtt";

/// The subtitle tracks of one recording.
pub struct SubtitleTracks {
    recording: String,
    dir: PathBuf,
    /// Wall clock (ms) of the recording's media time 0.
    origin_ms: u64,
    tracks: HashMap<String, Track>,
}

struct Track {
    live: SubtitleTrack,
    all: Vec<Cue>,
}

impl SubtitleTracks {
    /// Creates `langs`' tracks in the recording directory `dir`, each
    /// with its first segment already listed (and empty): a player gives
    /// up on a playlist without segments (hls.js: `levelEmptyError`), and
    /// the next segments come [`LAG_MS`] later. A line in the recording's
    /// first segment is missing from the live segments (the whole file
    /// at the end has it).
    pub fn create(
        recording: &str,
        dir: &Path,
        langs: &[String],
        segment_ms: u64,
        origin_ms: u64,
    ) -> std::io::Result<Self> {
        let mut tracks = HashMap::new();
        for lang in langs {
            let track = Track {
                live: SubtitleTrack::new(segment_ms),
                all: Vec::new(),
            };
            let track_dir = dir.join(codec::ladder::subtitle_dir(lang));
            std::fs::create_dir_all(&track_dir)?;
            tracks.insert(lang.clone(), track);
        }
        let mut created = Self {
            recording: recording.to_owned(),
            dir: dir.to_owned(),
            origin_ms,
            tracks,
        };
        created.write(segment_ms, true);
        Ok(created)
    }

    /// A final line said from `start_ms` to `end_ms` (wall clock); lines
    /// in a language the recording has no track for are left out.
    pub fn push(&mut self, lang: &str, start_ms: u64, end_ms: u64, text: &str) {
        let Some(track) = self.tracks.get_mut(lang) else {
            return;
        };
        let cue = Cue {
            start_ms: start_ms.saturating_sub(self.origin_ms),
            end_ms: end_ms.saturating_sub(self.origin_ms),
            text: text.to_owned(),
        };
        track.all.push(cue.clone());
        track.live.push(cue);
    }

    /// Writes the segments that are due at `now_ms` (wall clock).
    pub fn cut(&mut self, now_ms: u64) {
        let media_ms = now_ms.saturating_sub(self.origin_ms);
        self.write(media_ms.saturating_sub(LAG_MS), false);
    }

    /// The recording ended: every track is written to its last cue (a
    /// subtitle playlist may end before the video's) and ended, and its
    /// whole text goes into one file.
    pub fn finish(&mut self) {
        for track in self.tracks.values_mut() {
            track.live.finish();
        }
        self.write(0, true);
        for (lang, track) in &self.tracks {
            let path = self
                .dir
                .join(codec::ladder::subtitle_dir(lang))
                .join(WHOLE_FILE);
            if let Err(error) = write_atomic(&path, &captions::webvtt::file(&track.all)) {
                tracing::warn!(recording = %self.recording, %lang, %error, "the subtitle file was not written");
            }
        }
    }

    /// Writes the segments due at `media_ms` and the playlist that lists
    /// them (rewritten at the end, even with nothing new: it gains its
    /// `#EXT-X-ENDLIST`).
    fn write(&mut self, media_ms: u64, ending: bool) {
        for (lang, track) in &mut self.tracks {
            let segments = track.live.segments_until(media_ms);
            if segments.is_empty() && !ending {
                continue;
            }
            let track_dir = self.dir.join(codec::ladder::subtitle_dir(lang));
            let written = segments
                .iter()
                .try_for_each(|segment| write_atomic(&track_dir.join(&segment.name), &segment.text))
                .and_then(|()| write_atomic(&track_dir.join(PLAYLIST), &track.live.playlist()));
            if let Err(error) = written {
                metrics::counter!("live_caption_subtitle_errors_total").increment(1);
                tracing::warn!(recording = %self.recording, %lang, %error, "a subtitle segment was not written");
            }
        }
    }
}

/// Players read these files while they are rewritten: a reader sees the
/// old file or the new one, never half of one.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: PathBuf) -> String {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn lines_land_at_their_media_time_and_the_tracks_end_with_the_recording() {
        let root = tempfile::tempdir().unwrap();
        let langs = ["en".to_owned(), "es".to_owned()];
        let mut tracks =
            SubtitleTracks::create("rec-a", root.path(), &langs, 2_000, 1_000_000).unwrap();
        // A player asking at once finds a live playlist of one (empty)
        // segment.
        let en = root.path().join("subs-en");
        let first = read(en.join(PLAYLIST));
        assert!(first.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{first}");
        assert_eq!(first.matches(".vtt").count(), 1, "{first}");
        assert!(!read(en.join("seg_00000.vtt")).contains("-->"));
        // A line in the first segment misses the live segments; from the
        // second on they land.
        tracks.push("en", 1_000_500, 1_001_000, "Too early");
        tracks.push("en", 1_003_000, 1_004_500, "Hello & welcome");
        tracks.push("es", 1_003_000, 1_004_500, "Hola");
        tracks.push("fr", 1_003_000, 1_004_500, "not a recorded language");
        // 20 s in: segments up to 10 s (20 s less the lag) are out.
        tracks.cut(1_020_000);
        let playlist = read(en.join(PLAYLIST));
        assert_eq!(playlist.matches(".vtt").count(), 5, "{playlist}");
        assert!(!playlist.contains("#EXT-X-ENDLIST"));
        let segment = read(en.join("seg_00001.vtt"));
        assert!(
            segment.contains("00:00:03.000 --> 00:00:04.500"),
            "{segment}"
        );
        assert!(segment.contains("Hello &amp; welcome"), "{segment}");
        assert!(
            read(en.join("seg_00002.vtt")).contains("Hello"),
            "a cue spanning a boundary is in both"
        );
        assert!(!read(en.join("seg_00003.vtt")).contains("Hello"));
        assert!(read(root.path().join("subs-es/seg_00001.vtt")).contains("Hola"));
        assert!(!root.path().join("subs-fr").exists());

        tracks.push("en", 1_031_000, 1_032_000, "Second");
        tracks.finish();
        let ended = read(en.join(PLAYLIST));
        assert!(ended.contains("#EXT-X-ENDLIST"), "{ended}");
        assert_eq!(
            ended.matches(".vtt").count(),
            16,
            "to the last cue: {ended}"
        );
        let whole = read(en.join(WHOLE_FILE));
        assert!(whole.contains("Hello &amp; welcome"), "{whole}");
        assert!(
            whole.contains("Too early"),
            "the whole file has every line: {whole}"
        );
        assert!(
            whole.contains("00:00:31.000 --> 00:00:32.000\nSecond"),
            "{whole}"
        );
        // A track with no line still ends.
        assert!(read(root.path().join("subs-es").join(PLAYLIST)).contains("#EXT-X-ENDLIST"));
    }
}

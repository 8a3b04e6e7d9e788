//! WebVTT for captions, sans-IO: cues cut into live HLS subtitle segments
//! (one per language, the length of the video's segments) with their media
//! playlist, and whole VOD files.
//!
//! Times are milliseconds on the recording's media timeline (0 at its
//! first frame, as the video segments' own timestamps are). Each live
//! segment carries `X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000`, which
//! tells a player that a cue's time is media time (RFC 8216 section 3.5):
//! players line the cues up with the video they play whatever segment
//! they joined on. A cue that spans a segment boundary is written in both
//! segments, as the HLS authoring guidance asks.

use m3u8_rs::{MediaPlaylist, MediaPlaylistType, MediaSegment};

/// One caption on the media timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cue {
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
}

/// The header every file starts with.
const HEADER: &str = "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n";

/// `HH:MM:SS.mmm`.
pub fn timestamp(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// A WebVTT file of `cues`, in order of start.
pub fn file(cues: &[Cue]) -> String {
    let mut out = String::from(HEADER);
    for cue in cues {
        // A blank line would end the cue early, `-->` would look like a
        // timing line, and `&`, `<`, `>` are markup in a cue's text.
        let text = cue
            .text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
            .replace("-->", "→")
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        if text.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "{} --> {}\n{}\n\n",
            timestamp(cue.start_ms),
            timestamp(cue.end_ms.max(cue.start_ms + 1)),
            text
        ));
    }
    out
}

/// A language's live subtitles: cues in, segments and a playlist out.
#[derive(Debug)]
pub struct SubtitleTrack {
    segment_ms: u64,
    cues: Vec<Cue>,
    /// Segments written so far (their playlist entries).
    written: u64,
    ended: bool,
}

/// A segment ready to be stored: `seg_NNNNN.vtt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubtitleSegment {
    pub index: u64,
    pub name: String,
    pub text: String,
}

impl SubtitleTrack {
    pub fn new(segment_ms: u64) -> Self {
        Self {
            segment_ms: segment_ms.max(1),
            cues: Vec::new(),
            written: 0,
            ended: false,
        }
    }

    pub fn push(&mut self, cue: Cue) {
        self.cues.push(cue);
    }

    /// The segments whose time is over by `media_ms` (all of them once
    /// `finish` was called), each with every cue that overlaps it.
    pub fn segments_until(&mut self, media_ms: u64) -> Vec<SubtitleSegment> {
        let mut out = Vec::new();
        loop {
            let (start, end) = (
                self.written * self.segment_ms,
                (self.written + 1) * self.segment_ms,
            );
            let last_cue_end = self.cues.iter().map(|c| c.end_ms).max().unwrap_or(0);
            let due = end <= media_ms || (self.ended && start < last_cue_end.max(media_ms));
            if !due {
                break;
            }
            let cues: Vec<Cue> = self
                .cues
                .iter()
                .filter(|c| c.start_ms < end && c.end_ms > start)
                .cloned()
                .collect();
            out.push(SubtitleSegment {
                index: self.written,
                name: segment_name(self.written),
                text: file(&cues),
            });
            self.written += 1;
            // Cues wholly in the past are done with.
            self.cues.retain(|c| c.end_ms > end);
        }
        out
    }

    /// No more cues: the next `segments_until` writes the rest.
    pub fn finish(&mut self) {
        self.ended = true;
    }

    /// The media playlist of the segments written, ended when finished.
    pub fn playlist(&self) -> String {
        let target = self.segment_ms.div_ceil(1000);
        let playlist = MediaPlaylist {
            version: Some(3),
            target_duration: target,
            media_sequence: 0,
            playlist_type: Some(MediaPlaylistType::Event),
            end_list: self.ended,
            segments: (0..self.written)
                .map(|index| MediaSegment {
                    uri: segment_name(index),
                    duration: self.segment_ms as f32 / 1000.0,
                    ..MediaSegment::default()
                })
                .collect(),
            ..MediaPlaylist::default()
        };
        let mut text = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = playlist.write_to(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    }
}

fn segment_name(index: u64) -> String {
    format!("seg_{index:05}.vtt")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cue(start_ms: u64, end_ms: u64, text: &str) -> Cue {
        Cue {
            start_ms,
            end_ms,
            text: text.into(),
        }
    }

    #[test]
    fn a_file_has_the_header_the_timestamp_map_and_safe_cues() {
        let text = file(&[
            cue(1_500, 3_250, "Hola a todos."),
            cue(3_661_001, 3_662_000, "line one\n\nQ&A --> <b>"),
            cue(5_000, 6_000, "  "),
        ]);
        assert_eq!(
            text,
            "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n\
             00:00:01.500 --> 00:00:03.250\nHola a todos.\n\n\
             01:01:01.001 --> 01:01:02.000\nline one\nQ&amp;A → &lt;b&gt;\n\n"
        );
    }

    #[test]
    fn live_segments_follow_the_media_clock_and_repeat_a_cue_that_crosses_a_boundary() {
        let mut track = SubtitleTrack::new(2_000);
        track.push(cue(500, 1_500, "first"));
        track.push(cue(1_800, 2_600, "across"));
        assert!(
            track.segments_until(1_999).is_empty(),
            "the first segment is not over"
        );
        let segments = track.segments_until(4_100);
        assert_eq!(
            segments.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["seg_00000.vtt", "seg_00001.vtt"]
        );
        assert!(segments[0].text.contains("first") && segments[0].text.contains("across"));
        assert!(segments[1].text.contains("across") && !segments[1].text.contains("first"));
        assert!(track.playlist().contains("#EXTINF:2"));
        assert!(!track.playlist().contains("#EXT-X-ENDLIST"));

        track.push(cue(4_200, 5_100, "last"));
        track.finish();
        let rest = track.segments_until(4_300);
        assert_eq!(rest.len(), 1, "the segment holding the last cue");
        assert!(rest[0].text.contains("last"));
        let playlist = track.playlist();
        assert!(playlist.contains("seg_00002.vtt"));
        assert!(playlist.contains("#EXT-X-ENDLIST"));
    }
}

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ffmpeg::{Dictionary, Packet, Rational, codec};
use ffmpeg_next as ffmpeg;

use crate::audio::{AacEncoder, AudioPacket};
use crate::{CodecError, EncodedFrame, VideoEncoder};

/// RTP's video clock: the timestamps of video frames given to the writer.
pub const VIDEO_CLOCK_HZ: i32 = 90_000;
/// The clock of audio packets (48 kHz samples).
pub const AUDIO_CLOCK_HZ: i32 = 48_000;

/// The playlist of each rendition, beside its init segment and media
/// segments in the rendition's directory.
pub const MEDIA_PLAYLIST: &str = "index.m3u8";

/// A media segment the muxer finished: complete on disk and listed in the
/// playlist, so it can be announced.
#[derive(Debug, Clone, PartialEq)]
pub struct HlsSegment {
    /// Media sequence number, from 0.
    pub sequence: u64,
    /// The file name, relative to the rendition's playlist.
    pub uri: String,
    pub duration_ms: u64,
}

/// One rendition's HLS output: CMAF (fragmented MP4) segments cut on
/// keyframes, an init segment and an EVENT playlist that gains an
/// `#EXT-X-ENDLIST` when the writer finishes, so the live playlist becomes
/// the recording's VOD playlist without a copy.
///
/// FFmpeg's `hls` muxer does the cutting and the playlist; this type feeds
/// it encoded frames and reports each segment once it is complete.
pub struct HlsWriter {
    output: ffmpeg::format::context::Output,
    playlist: PathBuf,
    video: usize,
    audio: Option<usize>,
    /// Segments already reported.
    reported: usize,
    playlist_modified: Option<SystemTime>,
}

impl HlsWriter {
    /// Starts a rendition in `dir` (created if missing). `audio` adds an
    /// AAC track fed by [`Self::write_audio`].
    pub fn create(
        dir: &Path,
        segment_seconds: u32,
        video: &VideoEncoder,
        audio: Option<&AacEncoder>,
    ) -> Result<Self, CodecError> {
        crate::init();
        std::fs::create_dir_all(dir).map_err(|error| {
            CodecError::Input(format!("cannot create {}: {error}", dir.display()))
        })?;
        let playlist = dir.join(MEDIA_PLAYLIST);
        let mut output = ffmpeg::format::output_as(&playlist, "hls")
            .map_err(CodecError::ffmpeg("opening the HLS muxer"))?;
        // Opening left an empty file where the playlist goes; the muxer
        // writes the real one (aside, then renamed) at the first segment.
        // Until then there must be no playlist, not an empty one.
        let _ = std::fs::remove_file(&playlist);
        let video_index = add_stream(&mut output, video.parameters(), VIDEO_CLOCK_HZ)?;
        let audio_index = audio
            .map(|aac| add_stream(&mut output, aac.parameters(), AUDIO_CLOCK_HZ))
            .transpose()?;
        // SAFETY: a plain field of the open output context, read by the
        // muxer on every interleaved write. A track that stalls (audio that
        // never comes) must not hold video back for the default 10 s.
        unsafe {
            (*output.as_mut_ptr()).max_interleave_delta = 500_000;
        }
        let mut options = Dictionary::new();
        options.set("hls_time", &segment_seconds.to_string());
        options.set("hls_segment_type", "fmp4");
        options.set("hls_playlist_type", "event");
        options.set("hls_fmp4_init_filename", "init.mp4");
        options.set(
            "hls_segment_filename",
            &dir.join("seg_%05d.m4s").to_string_lossy(),
        );
        // Segments are written under a temporary name and renamed when
        // complete, so the gateway never serves half a segment.
        options.set("hls_flags", "independent_segments+temp_file");
        output
            .write_header_with(options)
            .map_err(CodecError::ffmpeg("writing the HLS header"))?;
        Ok(Self {
            output,
            playlist,
            video: video_index,
            audio: audio_index,
            reported: 0,
            playlist_modified: None,
        })
    }

    /// Writes one encoded video frame whose `pts` is on the 90 kHz media
    /// timeline; returns the segments this completed.
    pub fn write_video(&mut self, frame: &EncodedFrame) -> Result<Vec<HlsSegment>, CodecError> {
        let mut packet = Packet::copy(&frame.data);
        packet.set_pts(Some(frame.pts));
        packet.set_dts(Some(frame.pts));
        if frame.keyframe {
            packet.set_flags(codec::packet::Flags::KEY);
        }
        self.write(packet, self.video, VIDEO_CLOCK_HZ)?;
        self.completed_segments()
    }

    /// Writes one AAC packet (48 kHz timestamps). Without an audio track
    /// (the writer was created without one) it is ignored.
    pub fn write_audio(&mut self, audio: &AudioPacket) -> Result<(), CodecError> {
        let Some(index) = self.audio else {
            return Ok(());
        };
        let mut packet = Packet::copy(&audio.data);
        packet.set_pts(Some(audio.pts));
        packet.set_dts(Some(audio.pts));
        self.write(packet, index, AUDIO_CLOCK_HZ)
    }

    fn write(&mut self, mut packet: Packet, index: usize, clock: i32) -> Result<(), CodecError> {
        let stream_base = self
            .output
            .stream(index)
            .map(|stream| stream.time_base())
            .unwrap_or(Rational(1, clock));
        packet.set_stream(index);
        packet.rescale_ts(Rational(1, clock), stream_base);
        packet
            .write_interleaved(&mut self.output)
            .map_err(CodecError::ffmpeg("writing to the HLS muxer"))
    }

    /// Ends the rendition: the last segment and `#EXT-X-ENDLIST`. Returns
    /// the segments not reported yet.
    ///
    /// A stream rarely ends on a segment boundary, and when it ends a frame
    /// or two after a keyframe the muxer writes a last segment of (almost)
    /// nothing, which players such as hls.js take for an empty segment and
    /// report as an error. Such a tail (under [`MIN_TAIL_MS`]) is left out
    /// of the playlist: the recording loses at most that much at its end.
    pub fn finish(mut self) -> Result<Vec<HlsSegment>, CodecError> {
        self.output
            .write_trailer()
            .map_err(CodecError::ffmpeg("finishing the HLS playlist"))?;
        drop_short_tail(&self.playlist)?;
        self.playlist_modified = None;
        self.completed_segments()
    }

    /// The segments listed in the playlist since the last call. The muxer
    /// rewrites the playlist (atomically, by rename) each time it closes a
    /// segment; reading it only when it changed costs one `stat` per frame.
    fn completed_segments(&mut self) -> Result<Vec<HlsSegment>, CodecError> {
        let modified = std::fs::metadata(&self.playlist)
            .and_then(|meta| meta.modified())
            .ok();
        if modified.is_none() || modified == self.playlist_modified {
            return Ok(Vec::new());
        }
        self.playlist_modified = modified;
        let segments = read_segments(&self.playlist)?;
        let fresh = segments.into_iter().skip(self.reported).collect::<Vec<_>>();
        self.reported += fresh.len();
        Ok(fresh)
    }
}

/// The shortest last segment a finished playlist keeps.
pub const MIN_TAIL_MS: u64 = 250;

fn drop_short_tail(playlist: &Path) -> Result<(), CodecError> {
    let unreadable = |error: std::io::Error| {
        CodecError::Input(format!("cannot rewrite {}: {error}", playlist.display()))
    };
    let bytes = std::fs::read(playlist).map_err(unreadable)?;
    let Ok(mut parsed) = m3u8_rs::parse_media_playlist_res(&bytes) else {
        return Ok(());
    };
    let short = parsed
        .segments
        .last()
        .is_some_and(|last| (f64::from(last.duration) * 1000.0) < MIN_TAIL_MS as f64);
    if !short || parsed.segments.len() < 2 {
        return Ok(());
    }
    let tail = parsed.segments.pop().map(|segment| segment.uri);
    let mut text = Vec::new();
    parsed.write_to(&mut text).map_err(unreadable)?;
    // Written aside and renamed, like the muxer's own playlist writes.
    let staged = playlist.with_extension("m3u8.tmp");
    std::fs::write(&staged, text)
        .and_then(|()| std::fs::rename(&staged, playlist))
        .map_err(unreadable)?;
    if let (Some(tail), Some(dir)) = (tail, playlist.parent()) {
        let _ = std::fs::remove_file(dir.join(tail));
    }
    Ok(())
}

fn add_stream(
    output: &mut ffmpeg::format::context::Output,
    parameters: codec::Parameters,
    clock: i32,
) -> Result<usize, CodecError> {
    let mut stream = output
        .add_stream(ffmpeg::encoder::find(parameters.id()))
        .map_err(CodecError::ffmpeg("adding a stream to the HLS muxer"))?;
    stream.set_parameters(parameters);
    stream.set_time_base(Rational(1, clock));
    Ok(stream.index())
}

/// The segments a media playlist lists, in order.
pub fn read_segments(playlist: &Path) -> Result<Vec<HlsSegment>, CodecError> {
    let bytes = std::fs::read(playlist).map_err(|error| {
        CodecError::Input(format!("cannot read {}: {error}", playlist.display()))
    })?;
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let parsed = m3u8_rs::parse_media_playlist_res(&bytes).map_err(|error| {
        CodecError::Input(format!(
            "{} is not a media playlist: {error:?}",
            playlist.display()
        ))
    })?;
    Ok(parsed
        .segments
        .iter()
        .enumerate()
        .map(|(index, segment)| HlsSegment {
            sequence: parsed.media_sequence + index as u64,
            uri: segment.uri.clone(),
            duration_ms: (f64::from(segment.duration) * 1000.0).round() as u64,
        })
        .collect())
}

/// Ends a media playlist whose writer is gone (it failed mid-stream):
/// appends `#EXT-X-ENDLIST` unless it is there, so players see a finished
/// recording rather than a live stream that never updates.
pub fn seal_playlist(playlist: &Path) -> std::io::Result<()> {
    let text = std::fs::read_to_string(playlist)?;
    if text.is_empty() || text.contains("#EXT-X-ENDLIST") {
        return Ok(());
    }
    let separator = if text.ends_with('\n') { "" } else { "\n" };
    std::fs::write(playlist, format!("{text}{separator}#EXT-X-ENDLIST\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYLIST: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n\
        #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MAP:URI=\"init.mp4\"\n\
        #EXTINF:2.000,\nseg_00000.m4s\n#EXTINF:2.000,\nseg_00001.m4s\n\
        #EXTINF:TAIL,\nseg_00002.m4s\n#EXT-X-ENDLIST\n";

    fn finished_with_tail(tail: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let playlist = dir.path().join(MEDIA_PLAYLIST);
        std::fs::write(&playlist, PLAYLIST.replace("TAIL", tail)).unwrap();
        std::fs::write(dir.path().join("seg_00002.m4s"), b"tail").unwrap();
        (dir, playlist)
    }

    #[test]
    fn a_last_segment_of_almost_nothing_is_left_out() {
        let (dir, playlist) = finished_with_tail("0.033");
        drop_short_tail(&playlist).unwrap();
        let uris: Vec<String> = read_segments(&playlist)
            .unwrap()
            .into_iter()
            .map(|s| s.uri)
            .collect();
        assert_eq!(uris, ["seg_00000.m4s", "seg_00001.m4s"]);
        assert!(
            std::fs::read_to_string(&playlist)
                .unwrap()
                .contains("#EXT-X-ENDLIST")
        );
        assert!(!dir.path().join("seg_00002.m4s").exists());
    }

    #[test]
    fn a_real_last_segment_stays() {
        let (_dir, playlist) = finished_with_tail("0.400");
        drop_short_tail(&playlist).unwrap();
        assert_eq!(read_segments(&playlist).unwrap().len(), 3);
        seal_playlist(&playlist).unwrap();
        let text = std::fs::read_to_string(&playlist).unwrap();
        assert_eq!(
            text.matches("#EXT-X-ENDLIST").count(),
            1,
            "sealing twice adds nothing"
        );
    }
}

use thiserror::Error;

/// Why a codec could not be opened or could not process a frame.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The FFmpeg build on this machine has no such encoder or decoder.
    #[error("{kind} {name} is not available in this FFmpeg build")]
    Unavailable {
        kind: &'static str,
        name: &'static str,
    },
    /// FFmpeg refused an operation; `context` says which.
    #[error("{context}: {source}")]
    Ffmpeg {
        context: &'static str,
        #[source]
        source: ffmpeg_next::Error,
    },
    /// Input that does not fit the codec as it was opened.
    #[error("{0}")]
    Input(String),
}

impl CodecError {
    pub(crate) fn ffmpeg(context: &'static str) -> impl FnOnce(ffmpeg_next::Error) -> Self {
        move |source| Self::Ffmpeg { context, source }
    }
}

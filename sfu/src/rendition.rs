//! Transcoded renditions offered as layers.
//!
//! A publisher that sends one encoding still serves weak viewers when the
//! stream is transcoded: the transcoder's renditions come back into the
//! router and are offered like simulcast layers. Each subscriber of a
//! single-layer stream receives one [`Feed`]: the publisher's own video
//! (`Source`) or one rendition. Renditions are H.264; a subscriber that
//! did not negotiate H.264 stays on the source.
//!
//! Every rendition frame carries its source frame's RTP time, so a switch
//! between feeds keeps one timeline; a switch takes effect on a keyframe of
//! the new feed that is later than what the subscriber last got.

use crate::layer::LayerChoice;

/// What a subscriber of a single-layer stream receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Source,
    Rendition(usize),
}

/// A rendition the transcoder produces for a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionLayer {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u32,
}

/// What the router knows of a stream beyond its peers: whether its ingest
/// is tapped for a transcoder and which renditions come back.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamMedia {
    pub tapped: bool,
    /// As the transcoder opened them, best first.
    pub renditions: Vec<RenditionLayer>,
    /// Height of the publisher's video when the ladder opened.
    pub source_height: u32,
}

impl StreamMedia {
    /// The feeds worth offering, best first: the source, then renditions
    /// smaller than it (one of the source's own size only serves HLS).
    pub fn feeds(&self) -> Vec<(Feed, u32)> {
        let mut feeds = vec![(Feed::Source, 0)];
        feeds.extend(
            self.renditions
                .iter()
                .enumerate()
                .filter(|(_, r)| r.height < self.source_height)
                .map(|(index, r)| (Feed::Rendition(index), r.bitrate_bps)),
        );
        feeds
    }
}

/// A subscriber's position on a single-layer stream's video.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FeedState {
    pub current: Option<Feed>,
    /// RTP time (90 kHz) of the last frame sent.
    pub last_time: Option<u64>,
}

impl FeedState {
    /// Whether a frame of `feed` goes to this subscriber, whose target is
    /// `target`; switches when the frame is the target's keyframe.
    ///
    /// Time never goes back: renditions lag their source by the transcode,
    /// so while a subscriber waits for a rendition's keyframe its current
    /// feed pauses (the rendition's keyframe would otherwise be older than
    /// what was sent). Going back to the source needs no pause: the source
    /// is ahead of every rendition.
    pub fn admit(&mut self, feed: Feed, target: Feed, keyframe: bool, time: u64) -> bool {
        if self.last_time.is_some_and(|last| time <= last) {
            return false;
        }
        let switch = feed == target && self.current != Some(target) && keyframe;
        let keep = self.current == Some(feed) && (feed == target || target == Feed::Source);
        if switch {
            self.current = Some(feed);
        }
        if switch || keep {
            self.last_time = Some(time);
        }
        switch || keep
    }
}

/// The feed a subscriber should receive. `source_bps` is the publisher's
/// measured video rate, `estimate_bps` the subscriber's bandwidth estimate.
/// `auto` keeps the source until both are known, then takes the best feed
/// that fits the estimate with 15 % headroom (the lowest when none does).
pub(crate) fn pick_feed(
    media: &StreamMedia,
    choice: LayerChoice,
    estimate_bps: Option<u64>,
    source_bps: Option<u64>,
) -> Feed {
    let feeds = media.feeds();
    let last = feeds.len() - 1;
    match choice {
        LayerChoice::High => Feed::Source,
        LayerChoice::Medium => feeds[feeds.len() / 2].0,
        LayerChoice::Low => feeds[last].0,
        LayerChoice::Auto => {
            let (Some(estimate), Some(source)) = (estimate_bps, source_bps) else {
                return Feed::Source;
            };
            let budget = estimate.saturating_mul(85) / 100;
            feeds
                .iter()
                .find(|(feed, bps)| {
                    let rate = if *feed == Feed::Source {
                        source
                    } else {
                        u64::from(*bps)
                    };
                    rate <= budget
                })
                .unwrap_or(&feeds[last])
                .0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(source_height: u32, heights: &[(u32, u32)]) -> StreamMedia {
        StreamMedia {
            tapped: true,
            renditions: heights
                .iter()
                .map(|(height, kbps)| RenditionLayer {
                    name: format!("{height}p"),
                    width: height * 16 / 9,
                    height: *height,
                    bitrate_bps: kbps * 1000,
                })
                .collect(),
            source_height,
        }
    }

    #[test]
    fn a_subscriber_starts_on_a_keyframe_and_switches_without_going_back_in_time() {
        let (source, low) = (Feed::Source, Feed::Rendition(1));
        let mut state = FeedState::default();
        assert!(!state.admit(source, source, false, 100), "no keyframe yet");
        assert!(state.admit(source, source, true, 200));
        assert!(state.admit(source, source, false, 300));
        // Asks for `low`: the source pauses until low's keyframe.
        assert!(!state.admit(source, low, false, 400));
        assert!(
            !state.admit(low, low, false, 350),
            "a delta cannot start it"
        );
        assert!(
            !state.admit(low, low, true, 250),
            "older than what was sent"
        );
        assert!(state.admit(low, low, true, 450));
        assert!(
            !state.admit(source, low, true, 500),
            "a source keyframe no longer matters"
        );
        assert!(state.admit(low, low, false, 480));
        // Back to the source: low keeps going until the source's keyframe.
        assert!(state.admit(low, source, false, 510));
        assert!(!state.admit(source, source, false, 600));
        assert!(state.admit(source, source, true, 700));
        assert!(
            !state.admit(low, source, false, 690),
            "low is dropped after the switch"
        );
        assert_eq!(state.current, Some(source));
    }

    #[test]
    fn choices_map_onto_source_and_smaller_renditions() {
        let ladder = media(720, &[(720, 2500), (480, 1200), (360, 700)]);
        assert_eq!(
            ladder.feeds().len(),
            3,
            "the 720p rendition only serves HLS"
        );
        assert_eq!(
            pick_feed(&ladder, LayerChoice::High, None, None),
            Feed::Source
        );
        assert_eq!(
            pick_feed(&ladder, LayerChoice::Medium, None, None),
            Feed::Rendition(1)
        );
        assert_eq!(
            pick_feed(&ladder, LayerChoice::Low, None, None),
            Feed::Rendition(2)
        );
    }

    #[test]
    fn without_renditions_every_choice_is_the_source() {
        let none = StreamMedia::default();
        for choice in [LayerChoice::Auto, LayerChoice::Medium, LayerChoice::Low] {
            assert_eq!(
                pick_feed(&none, choice, Some(10_000), Some(2_000_000)),
                Feed::Source
            );
        }
    }

    #[test]
    fn auto_fits_the_estimate_once_rates_are_known() {
        let ladder = media(1080, &[(720, 2500), (480, 1200), (360, 700)]);
        let auto = |estimate, source| pick_feed(&ladder, LayerChoice::Auto, estimate, source);
        assert_eq!(auto(None, Some(4_000_000)), Feed::Source, "no estimate yet");
        assert_eq!(
            auto(Some(500_000), None),
            Feed::Source,
            "source rate unknown"
        );
        assert_eq!(auto(Some(6_000_000), Some(4_000_000)), Feed::Source);
        assert_eq!(auto(Some(3_000_000), Some(4_000_000)), Feed::Rendition(0));
        assert_eq!(auto(Some(1_000_000), Some(4_000_000)), Feed::Rendition(2));
        assert_eq!(
            auto(Some(100_000), Some(4_000_000)),
            Feed::Rendition(2),
            "the lowest"
        );
    }
}

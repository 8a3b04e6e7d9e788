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

use std::time::{Duration, Instant};

use str0m::media::Rid;

use crate::layer::LayerChoice;

/// A jump of RTP time this large, either way, is a new timeline (the
/// publisher's SSRC changed, a simulcast layer switched), not reordering.
pub(crate) const DISCONTINUITY_TICKS: u64 = 5 * 90_000;

/// `auto` moves up to a better feed at most this often; it moves down at
/// once (a viewer losing packets must not wait).
const AUTO_HOLD: Duration = Duration::from_secs(4);

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
#[derive(Debug, Clone)]
pub(crate) struct StreamMedia {
    pub tapped: bool,
    /// Simulcast publisher: the layer the transcoder gets. It moves to a
    /// better layer only on that layer's keyframe, never mid-picture.
    pub tapped_rid: Option<Rid>,
    /// The feeds worth offering, best first, with their bitrates: the
    /// source, then renditions smaller than it (one of the source's own
    /// size only serves HLS). Made once per ladder, read per frame.
    feeds: Vec<(Feed, u32)>,
}

impl Default for StreamMedia {
    fn default() -> Self {
        Self {
            tapped: false,
            tapped_rid: None,
            feeds: vec![(Feed::Source, 0)],
        }
    }
}

impl StreamMedia {
    /// The transcoder's ladder for a source `source_height` tall.
    pub fn set_renditions(&mut self, renditions: &[RenditionLayer], source_height: u32) {
        self.feeds.truncate(1);
        self.feeds.extend(
            renditions
                .iter()
                .enumerate()
                .filter(|(_, r)| r.height < source_height)
                .map(|(index, r)| (Feed::Rendition(index), r.bitrate_bps)),
        );
    }

    pub fn feeds(&self) -> &[(Feed, u32)] {
        &self.feeds
    }

    /// Whether `feed` is offered to viewers.
    pub fn offers(&self, feed: Feed) -> bool {
        self.feeds.iter().any(|(offered, _)| *offered == feed)
    }

    /// Whether any rendition is offered.
    pub fn has_renditions(&self) -> bool {
        self.feeds.len() > 1
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
        if let Some(last) = self.last_time {
            if last.saturating_sub(time) > DISCONTINUITY_TICKS {
                // A new timeline: start over on its next keyframe.
                *self = Self::default();
            } else if time <= last {
                return false;
            }
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

/// The feed a subscriber asking for `choice` should receive; for `auto`,
/// the feed it holds now ([`AutoFeed`]).
pub(crate) fn pick_feed(media: &StreamMedia, choice: LayerChoice, auto: Feed) -> Feed {
    let feeds = media.feeds();
    match choice {
        LayerChoice::High => Feed::Source,
        LayerChoice::Medium => feeds[feeds.len() / 2].0,
        LayerChoice::Low => feeds[feeds.len() - 1].0,
        LayerChoice::Auto if media.offers(auto) => auto,
        LayerChoice::Auto => Feed::Source,
    }
}

/// The best feed whose rate fits `percent` of the estimate (the lowest when
/// none does). The source's rate is the publisher's measured one.
fn fitting(media: &StreamMedia, estimate_bps: u64, source_bps: u64, percent: u64) -> Feed {
    let budget = estimate_bps.saturating_mul(percent) / 100;
    let feeds = media.feeds();
    feeds
        .iter()
        .find(|(feed, bps)| {
            let rate = if *feed == Feed::Source {
                source_bps
            } else {
                u64::from(*bps)
            };
            rate <= budget
        })
        .unwrap_or(&feeds[feeds.len() - 1])
        .0
}

/// What `auto` gives one subscriber, decided when its bandwidth estimate
/// changes, not per frame: down at once to the best feed that fits 85 % of
/// the estimate, up only to one that fits 70 % and no sooner than
/// [`AUTO_HOLD`] after the last move, so an estimate wobbling around a
/// feed's rate does not flip the picture back and forth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AutoFeed {
    pub feed: Feed,
    pub moved: Option<Instant>,
}

impl Default for AutoFeed {
    fn default() -> Self {
        Self {
            feed: Feed::Source,
            moved: None,
        }
    }
}

impl AutoFeed {
    /// Updates the choice for a new estimate; returns the new feed when it
    /// moved (the caller asks for a keyframe of it).
    pub fn update(
        &mut self,
        media: &StreamMedia,
        estimate_bps: u64,
        source_bps: Option<u64>,
        now: Instant,
    ) -> Option<Feed> {
        // Until the source's rate is measured there is nothing to compare.
        let source_bps = source_bps?;
        let rank = |feed: Feed| media.feeds().iter().position(|(f, _)| *f == feed);
        let current = rank(self.feed).unwrap_or(0);
        let down = fitting(media, estimate_bps, source_bps, 85);
        let up = fitting(media, estimate_bps, source_bps, 70);
        let held = self
            .moved
            .is_some_and(|at| now.saturating_duration_since(at) < AUTO_HOLD);
        let next = if rank(down).is_some_and(|r| r > current) {
            down
        } else if rank(up).is_some_and(|r| r < current) && !held {
            up
        } else {
            return None;
        };
        self.feed = next;
        self.moved = Some(now);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(source_height: u32, heights: &[(u32, u32)]) -> StreamMedia {
        let renditions: Vec<RenditionLayer> = heights
            .iter()
            .map(|(height, kbps)| RenditionLayer {
                name: format!("{height}p"),
                width: height * 16 / 9,
                height: *height,
                bitrate_bps: kbps * 1000,
            })
            .collect();
        let mut media = StreamMedia::default();
        media.set_renditions(&renditions, source_height);
        media
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
    fn a_jump_back_in_time_is_a_new_timeline() {
        let source = Feed::Source;
        let mut state = FeedState::default();
        assert!(state.admit(source, source, true, 10_000_000));
        assert!(!state.admit(source, source, false, 9_990_000), "reordered");
        assert!(
            !state.admit(source, source, false, 3000),
            "a new timeline: wait for its keyframe"
        );
        assert!(state.admit(source, source, true, 6000));
        assert!(state.admit(source, source, false, 9000));
    }

    #[test]
    fn choices_map_onto_source_and_smaller_renditions() {
        let ladder = media(720, &[(720, 2500), (480, 1200), (360, 700)]);
        assert_eq!(
            ladder.feeds().len(),
            3,
            "the 720p rendition only serves HLS"
        );
        let source = Feed::Source;
        assert_eq!(pick_feed(&ladder, LayerChoice::High, source), Feed::Source);
        assert_eq!(
            pick_feed(&ladder, LayerChoice::Medium, source),
            Feed::Rendition(1)
        );
        assert_eq!(
            pick_feed(&ladder, LayerChoice::Low, source),
            Feed::Rendition(2)
        );
        assert_eq!(
            pick_feed(&ladder, LayerChoice::Auto, Feed::Rendition(0)),
            Feed::Source,
            "an auto choice the ladder does not offer"
        );
    }

    #[test]
    fn without_renditions_every_choice_is_the_source() {
        let none = StreamMedia::default();
        for choice in [LayerChoice::Auto, LayerChoice::Medium, LayerChoice::Low] {
            assert_eq!(pick_feed(&none, choice, Feed::Rendition(1)), Feed::Source);
        }
    }

    #[test]
    fn auto_goes_down_at_once_and_up_with_margin_and_patience() {
        let ladder = media(1080, &[(720, 2500), (480, 1200), (360, 700)]);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let source = Some(4_000_000);
        let mut auto = AutoFeed::default();
        assert_eq!(
            auto.update(&ladder, 500_000, None, at(0)),
            None,
            "source rate unknown"
        );
        assert_eq!(auto.update(&ladder, 6_000_000, source, at(0)), None);
        assert_eq!(
            auto.update(&ladder, 3_000_000, source, at(1)),
            Some(Feed::Rendition(0)),
            "down at once"
        );
        assert_eq!(
            auto.update(&ladder, 1_000_000, source, at(2)),
            Some(Feed::Rendition(2))
        );
        // 1.5 Mbit/s fits 480p (1.2) at 85 % but not at 70 %: stays.
        assert_eq!(auto.update(&ladder, 1_500_000, source, at(8)), None);
        // 1.8 Mbit/s fits it at 70 %, but the last move was 1 s ago.
        assert_eq!(auto.update(&ladder, 1_800_000, source, at(3)), None, "held");
        assert_eq!(
            auto.update(&ladder, 1_800_000, source, at(9)),
            Some(Feed::Rendition(1))
        );
        assert_eq!(
            auto.update(&ladder, 100_000, source, at(9)),
            Some(Feed::Rendition(2)),
            "down needs no patience"
        );
    }
}

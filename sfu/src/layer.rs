//! Simulcast layer choice: which of a publisher's encodings each subscriber
//! receives.
//!
//! A publisher may send two or three encodings of its video, each tagged
//! with a RID. Names differ between clients (`q`/`h`/`f` from Chrome,
//! `l`/`m`/`h`, `lo`/`mid`/`hi` elsewhere), so [`Layers`] ranks them by
//! their measured bitrate once str0m reports it, and by name until then.
//! A subscriber asks for `auto`, `high`, `medium` or `low`; a switch takes
//! effect on the first keyframe of the target layer, so the decoder never
//! sees a frame it cannot decode.

use str0m::media::Rid;

/// What a subscriber asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerChoice {
    /// The best layer the subscriber's bandwidth estimate carries (the
    /// highest until there is an estimate).
    #[default]
    Auto,
    High,
    Medium,
    Low,
}

impl std::str::FromStr for LayerChoice {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "auto" => Ok(Self::Auto),
            "high" => Ok(Self::High),
            "medium" => Ok(Self::Medium),
            "low" => Ok(Self::Low),
            other => Err(format!(
                "unknown layer `{other}`, expected `auto`, `high`, `medium` or `low`"
            )),
        }
    }
}

/// A publisher's simulcast encodings, best first on demand.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    /// RIDs in the order first seen, with the last measured bytes per second.
    known: Vec<(Rid, Option<u64>)>,
}

impl Layers {
    /// Notes a RID seen on a frame.
    pub fn observe(&mut self, rid: Rid) {
        if !self.known.iter().any(|(r, _)| *r == rid) {
            self.known.push((rid, None));
        }
    }

    /// Records a layer's measured rate.
    pub fn measured(&mut self, rid: Rid, bytes_per_second: u64) {
        self.observe(rid);
        if let Some(entry) = self.known.iter_mut().find(|(r, _)| *r == rid) {
            entry.1 = Some(bytes_per_second);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// RIDs from the highest quality to the lowest: by measured rate when
    /// every layer has one, else by well-known names, else as first seen.
    pub fn ranked(&self) -> Vec<Rid> {
        let mut layers = self.known.clone();
        if layers.iter().all(|(_, rate)| rate.is_some()) {
            layers.sort_by(|a, b| b.1.cmp(&a.1).then(name_rank(&a.0).cmp(&name_rank(&b.0))));
        } else {
            layers.sort_by_key(|(rid, _)| name_rank(rid));
        }
        layers.into_iter().map(|(rid, _)| rid).collect()
    }

    /// The layer a subscriber with `choice` should receive.
    pub fn pick(&self, choice: LayerChoice) -> Option<Rid> {
        Self::pick_in(&self.ranked(), choice)
    }

    /// The highest layer whose measured rate fits in `estimate_bps` with
    /// 15 % headroom; the lowest when none fits; the highest when rates are
    /// not measured yet.
    pub fn pick_for_bandwidth(&self, estimate_bps: u64) -> Option<Rid> {
        let ranked = self.ranked();
        let rate = |rid: &Rid| {
            self.known
                .iter()
                .find(|(r, _)| r == rid)
                .and_then(|(_, rate)| *rate)
        };
        if ranked.iter().any(|rid| rate(rid).is_none()) {
            return ranked.first().copied();
        }
        let budget = estimate_bps.saturating_mul(85) / 100;
        ranked
            .iter()
            .find(|rid| rate(rid).is_some_and(|bytes| bytes.saturating_mul(8) <= budget))
            .or(ranked.last())
            .copied()
    }

    /// [`Self::pick`] over layers already [ranked](Self::ranked).
    pub fn pick_in(ranked: &[Rid], choice: LayerChoice) -> Option<Rid> {
        let last = ranked.len().checked_sub(1)?;
        let index = match choice {
            LayerChoice::Auto | LayerChoice::High => 0,
            LayerChoice::Medium => last / 2 + last % 2,
            LayerChoice::Low => last,
        };
        ranked.get(index.min(last)).copied()
    }
}

/// Rank of well-known RID names (0 = highest); unknown names come after
/// them in the order first seen. `h` is "half" beside Chrome's `f`/`q` and
/// "high" beside `m`/`l`: ranking it between the two is right either way.
fn name_rank(rid: &Rid) -> usize {
    match &**rid {
        "f" | "hi" | "high" | "2" => 0,
        "h" => 1,
        "m" | "mid" | "medium" | "1" => 2,
        "q" | "l" | "lo" | "low" | "0" => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(names: &[&str]) -> Layers {
        let mut layers = Layers::default();
        for name in names {
            layers.observe(Rid::from(*name));
        }
        layers
    }

    #[test]
    fn well_known_names_rank_before_any_measurement() {
        assert_eq!(
            layers(&["q", "h", "f"]).ranked(),
            vec![Rid::from("f"), Rid::from("h"), Rid::from("q")]
        );
        assert_eq!(
            layers(&["l", "m", "hi"]).ranked(),
            vec![Rid::from("hi"), Rid::from("m"), Rid::from("l")]
        );
    }

    #[test]
    fn measured_rates_override_names() {
        let mut layers = layers(&["a", "b", "c"]);
        layers.measured(Rid::from("a"), 10_000);
        layers.measured(Rid::from("b"), 300_000);
        layers.measured(Rid::from("c"), 90_000);
        assert_eq!(layers.pick(LayerChoice::High), Some(Rid::from("b")));
        assert_eq!(layers.pick(LayerChoice::Medium), Some(Rid::from("c")));
        assert_eq!(layers.pick(LayerChoice::Low), Some(Rid::from("a")));
    }

    #[test]
    fn auto_takes_the_highest_layer_the_estimate_carries() {
        let mut layers = layers(&["q", "h", "f"]);
        assert_eq!(
            layers.pick_for_bandwidth(100_000),
            Some(Rid::from("f")),
            "unmeasured: highest"
        );
        layers.measured(Rid::from("q"), 20_000); // 160 kbit/s
        layers.measured(Rid::from("h"), 60_000); // 480 kbit/s
        layers.measured(Rid::from("f"), 200_000); // 1.6 Mbit/s
        assert_eq!(layers.pick_for_bandwidth(3_000_000), Some(Rid::from("f")));
        assert_eq!(layers.pick_for_bandwidth(1_000_000), Some(Rid::from("h")));
        assert_eq!(
            layers.pick_for_bandwidth(500_000),
            Some(Rid::from("q")),
            "480 kbit/s needs headroom"
        );
        assert_eq!(
            layers.pick_for_bandwidth(50_000),
            Some(Rid::from("q")),
            "nothing fits: the lowest"
        );
    }

    #[test]
    fn choices_map_onto_two_layers_and_none() {
        let two = layers(&["q", "f"]);
        assert_eq!(two.pick(LayerChoice::Auto), Some(Rid::from("f")));
        assert_eq!(two.pick(LayerChoice::Medium), Some(Rid::from("q")));
        assert_eq!(two.pick(LayerChoice::Low), Some(Rid::from("q")));
        assert_eq!(Layers::default().pick(LayerChoice::High), None);
        assert_eq!("low".parse::<LayerChoice>(), Ok(LayerChoice::Low));
        assert!("tiny".parse::<LayerChoice>().unwrap_err().contains("tiny"));
    }
}

//! Gifts as arithmetic and rules: what a gift costs, how its coins split,
//! whether a retried send is the same send, and the room's running views of
//! gifting (combos, the leaderboard, goals). No storage and no clock: the
//! store applies a [`Charge`] in one transaction, the room actor feeds the
//! trackers the gifts it committed, with the time as an argument.
//!
//! Amounts are integer coins (`u64`). Every product and sum is checked: a
//! request whose total would overflow is refused, never wrapped.

use std::collections::HashMap;

/// Most of one gift a single send may carry (Bilibili caps a batch too).
pub const MAX_GIFT_COUNT: u32 = 9_999;
/// The largest amount of coins anything may hold or move: stores keep
/// signed 64-bit integers (SQLite `INTEGER`, CQL `bigint`).
pub const MAX_AMOUNT: u64 = i64::MAX as u64;
/// The creator's share when nothing else is configured: 70 %.
pub const DEFAULT_CREATOR_SHARE_BPS: u32 = 7_000;
/// Same sender, same gift, within this long: the same combo.
pub const DEFAULT_COMBO_WINDOW_MS: u64 = 3_000;

/// One gift a viewer can send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gift {
    pub id: String,
    pub name: String,
    /// Coins for one.
    pub price: u64,
    /// How big its on-screen effect is, 1 (small) to 5 (full screen).
    pub tier: u8,
    /// Whether repeated sends build a combo.
    pub combo: bool,
}

impl Gift {
    /// What a catalog entry must be, wherever it comes from (configuration
    /// or the admin API): the reason when it is not.
    pub fn validate(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(format!(
                "gift id `{}` must be 1 to 64 characters of a-z, 0-9 or `-`",
                self.id
            ));
        }
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(format!(
                "gift `{}` needs a name of 1 to 64 characters",
                self.id
            ));
        }
        if !(1..=5).contains(&self.tier) {
            return Err(format!("gift `{}`: tier must be 1 to 5", self.id));
        }
        if self.price > MAX_AMOUNT {
            return Err(format!("gift `{}` is priced too high", self.id));
        }
        Ok(())
    }
}

/// The gifts on offer, by id.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    gifts: Vec<Gift>,
}

impl Catalog {
    /// A catalog from a list; a later gift with an id already present
    /// replaces the earlier one (configuration overrides the defaults).
    pub fn new(gifts: impl IntoIterator<Item = Gift>) -> Self {
        let mut catalog = Self::default();
        for gift in gifts {
            catalog.upsert(gift);
        }
        catalog
    }

    /// What ships, so a new deployment can gift at once.
    pub fn default_gifts() -> Self {
        let gift = |id: &str, name: &str, price, tier, combo| Gift {
            id: id.into(),
            name: name.into(),
            price,
            tier,
            combo,
        };
        Self::new([
            gift("glow-stick", "Glow Stick", 1, 1, true),
            gift("heart", "Heart", 10, 1, true),
            gift("flower", "Flower", 50, 2, true),
            gift("cake", "Cake", 200, 3, false),
            gift("rocket", "Rocket", 1_000, 4, false),
            gift("castle", "Castle", 5_000, 5, false),
        ])
    }

    pub fn upsert(&mut self, gift: Gift) {
        match self.gifts.iter_mut().find(|g| g.id == gift.id) {
            Some(existing) => *existing = gift,
            None => self.gifts.push(gift),
        }
    }

    /// Takes a gift off the catalog; `false` if it was not there. Gifts
    /// already sent keep their rows: only new sends are refused.
    pub fn remove(&mut self, id: &str) -> bool {
        let before = self.gifts.len();
        self.gifts.retain(|g| g.id != id);
        self.gifts.len() != before
    }

    pub fn get(&self, id: &str) -> Option<&Gift> {
        self.gifts.iter().find(|g| g.id == id)
    }

    /// In the order they were added.
    pub fn gifts(&self) -> &[Gift] {
        &self.gifts
    }
}

/// A viewer's request to send a gift, as it arrives (WS frame or HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftRequest {
    pub gift_id: String,
    /// Signed so that a negative count is refused by name, not by a parse
    /// error somewhere upstream.
    pub count: i64,
    /// The receiving creator's user id.
    pub to: String,
    /// The client's idempotency key: same key, same send.
    pub idempotency_key: String,
}

/// Why a gift request is refused before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidGift {
    CountNotPositive,
    CountTooLarge {
        max: u32,
    },
    UnknownGift,
    /// Sending to oneself is refused: it would move coins in a circle and
    /// lift the sender up the leaderboard for free.
    ToSelf,
    MissingRecipient,
    MissingIdempotencyKey,
    /// Longer than 255 bytes or not printable ASCII.
    BadIdempotencyKey,
    /// `price × count` exceeds [`MAX_AMOUNT`].
    Overflow,
}

impl InvalidGift {
    /// The stable error code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::CountNotPositive | Self::CountTooLarge { .. } => "invalid_count",
            Self::UnknownGift => "unknown_gift",
            Self::ToSelf => "gift_to_self",
            Self::MissingRecipient => "invalid_recipient",
            Self::MissingIdempotencyKey | Self::BadIdempotencyKey => "invalid_idempotency_key",
            Self::Overflow => "amount_overflow",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::CountNotPositive => "count must be at least 1".into(),
            Self::CountTooLarge { max } => format!("count must be at most {max}"),
            Self::UnknownGift => "no such gift in the catalog".into(),
            Self::ToSelf => "you cannot send a gift to yourself".into(),
            Self::MissingRecipient => "`to` must name the receiving creator".into(),
            Self::MissingIdempotencyKey => "an idempotency key is required".into(),
            Self::BadIdempotencyKey => {
                "the idempotency key must be 1 to 255 printable ASCII characters".into()
            }
            Self::Overflow => "the total does not fit in a coin amount".into(),
        }
    }
}

/// The split of one gift's coins. `creator + platform == total` always.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub total: u64,
    pub creator: u64,
    pub platform: u64,
}

impl Split {
    /// `share_bps` of the total to the creator (basis points, 0–10 000),
    /// rounded down; the platform gets the rest, so no coin is created or
    /// lost by rounding.
    pub fn of(total: u64, share_bps: u32) -> Self {
        let share = u128::from(share_bps.min(10_000));
        let creator = (u128::from(total) * share / 10_000) as u64;
        Self {
            total,
            creator,
            platform: total - creator,
        }
    }
}

/// Who gets which share of a gift: a default, a share per creator tier
/// (creators are assigned to tiers), and a share per viewer region that
/// replaces either (a market where the platform's costs differ). All in
/// basis points of the total.
#[derive(Debug, Clone, Default)]
pub struct SplitPolicy {
    pub default_bps: u32,
    /// Tier name -> share.
    pub tier_bps: HashMap<String, u32>,
    /// Creator id -> tier name.
    pub creator_tier: HashMap<String, String>,
    /// Viewer region (the token's `region` claim) -> share.
    pub region_bps: HashMap<String, u32>,
}

impl SplitPolicy {
    pub fn flat(default_bps: u32) -> Self {
        Self {
            default_bps,
            ..Self::default()
        }
    }

    /// The creator's share for a gift from a viewer in `region` to
    /// `creator`: the region's share if one is set, else the creator's
    /// tier's, else the default.
    pub fn creator_share_bps(&self, creator: &str, region: &str) -> u32 {
        if let Some(bps) = self.region_bps.get(region) {
            return *bps;
        }
        self.creator_tier
            .get(creator)
            .and_then(|tier| self.tier_bps.get(tier))
            .copied()
            .unwrap_or(self.default_bps)
    }
}

/// A validated send, ready for the store: who pays how much to whom, and
/// the fingerprint that tells a retry from a different request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub room_id: String,
    pub from: String,
    pub to: String,
    pub gift_id: String,
    pub count: u32,
    pub unit_price: u64,
    pub split: Split,
    pub idempotency_key: String,
    /// Everything that must match for a reused key to be "the same
    /// request" (Stripe's rule): room, sender, recipient, gift, count.
    pub fingerprint: String,
}

/// Checks a request against the catalog and prices it.
pub fn charge(
    catalog: &Catalog,
    room_id: &str,
    from: &str,
    request: &GiftRequest,
    creator_share_bps: u32,
) -> Result<Charge, InvalidGift> {
    let key = request.idempotency_key.as_str();
    if key.is_empty() {
        return Err(InvalidGift::MissingIdempotencyKey);
    }
    if key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidGift::BadIdempotencyKey);
    }
    if request.count < 1 {
        return Err(InvalidGift::CountNotPositive);
    }
    let count = u32::try_from(request.count)
        .ok()
        .filter(|count| *count <= MAX_GIFT_COUNT)
        .ok_or(InvalidGift::CountTooLarge {
            max: MAX_GIFT_COUNT,
        })?;
    if request.to.trim().is_empty() {
        return Err(InvalidGift::MissingRecipient);
    }
    if request.to == from {
        return Err(InvalidGift::ToSelf);
    }
    let gift = catalog
        .get(&request.gift_id)
        .ok_or(InvalidGift::UnknownGift)?;
    let total = gift
        .price
        .checked_mul(u64::from(count))
        .filter(|total| *total <= MAX_AMOUNT)
        .ok_or(InvalidGift::Overflow)?;
    Ok(Charge {
        room_id: room_id.to_owned(),
        from: from.to_owned(),
        to: request.to.clone(),
        gift_id: gift.id.clone(),
        count,
        unit_price: gift.price,
        split: Split::of(total, creator_share_bps),
        idempotency_key: key.to_owned(),
        fingerprint: format!(
            "{room_id}\u{1f}{from}\u{1f}{}\u{1f}{}\u{1f}{count}",
            request.to, gift.id
        ),
    })
}

/// A combo as viewers see it: the id of its first send and the running
/// count of gifts in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combo {
    pub combo_id: String,
    pub total: u64,
}

/// Groups repeated sends of one gift by one sender into combos: a send
/// within `window_ms` of the previous one continues it, a later one starts
/// a new combo (named after the gift id that started it).
#[derive(Debug)]
pub struct ComboTracker {
    window_ms: u64,
    open: HashMap<(String, String), (Combo, u64)>,
}

impl ComboTracker {
    pub fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            open: HashMap::new(),
        }
    }

    /// Records a committed send; returns the combo it belongs to.
    pub fn record(
        &mut self,
        sender: &str,
        gift_id: &str,
        count: u32,
        send_id: &str,
        now_ms: u64,
    ) -> Combo {
        let key = (sender.to_owned(), gift_id.to_owned());
        let window = self.window_ms;
        let entry = self
            .open
            .entry(key)
            .and_modify(|(combo, last_ms)| {
                if now_ms.saturating_sub(*last_ms) > window {
                    *combo = Combo {
                        combo_id: send_id.to_owned(),
                        total: 0,
                    };
                }
            })
            .or_insert_with(|| {
                (
                    Combo {
                        combo_id: send_id.to_owned(),
                        total: 0,
                    },
                    now_ms,
                )
            });
        entry.0.total += u64::from(count);
        entry.1 = now_ms;
        entry.0.clone()
    }

    /// Forgets combos idle for longer than the window (call now and then:
    /// a room with many senders should not keep them all).
    pub fn expire(&mut self, now_ms: u64) {
        let window = self.window_ms;
        self.open
            .retain(|_, (_, last_ms)| now_ms.saturating_sub(*last_ms) <= window);
    }
}

/// Coins given per sender during one stream, highest first.
#[derive(Debug, Default, Clone)]
pub struct Leaderboard {
    coins: HashMap<String, u64>,
}

impl Leaderboard {
    pub fn add(&mut self, sender: &str, coins: u64) {
        let entry = self.coins.entry(sender.to_owned()).or_default();
        *entry = entry.saturating_add(coins);
    }

    /// The top `n` as (sender, coins), ties broken by sender id so the order
    /// is the same on every node and after every rebuild.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self
            .coins
            .iter()
            .map(|(sender, coins)| (sender.clone(), *coins))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

/// A room's gift goal: `target` coins within `window_ms`. Reports the
/// moment it is first reached in a window, once.
#[derive(Debug, Clone)]
pub struct Goal {
    pub target: u64,
    pub window_ms: u64,
    started_ms: u64,
    coins: u64,
    reached: bool,
}

impl Goal {
    pub fn new(target: u64, window_ms: u64, now_ms: u64) -> Self {
        Self {
            target,
            window_ms,
            started_ms: now_ms,
            coins: 0,
            reached: false,
        }
    }

    /// A goal picked up again after a restart: its window restarts at
    /// `now_ms` holding the coins given in the last window (from the gift
    /// rows), already reached if they meet the target, so a restart never
    /// announces a goal twice.
    pub fn resume(target: u64, window_ms: u64, now_ms: u64, recent_coins: u64) -> Self {
        Self {
            target,
            window_ms,
            started_ms: now_ms,
            coins: recent_coins,
            reached: recent_coins >= target,
        }
    }

    /// Adds committed coins; `Some(total)` the first time the total reaches
    /// the target in the current window. A window that ends starts the next
    /// one from zero.
    pub fn add(&mut self, coins: u64, now_ms: u64) -> Option<u64> {
        if now_ms.saturating_sub(self.started_ms) >= self.window_ms {
            self.started_ms = now_ms;
            self.coins = 0;
            self.reached = false;
        }
        self.coins = self.coins.saturating_add(coins);
        if !self.reached && self.coins >= self.target {
            self.reached = true;
            return Some(self.coins);
        }
        None
    }

    pub fn progress(&self) -> u64 {
        self.coins
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(gift_id: &str, count: i64, to: &str) -> GiftRequest {
        GiftRequest {
            gift_id: gift_id.into(),
            count,
            to: to.into(),
            idempotency_key: "key-1".into(),
        }
    }

    fn try_charge(gift_id: &str, count: i64, to: &str) -> Result<Charge, InvalidGift> {
        charge(
            &Catalog::default_gifts(),
            "r1",
            "alice",
            &request(gift_id, count, to),
            DEFAULT_CREATOR_SHARE_BPS,
        )
    }

    #[test]
    fn a_valid_request_is_priced_and_split_without_losing_a_coin() {
        let charge = try_charge("flower", 3, "streamer").unwrap();
        assert_eq!(charge.count, 3);
        assert_eq!(charge.unit_price, 50);
        assert_eq!(
            charge.split,
            Split {
                total: 150,
                creator: 105,
                platform: 45
            }
        );
        // Rounding goes to the platform, never creates or loses a coin.
        let odd = Split::of(1, 7_000);
        assert_eq!((odd.creator, odd.platform), (0, 1));
        let odd = Split::of(333, 7_000);
        assert_eq!(odd.creator + odd.platform, 333);
        assert_eq!(Split::of(u64::MAX, 10_000).creator, u64::MAX);
    }

    #[test]
    fn bad_requests_are_refused_by_name() {
        assert_eq!(
            try_charge("heart", 0, "s"),
            Err(InvalidGift::CountNotPositive)
        );
        assert_eq!(
            try_charge("heart", -5, "s"),
            Err(InvalidGift::CountNotPositive)
        );
        assert_eq!(
            try_charge("heart", 10_000, "s"),
            Err(InvalidGift::CountTooLarge {
                max: MAX_GIFT_COUNT
            })
        );
        assert_eq!(
            try_charge("heart", i64::MAX, "s"),
            Err(InvalidGift::CountTooLarge {
                max: MAX_GIFT_COUNT
            })
        );
        assert_eq!(try_charge("unicorn", 1, "s"), Err(InvalidGift::UnknownGift));
        assert_eq!(try_charge("heart", 1, "alice"), Err(InvalidGift::ToSelf));
        assert_eq!(
            try_charge("heart", 1, " "),
            Err(InvalidGift::MissingRecipient)
        );
        let mut no_key = request("heart", 1, "s");
        no_key.idempotency_key.clear();
        let catalog = Catalog::default_gifts();
        assert_eq!(
            charge(&catalog, "r1", "alice", &no_key, 7_000),
            Err(InvalidGift::MissingIdempotencyKey)
        );
        no_key.idempotency_key = "a key with spaces".into();
        assert_eq!(
            charge(&catalog, "r1", "alice", &no_key, 7_000),
            Err(InvalidGift::BadIdempotencyKey)
        );
    }

    #[test]
    fn a_total_that_would_overflow_is_refused() {
        let catalog = Catalog::new([Gift {
            id: "moon".into(),
            name: "Moon".into(),
            price: u64::MAX / 2,
            tier: 5,
            combo: false,
        }]);
        let result = charge(&catalog, "r1", "alice", &request("moon", 3, "s"), 7_000);
        assert_eq!(result, Err(InvalidGift::Overflow), "wraps u64");
        let result = charge(&catalog, "r1", "alice", &request("moon", 2, "s"), 7_000);
        assert_eq!(result, Err(InvalidGift::Overflow), "fits u64, not i64");
        assert_eq!(InvalidGift::Overflow.code(), "amount_overflow");
    }

    #[test]
    fn the_fingerprint_tells_a_retry_from_a_different_request() {
        let a = try_charge("heart", 2, "streamer").unwrap();
        let retry = try_charge("heart", 2, "streamer").unwrap();
        assert_eq!(a.fingerprint, retry.fingerprint);
        for other in [
            try_charge("heart", 3, "streamer").unwrap(),
            try_charge("flower", 2, "streamer").unwrap(),
            try_charge("heart", 2, "someone-else").unwrap(),
        ] {
            assert_ne!(a.fingerprint, other.fingerprint);
        }
    }

    #[test]
    fn the_split_follows_region_then_tier_then_default() {
        let mut policy = SplitPolicy::flat(7_000);
        policy.tier_bps.insert("partner".into(), 8_000);
        policy.creator_tier.insert("star".into(), "partner".into());
        policy.region_bps.insert("JP".into(), 6_500);
        assert_eq!(policy.creator_share_bps("someone", ""), 7_000);
        assert_eq!(policy.creator_share_bps("star", ""), 8_000);
        assert_eq!(policy.creator_share_bps("star", "JP"), 6_500);
        assert_eq!(policy.creator_share_bps("someone", "JP"), 6_500);
        // A creator in an unknown tier gets the default.
        policy.creator_tier.insert("odd".into(), "missing".into());
        assert_eq!(policy.creator_share_bps("odd", "FR"), 7_000);
    }

    #[test]
    fn configuration_overrides_a_default_gift() {
        let mut catalog = Catalog::default_gifts();
        let before = catalog.gifts().len();
        catalog.upsert(Gift {
            id: "heart".into(),
            name: "Big Heart".into(),
            price: 12,
            tier: 2,
            combo: true,
        });
        assert_eq!(catalog.gifts().len(), before);
        assert_eq!(catalog.get("heart").unwrap().price, 12);
        assert!(catalog.remove("heart"));
        assert!(!catalog.remove("heart"));
        assert!(catalog.get("heart").is_none());
        let bad = |id: &str, name: &str, tier: u8, price: u64| {
            Gift {
                id: id.into(),
                name: name.into(),
                price,
                tier,
                combo: false,
            }
            .validate()
        };
        assert!(bad("ok-1", "Ok", 1, 1).is_ok());
        assert!(bad("Bad Id", "x", 1, 1).unwrap_err().contains("a-z"));
        assert!(bad("x", " ", 1, 1).unwrap_err().contains("name"));
        assert!(bad("x", "X", 6, 1).unwrap_err().contains("tier"));
        assert!(bad("x", "X", 1, u64::MAX).unwrap_err().contains("too high"));
    }

    #[test]
    fn combos_group_sends_within_the_window_per_sender_and_gift() {
        let mut combos = ComboTracker::new(3_000);
        let first = combos.record("alice", "heart", 1, "g1", 10_000);
        assert_eq!(
            first,
            Combo {
                combo_id: "g1".into(),
                total: 1
            }
        );
        let second = combos.record("alice", "heart", 5, "g2", 12_000);
        assert_eq!(
            second,
            Combo {
                combo_id: "g1".into(),
                total: 6
            }
        );
        // Another sender, another gift: their own combos.
        assert_eq!(
            combos.record("bob", "heart", 1, "g3", 12_100).combo_id,
            "g3"
        );
        assert_eq!(
            combos.record("alice", "flower", 1, "g4", 12_200).combo_id,
            "g4"
        );
        // The window counts from the last send: 14.9 s is within 3 s of 12 s.
        assert_eq!(combos.record("alice", "heart", 1, "g5", 14_900).total, 7);
        // A pause longer than the window starts a new combo.
        let fresh = combos.record("alice", "heart", 2, "g6", 18_000);
        assert_eq!(
            fresh,
            Combo {
                combo_id: "g6".into(),
                total: 2
            }
        );
        combos.expire(30_000);
        assert_eq!(
            combos.record("alice", "heart", 1, "g7", 30_001).combo_id,
            "g7"
        );
    }

    #[test]
    fn the_leaderboard_orders_by_coins_then_by_id() {
        let mut board = Leaderboard::default();
        board.add("carol", 50);
        board.add("alice", 100);
        board.add("bob", 100);
        board.add("carol", 60);
        assert_eq!(
            board.top(2),
            vec![("carol".to_owned(), 110), ("alice".to_owned(), 100)]
        );
        assert_eq!(board.top(10).len(), 3);
    }

    #[test]
    fn a_goal_is_reached_once_per_window() {
        let mut goal = Goal::new(1_000, 60_000, 0);
        assert_eq!(goal.add(600, 1_000), None);
        assert_eq!(goal.add(500, 2_000), Some(1_100));
        assert_eq!(goal.add(500, 3_000), None, "already reached in this window");
        assert_eq!(goal.progress(), 1_600);
        // The next window starts from zero.
        assert_eq!(goal.add(100, 61_000), None);
        assert_eq!(goal.progress(), 100);
        assert_eq!(goal.add(900, 62_000), Some(1_000));
        let resumed = Goal::resume(1_000, 60_000, 70_000, 1_200);
        assert_eq!(resumed.progress(), 1_200);
        let mut resumed = resumed;
        assert_eq!(resumed.add(10, 71_000), None, "reached before the restart");
    }
}

//! Reconciliation: does the money add up? A consistent snapshot of wallets,
//! ledger lines, gifts, top-ups, settlements and the outbox, and a pure
//! check over it that lists every difference with its count and amount.
//!
//! What must hold (TigerBeetle-style invariants, checked from the outside):
//!
//! 1. Every wallet's balance equals the sum of its ledger lines, and none
//!    is negative.
//! 2. Every gift has exactly its three ledger lines (wallet −total,
//!    earnings +creator, commission +platform), and creator + platform =
//!    total; every top-up its two (payments −amount, wallet +amount).
//! 3. No ledger line without its gift or top-up; every transfer sums to 0.
//! 4. Every gift in the period has exactly one settlement with its amounts;
//!    no settlement without a gift. A gift whose `gift.sent` still waits in
//!    the outbox is reported as such (billing cannot have seen it yet).
//!
//! The check is pure; [`load_embedded`] reads the embedded store read-only
//! in one read transaction, so it runs beside a live engine (WAL) as well
//! as on a stopped one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};

use crate::{GiftRecord, LedgerLine, Result, Settlement, StoreError, account};

/// Everything reconciliation reads, from one snapshot.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub wallets: Vec<(String, i64)>,
    pub ledger: Vec<LedgerLine>,
    /// Gifts created in the period.
    pub gifts: Vec<GiftRecord>,
    /// Top-ups in the period: (topup_id, user, amount).
    pub topups: Vec<(String, String, i64)>,
    /// Settlements of gifts created in the period.
    pub settlements: Vec<Settlement>,
    /// Ids of events still waiting in the outbox.
    pub outbox_ids: HashSet<String>,
    /// `[since_ms, until_ms)`: the gifts, top-ups and settlements loaded.
    pub period: (u64, u64),
}

/// One kind of difference, with how many and how many coins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub what: &'static str,
    pub count: u64,
    pub coins: i128,
    /// A few ids to start looking from.
    pub examples: Vec<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (coins {})", self.what, self.count, self.coins)?;
        if !self.examples.is_empty() {
            write!(f, ", e.g. {}", self.examples.join(", "))?;
        }
        Ok(())
    }
}

/// The result of a check.
#[derive(Debug, Default, Clone)]
pub struct Reconciliation {
    pub gifts: u64,
    pub gift_coins: i128,
    pub wallets: u64,
    pub settlements: u64,
    pub differences: Vec<Difference>,
}

impl Reconciliation {
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

#[derive(Default)]
struct Tally {
    counts: BTreeMap<&'static str, (u64, i128, Vec<String>)>,
}

impl Tally {
    fn add(&mut self, what: &'static str, coins: i128, id: &str) {
        let entry = self.counts.entry(what).or_default();
        entry.0 += 1;
        entry.1 += coins;
        if entry.2.len() < 3 {
            entry.2.push(id.to_owned());
        }
    }

    fn into_differences(self) -> Vec<Difference> {
        self.counts
            .into_iter()
            .map(|(what, (count, coins, examples))| Difference {
                what,
                count,
                coins,
                examples,
            })
            .collect()
    }
}

/// Checks the invariants above over one snapshot.
pub fn reconcile(snapshot: &Snapshot) -> Reconciliation {
    let mut tally = Tally::default();
    let mut lines: HashMap<&str, Vec<&LedgerLine>> = HashMap::new();
    let mut wallet_sums: HashMap<&str, i128> = HashMap::new();
    for line in &snapshot.ledger {
        lines
            .entry(line.transfer_id.as_str())
            .or_default()
            .push(line);
        if let Some(user) = line.account.strip_prefix("wallet:") {
            *wallet_sums.entry(user).or_default() += i128::from(line.amount);
        }
    }
    for (user, balance) in &snapshot.wallets {
        let sum = wallet_sums.remove(user.as_str()).unwrap_or(0);
        if i128::from(*balance) != sum {
            tally.add(
                "wallet balance differs from its ledger",
                i128::from(*balance) - sum,
                user,
            );
        }
        if *balance < 0 {
            tally.add("negative wallet balance", i128::from(*balance), user);
        }
    }
    for (user, sum) in wallet_sums {
        tally.add("ledger lines for a wallet that does not exist", sum, user);
    }

    let mut known_transfers: HashSet<&str> = HashSet::new();
    let mut gift_coins = 0i128;
    for gift in &snapshot.gifts {
        known_transfers.insert(&gift.gift_id);
        gift_coins += i128::from(gift.total);
        let total = i128::from(gift.total);
        if u128::from(gift.creator_amount) + u128::from(gift.platform_amount)
            != u128::from(gift.total)
        {
            tally.add(
                "gift split does not add up to its total",
                total,
                &gift.gift_id,
            );
        }
        let expected = [
            (account::wallet(&gift.sender), -total),
            (
                account::earnings(&gift.recipient),
                i128::from(gift.creator_amount),
            ),
            (
                account::COMMISSION.to_owned(),
                i128::from(gift.platform_amount),
            ),
        ];
        check_transfer(&mut tally, &lines, &gift.gift_id, &expected, "gift");
    }
    for (topup_id, user, amount) in &snapshot.topups {
        known_transfers.insert(topup_id);
        let amount = i128::from(*amount);
        let expected = [
            (account::PAYMENTS.to_owned(), -amount),
            (account::wallet(user), amount),
        ];
        check_transfer(&mut tally, &lines, topup_id, &expected, "top-up");
    }

    let mut settled: HashMap<&str, &Settlement> = HashMap::new();
    for settlement in &snapshot.settlements {
        settled.insert(&settlement.gift_id, settlement);
    }
    let gift_ids: HashSet<&str> = snapshot.gifts.iter().map(|g| g.gift_id.as_str()).collect();
    for gift in &snapshot.gifts {
        match settled.get(gift.gift_id.as_str()) {
            None if snapshot.outbox_ids.contains(&gift.gift_id) => tally.add(
                "gift not settled: its event waits in the outbox",
                i128::from(gift.creator_amount),
                &gift.gift_id,
            ),
            None => tally.add(
                "gift not settled by billing",
                i128::from(gift.creator_amount),
                &gift.gift_id,
            ),
            Some(s)
                if s.creator != gift.recipient
                    || s.creator_amount != gift.creator_amount
                    || s.platform_amount != gift.platform_amount =>
            {
                tally.add(
                    "settlement differs from its gift",
                    i128::from(s.creator_amount) - i128::from(gift.creator_amount),
                    &gift.gift_id,
                );
            }
            Some(_) => {}
        }
    }
    for settlement in &snapshot.settlements {
        if !gift_ids.contains(settlement.gift_id.as_str()) {
            tally.add(
                "settlement without a gift",
                i128::from(settlement.creator_amount),
                &settlement.gift_id,
            );
        }
    }
    // Lines dated in the period that belong to no gift or top-up of it (a
    // transfer's lines carry its time, so lines outside the period belong
    // to transfers that were not loaded).
    let (since, until) = snapshot.period;
    for (id, transfer) in &lines {
        let in_period = transfer
            .iter()
            .any(|l| (since..until).contains(&l.created_ms));
        if in_period && !known_transfers.contains(id) {
            let coins = transfer.iter().map(|l| i128::from(l.amount)).sum();
            tally.add("ledger lines without a gift or top-up", coins, id);
        }
    }

    Reconciliation {
        gifts: snapshot.gifts.len() as u64,
        gift_coins,
        wallets: snapshot.wallets.len() as u64,
        settlements: snapshot.settlements.len() as u64,
        differences: tally.into_differences(),
    }
}

fn check_transfer(
    tally: &mut Tally,
    lines: &HashMap<&str, Vec<&LedgerLine>>,
    transfer_id: &str,
    expected: &[(String, i128)],
    kind: &'static str,
) {
    let found = lines.get(transfer_id).map(Vec::as_slice).unwrap_or(&[]);
    let sum: i128 = found.iter().map(|l| i128::from(l.amount)).sum();
    if sum != 0 {
        tally.add("transfer does not sum to zero", sum, transfer_id);
    }
    let matches = found.len() == expected.len()
        && expected.iter().all(|(account, amount)| {
            found
                .iter()
                .any(|l| &l.account == account && i128::from(l.amount) == *amount)
        });
    if !matches {
        let what = if kind == "gift" {
            "gift without its ledger lines"
        } else {
            "top-up without its ledger lines"
        };
        let expected_total: i128 = expected.iter().map(|(_, a)| a.abs()).sum::<i128>() / 2;
        tally.add(what, expected_total, transfer_id);
    }
}

/// Reads a snapshot from the embedded store in `dir`, read-only, in one
/// read transaction. Gifts, top-ups and settlements are limited to gifts
/// created in `[since_ms, until_ms)`; wallets and the ledger are read whole
/// (a balance is the sum of all its lines).
pub fn load_embedded(dir: &Path, since_ms: u64, until_ms: u64) -> Result<Snapshot> {
    let path = dir.join(crate::DB_FILE);
    if !path.exists() {
        return Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no store at {}", path.display()),
        )));
    }
    let mut conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let tx = conn.transaction()?;
    let mut snapshot = Snapshot::default();
    let wallets = tx
        .prepare("SELECT user_id, balance FROM wallets ORDER BY user_id")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    snapshot.wallets = wallets;
    let ledger = tx
        .prepare("SELECT account, transfer_id, amount, created_ms FROM ledger")?
        .query_map([], |row| {
            Ok(LedgerLine {
                account: row.get(0)?,
                transfer_id: row.get(1)?,
                amount: row.get(2)?,
                created_ms: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    snapshot.ledger = ledger;
    let until = i64::try_from(until_ms).unwrap_or(i64::MAX);
    let gifts = tx
        .prepare(&format!(
            "SELECT {} FROM gifts WHERE created_ms >= ?1 AND created_ms < ?2",
            crate::embedded::GIFT_COLUMNS
        ))?
        .query_map(params![since_ms, until], |row| {
            crate::embedded::gift_row(row).map(|(gift, _)| gift)
        })?
        .collect::<rusqlite::Result<_>>()?;
    snapshot.gifts = gifts;
    let topups = tx
        .prepare(
            "SELECT topup_id, user_id, amount FROM topups WHERE created_ms >= ?1 AND created_ms < ?2",
        )?
        .query_map(params![since_ms, until], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    snapshot.topups = topups;
    let settlements = tx
        .prepare(
            "SELECT gift_id, creator, room_id, creator_amount, platform_amount, gift_ms, settled_ms
             FROM settlements WHERE gift_ms >= ?1 AND gift_ms < ?2",
        )?
        .query_map(params![since_ms, until], |row| {
            Ok(Settlement {
                gift_id: row.get(0)?,
                creator: row.get(1)?,
                room_id: row.get(2)?,
                creator_amount: row.get::<_, i64>(3)?.max(0) as u64,
                platform_amount: row.get::<_, i64>(4)?.max(0) as u64,
                gift_ms: row.get(5)?,
                settled_ms: row.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    snapshot.settlements = settlements;
    let outbox = tx
        .prepare("SELECT id FROM outbox")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    snapshot.outbox_ids = outbox;
    snapshot.period = (since_ms, until_ms);
    Ok(snapshot)
}

//! Wallets, idempotency keys, gifts, top-ups and the ledger. Every write
//! here runs on the writer's savepoint: all of it commits, or none of it.
//!
//! The order inside [`send_gift`] is the order the Scylla backend will
//! need (see the crate docs): claim the key, debit conditionally, then
//! write the immutable rows. Here one transaction makes the order a detail;
//! there it is what makes a crash between steps recoverable.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::outbox;
use super::writer::Written;
use crate::{
    CatalogEntry, Earnings, GiftOutcome, GiftReceipt, GiftRecord, LedgerLine, OutboxEvent, Result,
    Settlement, StoreError, TopUp, TopUpOutcome, account,
};

/// Top-up keys belong to the admin API, not to a user.
const TOPUP_KEY_OWNER: &str = "admin:topup";

pub(crate) fn send_gift(
    conn: &Connection,
    gift: &GiftRecord,
    event: &OutboxEvent,
) -> Result<Written<GiftOutcome>> {
    let total = amount(gift.total)?;
    if let Some((fingerprint, gift_id)) = claimed(conn, &gift.sender, &gift.idempotency_key)? {
        if fingerprint != gift.fingerprint {
            return Ok(Written::silent(GiftOutcome::KeyConflict));
        }
        let first = receipt(conn, &gift_id)?.ok_or_else(|| {
            StoreError::Corrupt(format!("idempotency key points at missing gift {gift_id}"))
        })?;
        return Ok(Written::silent(GiftOutcome::Replayed(first)));
    }
    let debited = conn
        .prepare_cached(
            "UPDATE wallets SET balance = balance - ?2, updated_ms = ?3
             WHERE user_id = ?1 AND balance >= ?2
             RETURNING balance",
        )?
        .query_row(params![gift.sender, total, gift.created_ms], |row| {
            row.get::<_, i64>(0)
        })
        .optional()?;
    let Some(balance_after) = debited else {
        let balance = balance(conn, &gift.sender)?;
        return Ok(Written::silent(GiftOutcome::InsufficientFunds { balance }));
    };
    claim(
        conn,
        &gift.sender,
        &gift.idempotency_key,
        &gift.fingerprint,
        &gift.gift_id,
        gift.created_ms,
    )?;
    conn.prepare_cached(
        "INSERT INTO gifts (room_id, created_ms, gift_id, sender, recipient, gift, count,
                            unit_price, total, creator_amount, platform_amount,
                            idempotency_key, fingerprint, balance_after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        gift.room_id,
        gift.created_ms,
        gift.gift_id,
        gift.sender,
        gift.recipient,
        gift.gift,
        gift.count,
        amount(gift.unit_price)?,
        total,
        amount(gift.creator_amount)?,
        amount(gift.platform_amount)?,
        gift.idempotency_key,
        gift.fingerprint,
        balance_after,
    ])?;
    let lines = [
        (account::wallet(&gift.sender), -total),
        (
            account::earnings(&gift.recipient),
            amount(gift.creator_amount)?,
        ),
        (
            account::COMMISSION.to_owned(),
            amount(gift.platform_amount)?,
        ),
    ];
    for (account, delta) in lines {
        ledger_line(conn, &account, gift.created_ms, &gift.gift_id, delta)?;
    }
    outbox::insert(conn, event)?;
    Ok(Written::announced(GiftOutcome::Sent(GiftReceipt {
        gift: gift.clone(),
        balance_after: balance_after as u64,
    })))
}

pub(crate) fn top_up(
    conn: &Connection,
    topup: &TopUp,
    event: &OutboxEvent,
) -> Result<Written<TopUpOutcome>> {
    let credit = amount(topup.amount)?;
    let fingerprint = format!("{}\u{1f}{}", topup.user_id, topup.amount);
    if let Some((claimed_fingerprint, topup_id)) =
        claimed(conn, TOPUP_KEY_OWNER, &topup.idempotency_key)?
    {
        if claimed_fingerprint != fingerprint {
            return Ok(Written::silent(TopUpOutcome::KeyConflict));
        }
        let balance: i64 = conn
            .prepare_cached("SELECT balance_after FROM topups WHERE topup_id = ?1")?
            .query_row([&topup_id], |row| row.get(0))?;
        return Ok(Written::silent(TopUpOutcome::Replayed {
            balance: balance as u64,
        }));
    }
    let current = amount(balance(conn, &topup.user_id)?)?;
    let Some(balance_after) = current.checked_add(credit) else {
        return Ok(Written::silent(TopUpOutcome::Overflow));
    };
    conn.prepare_cached(
        "INSERT INTO wallets (user_id, balance, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id) DO UPDATE SET balance = ?2, updated_ms = ?3",
    )?
    .execute(params![topup.user_id, balance_after, topup.created_ms])?;
    claim(
        conn,
        TOPUP_KEY_OWNER,
        &topup.idempotency_key,
        &fingerprint,
        &topup.topup_id,
        topup.created_ms,
    )?;
    conn.prepare_cached(
        "INSERT INTO topups (topup_id, user_id, amount, balance_after, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        topup.topup_id,
        topup.user_id,
        credit,
        balance_after,
        topup.created_ms
    ])?;
    ledger_line(
        conn,
        account::PAYMENTS,
        topup.created_ms,
        &topup.topup_id,
        -credit,
    )?;
    ledger_line(
        conn,
        &account::wallet(&topup.user_id),
        topup.created_ms,
        &topup.topup_id,
        credit,
    )?;
    outbox::insert(conn, event)?;
    Ok(Written::announced(TopUpOutcome::Credited {
        balance: balance_after as u64,
    }))
}

pub(crate) fn balance(conn: &Connection, user_id: &str) -> Result<u64> {
    let balance: Option<i64> = conn
        .prepare_cached("SELECT balance FROM wallets WHERE user_id = ?1")?
        .query_row([user_id], |row| row.get(0))
        .optional()?;
    Ok(balance.unwrap_or(0).max(0) as u64)
}

pub(crate) fn room_gifts(
    conn: &Connection,
    room_id: &str,
    since_ms: u64,
) -> Result<Vec<GiftRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {GIFT_COLUMNS} FROM gifts WHERE room_id = ?1 AND created_ms >= ?2
         ORDER BY created_ms, gift_id"
    ))?;
    let gifts = stmt.query_map(params![room_id, since_ms], |row| {
        gift_row(row).map(|(gift, _)| gift)
    })?;
    Ok(gifts.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn ledger(conn: &Connection, account: &str) -> Result<Vec<LedgerLine>> {
    let mut stmt = conn.prepare_cached(
        "SELECT account, transfer_id, amount, created_ms FROM ledger
         WHERE account = ?1 ORDER BY created_ms, transfer_id",
    )?;
    let lines = stmt.query_map([account], |row| {
        Ok(LedgerLine {
            account: row.get(0)?,
            transfer_id: row.get(1)?,
            amount: row.get(2)?,
            created_ms: row.get(3)?,
        })
    })?;
    Ok(lines.collect::<rusqlite::Result<_>>()?)
}

pub(crate) const GIFT_COLUMNS: &str =
    "gift_id, room_id, sender, recipient, gift, count, unit_price, total,
    creator_amount, platform_amount, idempotency_key, fingerprint, created_ms, balance_after";

pub(crate) fn gift_row(row: &Row<'_>) -> rusqlite::Result<(GiftRecord, u64)> {
    let unsigned = |index: usize| row.get::<_, i64>(index).map(|v| v.max(0) as u64);
    Ok((
        GiftRecord {
            gift_id: row.get(0)?,
            room_id: row.get(1)?,
            sender: row.get(2)?,
            recipient: row.get(3)?,
            gift: row.get(4)?,
            count: row.get(5)?,
            unit_price: unsigned(6)?,
            total: unsigned(7)?,
            creator_amount: unsigned(8)?,
            platform_amount: unsigned(9)?,
            idempotency_key: row.get(10)?,
            fingerprint: row.get(11)?,
            created_ms: row.get(12)?,
        },
        unsigned(13)?,
    ))
}

fn receipt(conn: &Connection, gift_id: &str) -> Result<Option<GiftReceipt>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {GIFT_COLUMNS} FROM gifts WHERE gift_id = ?1"
        ))?
        .query_row([gift_id], gift_row)
        .optional()?
        .map(|(gift, balance_after)| GiftReceipt {
            gift,
            balance_after,
        }))
}

/// The key's fingerprint and result, if the key was used.
fn claimed(conn: &Connection, owner: &str, key: &str) -> Result<Option<(String, String)>> {
    Ok(conn
        .prepare_cached(
            "SELECT fingerprint, result_id FROM idempotency WHERE owner = ?1 AND key = ?2",
        )?
        .query_row([owner, key], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?)
}

fn claim(
    conn: &Connection,
    owner: &str,
    key: &str,
    fingerprint: &str,
    result_id: &str,
    created_ms: u64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO idempotency (owner, key, fingerprint, result_id, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![owner, key, fingerprint, result_id, created_ms])?;
    Ok(())
}

fn ledger_line(
    conn: &Connection,
    account: &str,
    created_ms: u64,
    transfer_id: &str,
    amount: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO ledger (account, created_ms, transfer_id, amount) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![account, created_ms, transfer_id, amount])?;
    Ok(())
}

/// Coins as SQLite stores them; an amount beyond `i64::MAX` is refused
/// (the domain caps amounts below it, so this is a second line).
fn amount(value: u64) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| StoreError::Invalid(format!("amount {value} exceeds the largest storable")))
}

pub(crate) fn settle(conn: &Connection, settlements: &[Settlement]) -> Result<Written<usize>> {
    let mut settled = 0;
    for settlement in settlements {
        settled += usize::from(settle_one(conn, settlement)?);
    }
    Ok(Written::silent(settled))
}

fn settle_one(conn: &Connection, settlement: &Settlement) -> Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO settlements (gift_id, creator, room_id, creator_amount, platform_amount,
                                      gift_ms, settled_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (gift_id) DO NOTHING",
        )?
        .execute(params![
            settlement.gift_id,
            settlement.creator,
            settlement.room_id,
            amount(settlement.creator_amount)?,
            amount(settlement.platform_amount)?,
            settlement.gift_ms,
            settlement.settled_ms,
        ])?;
    if inserted == 0 {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO creator_earnings (creator, gifts, coins, updated_ms) VALUES (?1, 1, ?2, ?3)
         ON CONFLICT (creator) DO UPDATE SET gifts = gifts + 1, coins = coins + ?2, updated_ms = ?3",
    )?
    .execute(params![
        settlement.creator,
        amount(settlement.creator_amount)?,
        settlement.settled_ms
    ])?;
    Ok(true)
}

pub(crate) fn earnings(conn: &Connection, creator: &str) -> Result<Earnings> {
    Ok(conn
        .prepare_cached("SELECT gifts, coins FROM creator_earnings WHERE creator = ?1")?
        .query_row([creator], |row| {
            Ok(Earnings {
                gifts: row.get::<_, i64>(0)?.max(0) as u64,
                coins: row.get::<_, i64>(1)?.max(0) as u64,
            })
        })
        .optional()?
        .unwrap_or_default())
}

pub(crate) fn unsettled(conn: &Connection, limit: usize) -> Result<Vec<GiftRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {GIFT_COLUMNS} FROM gifts
         WHERE NOT EXISTS (SELECT 1 FROM settlements s WHERE s.gift_id = gifts.gift_id)
         ORDER BY created_ms, gift_id LIMIT ?1"
    ))?;
    let gifts = stmt.query_map([super::sql_limit(limit)], |row| {
        gift_row(row).map(|(gift, _)| gift)
    })?;
    Ok(gifts.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn catalog_entries(conn: &Connection) -> Result<Vec<CatalogEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT gift_id, name, price, tier, combo, retired, updated_ms FROM gift_catalog
         ORDER BY gift_id",
    )?;
    let entries = stmt.query_map([], |row| {
        Ok(CatalogEntry {
            gift_id: row.get(0)?,
            name: row.get(1)?,
            price: row.get::<_, i64>(2)?.max(0) as u64,
            tier: row.get(3)?,
            combo: row.get(4)?,
            retired: row.get(5)?,
            updated_ms: row.get(6)?,
        })
    })?;
    Ok(entries.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn put_catalog_entry(conn: &Connection, entry: &CatalogEntry) -> Result<Written<()>> {
    conn.prepare_cached(
        "INSERT INTO gift_catalog (gift_id, name, price, tier, combo, retired, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (gift_id) DO UPDATE SET name = ?2, price = ?3, tier = ?4, combo = ?5,
                                             retired = ?6, updated_ms = ?7",
    )?
    .execute(params![
        entry.gift_id,
        entry.name,
        amount(entry.price)?,
        entry.tier,
        entry.combo,
        entry.retired,
        entry.updated_ms
    ])?;
    Ok(Written::silent(()))
}

pub(crate) fn room_goal(conn: &Connection, room_id: &str) -> Result<Option<(u64, u64)>> {
    Ok(conn
        .prepare_cached("SELECT target, window_ms FROM room_goals WHERE room_id = ?1")?
        .query_row([room_id], |row| {
            Ok((
                row.get::<_, i64>(0)?.max(0) as u64,
                row.get::<_, i64>(1)?.max(0) as u64,
            ))
        })
        .optional()?)
}

pub(crate) fn set_room_goal(
    conn: &Connection,
    room_id: &str,
    goal: Option<(u64, u64)>,
) -> Result<Written<()>> {
    match goal {
        Some((target, window_ms)) => {
            conn.prepare_cached(
                "INSERT INTO room_goals (room_id, target, window_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (room_id) DO UPDATE SET target = ?2, window_ms = ?3",
            )?
            .execute(params![room_id, amount(target)?, amount(window_ms)?])?;
        }
        None => {
            conn.prepare_cached("DELETE FROM room_goals WHERE room_id = ?1")?
                .execute([room_id])?;
        }
    }
    Ok(Written::silent(()))
}

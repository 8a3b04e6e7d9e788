//! Gifts and wallets: the catalog, balances, top-ups (standing in for a
//! payment provider) and gift sends over HTTP. WebSocket sends take the same
//! path through the RoomActor (see `actors::room::gifts`).
//!
//! Idempotency follows Stripe: the `Idempotency-Key` header is required on
//! every money-moving call; the same key with the same parameters returns
//! the first result again (`200`, `"replayed": true`), with other parameters
//! it is refused (`409 idempotency_conflict`).

use actors::{GiftRefusal, GiftSubmit, RoomMsg, events};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use interactive::gifts::{Gift, GiftRequest, MAX_AMOUNT};
use protocol::v1::WalletToppedUp;
use serde::Deserialize;
use serde_json::{Value, json};
use storage::{CatalogEntry, TopUp, TopUpOutcome};

use crate::auth::{Grant, Principal};
use crate::error::{ApiError, check_room_id};
use crate::routes::ApiJson;
use crate::state::AppState;

/// `GET /v1/gifts`: what can be sent, prices in coins. Public: a viewer
/// browses the catalog before signing in.
pub async fn catalog(State(app): State<AppState>) -> Json<Value> {
    let gifts: Vec<Value> = app
        .catalog
        .current()
        .gifts()
        .iter()
        .map(|g| {
            json!({ "id": g.id, "name": g.name, "price": g.price, "tier": g.tier, "combo": g.combo })
        })
        .collect();
    Json(json!({ "gifts": gifts }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GiftBodyEntry {
    name: String,
    price: u64,
    tier: u8,
    #[serde(default)]
    combo: bool,
}

/// `PUT /v1/gifts/{id}` (admin): adds a gift or changes one. Takes effect
/// for the next send in every room; gifts already sent keep their price.
pub async fn put_gift(
    State(app): State<AppState>,
    principal: Principal,
    Path(gift_id): Path<String>,
    ApiJson(body): ApiJson<GiftBodyEntry>,
) -> Result<Json<Value>, ApiError> {
    principal.require_admin()?;
    let gift = Gift {
        id: gift_id,
        name: body.name.trim().to_owned(),
        price: body.price,
        tier: body.tier,
        combo: body.combo,
    };
    gift.validate().map_err(ApiError::bad_request)?;
    app.store
        .put_catalog_entry(catalog_entry(&gift, false))
        .await?;
    let body = json!({ "id": gift.id, "name": gift.name, "price": gift.price, "tier": gift.tier, "combo": gift.combo });
    app.catalog.update(|catalog| catalog.upsert(gift));
    Ok(Json(body))
}

/// `DELETE /v1/gifts/{id}` (admin): retires a gift; new sends of it are
/// refused with `unknown_gift`.
pub async fn retire_gift(
    State(app): State<AppState>,
    principal: Principal,
    Path(gift_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    let Some(gift) = app.catalog.current().get(&gift_id).cloned() else {
        return Err(ApiError::not_found("no such gift in the catalog"));
    };
    app.store
        .put_catalog_entry(catalog_entry(&gift, true))
        .await?;
    app.catalog.update(|catalog| catalog.remove(&gift_id));
    Ok(StatusCode::NO_CONTENT)
}

fn catalog_entry(gift: &Gift, retired: bool) -> CatalogEntry {
    CatalogEntry {
        gift_id: gift.id.clone(),
        name: gift.name.clone(),
        price: gift.price,
        tier: gift.tier,
        combo: gift.combo,
        retired,
        updated_ms: actors::now_ms(),
    }
}

/// `GET /v1/wallets/{user}`: the user themself or the admin.
pub async fn wallet(
    State(app): State<AppState>,
    principal: Principal,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_user_id(&user_id)?;
    if principal != Principal::Admin && principal.user_id() != user_id {
        return Err(ApiError::forbidden(
            "a wallet is visible to its owner and the admin",
        ));
    }
    let balance = app.store.wallet_balance(&user_id).await?;
    Ok(Json(json!({ "user_id": user_id, "balance": balance })))
}

/// `GET /v1/creators/{id}/earnings`: what billing has settled for a
/// creator (the creator themself or the admin).
pub async fn earnings(
    State(app): State<AppState>,
    principal: Principal,
    Path(creator_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_user_id(&creator_id)?;
    if principal != Principal::Admin && principal.user_id() != creator_id {
        return Err(ApiError::forbidden(
            "earnings are visible to the creator and the admin",
        ));
    }
    let earnings = app.store.earnings(&creator_id).await?;
    Ok(Json(json!({
        "creator_id": creator_id,
        "gifts": earnings.gifts,
        "coins": earnings.coins,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopUpBody {
    amount: i64,
}

/// `POST /v1/wallets/{user}/topup` (admin, `Idempotency-Key`).
pub async fn top_up(
    State(app): State<AppState>,
    principal: Principal,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TopUpBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require_admin()?;
    check_user_id(&user_id)?;
    let key = idempotency_key(&headers)?;
    let amount = u64::try_from(body.amount)
        .ok()
        .filter(|amount| (1..=MAX_AMOUNT).contains(amount))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_amount",
                "amount must be a positive number of coins",
            )
        })?;
    let topup_id = uuid::Uuid::now_v7().to_string();
    let created_ms = actors::now_ms();
    let event = events::outbox_event_with_id(
        topup_id.clone(),
        events::WALLET_TOPPED_UP,
        "",
        created_ms,
        &WalletToppedUp {
            topup_id: topup_id.clone(),
            user_id: user_id.clone(),
            amount,
            // The balance is known only inside the transaction; consumers
            // that need it read the wallet.
            balance: 0,
        },
    );
    let topup = TopUp {
        topup_id,
        user_id: user_id.clone(),
        amount,
        idempotency_key: key,
        created_ms,
    };
    let (status, balance, replayed) = match app.store.top_up(topup, event).await? {
        TopUpOutcome::Credited { balance } => (StatusCode::CREATED, balance, false),
        TopUpOutcome::Replayed { balance } => (StatusCode::OK, balance, true),
        TopUpOutcome::KeyConflict => return Err(key_conflict()),
        TopUpOutcome::Overflow => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "amount_overflow",
                "the balance would exceed what a wallet may hold",
            ));
        }
    };
    Ok((
        status,
        Json(json!({ "user_id": user_id, "balance": balance, "replayed": replayed })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GiftBody {
    gift_id: String,
    count: i64,
    to: String,
}

/// `POST /v1/rooms/{room}/gifts` (`gift` grant, `Idempotency-Key`).
pub async fn send(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<GiftBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_room_id(&room_id)?;
    principal.require(Grant::Gift, &room_id)?;
    if principal == Principal::Admin {
        return Err(ApiError::forbidden(
            "gifts are sent by users, not the admin key",
        ));
    }
    let key = idempotency_key(&headers)?;
    let actor = app
        .acquire(&room_id)
        .await?
        .actor()
        .ok_or_else(|| ApiError::unavailable("the room is restarting"))?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let submit = GiftSubmit {
        user_id: principal.user_id().to_owned(),
        name: principal.name().to_owned(),
        region: principal.region().to_owned(),
        request: GiftRequest {
            gift_id: body.gift_id,
            count: body.count,
            to: body.to,
            idempotency_key: key,
        },
        reply,
    };
    actor
        .cast(RoomMsg::Gift(Box::new(submit)))
        .map_err(|_| ApiError::unavailable("the room is restarting"))?;
    let answer = answer
        .await
        .map_err(|_| ApiError::unavailable("the room restarted; retry with the same key"))?
        .map_err(refusal)?;
    let gift = &answer.receipt.gift;
    let status = if answer.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(json!({
            "id": gift.gift_id,
            "gift_id": gift.gift,
            "count": gift.count,
            "to": gift.recipient,
            "coins": gift.total,
            "balance": answer.receipt.balance_after,
            "replayed": answer.replayed,
        })),
    ))
}

/// `GET /v1/rooms/{room}/leaderboard`: top gifters of the room's session.
pub async fn leaderboard(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_room_id(&room_id)?;
    let actor = app
        .acquire(&room_id)
        .await?
        .actor()
        .ok_or_else(|| ApiError::unavailable("the room is restarting"))?;
    let top = ractor::call_t!(actor, RoomMsg::Leaderboard, 10_000)?;
    let entries: Vec<Value> = top
        .into_iter()
        .map(|(user_id, coins)| json!({ "user_id": user_id, "coins": coins }))
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalBody {
    coins: u64,
    window_s: u64,
}

/// `PUT /v1/rooms/{room}/gift_goal` (`moderate`): the room's own goal.
pub async fn set_goal(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
    ApiJson(body): ApiJson<GoalBody>,
) -> Result<Json<Value>, ApiError> {
    if body.coins == 0 || body.coins > MAX_AMOUNT {
        return Err(ApiError::bad_request("coins must be a positive amount"));
    }
    if !(1..=MAX_GOAL_WINDOW_S).contains(&body.window_s) {
        return Err(ApiError::bad_request(format!(
            "window_s must be 1 to {MAX_GOAL_WINDOW_S}"
        )));
    }
    let goal = Some((body.coins, body.window_s * 1000));
    change_goal(&app, &principal, &room_id, goal).await?;
    Ok(Json(
        json!({ "coins": body.coins, "window_s": body.window_s }),
    ))
}

/// `DELETE /v1/rooms/{room}/gift_goal` (`moderate`).
pub async fn clear_goal(
    State(app): State<AppState>,
    principal: Principal,
    Path(room_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    change_goal(&app, &principal, &room_id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A goal's window: at most a week.
const MAX_GOAL_WINDOW_S: u64 = 7 * 24 * 3600;

async fn change_goal(
    app: &AppState,
    principal: &Principal,
    room_id: &str,
    goal: Option<(u64, u64)>,
) -> Result<(), ApiError> {
    check_room_id(room_id)?;
    principal.require(Grant::Moderate, room_id)?;
    let actor = app
        .acquire(room_id)
        .await?
        .actor()
        .ok_or_else(|| ApiError::unavailable("the room is restarting"))?;
    ractor::call_t!(actor, |reply| RoomMsg::SetGoal { goal, reply }, 10_000)??;
    Ok(())
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let invalid =
        |message: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", message);
    let value = headers
        .get("idempotency-key")
        .ok_or_else(|| invalid("the Idempotency-Key header is required"))?;
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| invalid("Idempotency-Key must be 1 to 255 printable ASCII characters"))?;
    Ok(key.to_owned())
}

fn check_user_id(user_id: &str) -> Result<(), ApiError> {
    if user_id.is_empty() || user_id.len() > 128 {
        return Err(ApiError::bad_request("user_id must be 1 to 128 bytes"));
    }
    Ok(())
}

fn key_conflict() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_conflict",
        "this Idempotency-Key was used with different parameters",
    )
}

fn refusal(refusal: GiftRefusal) -> ApiError {
    let status = match refusal.code {
        "idempotency_conflict" => return key_conflict(),
        "insufficient_funds" => StatusCode::PAYMENT_REQUIRED,
        "unknown_gift" => StatusCode::UNPROCESSABLE_ENTITY,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let error = ApiError::new(status, refusal.code, refusal.message);
    match refusal.balance {
        Some(balance) => error.with_field("balance", balance),
        None => error,
    }
}

//! Route handlers: thin translations between HTTP and the `Issuer`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use firstcome_core::{CampaignChanges, CampaignId, ClaimOutcome, NewCampaign, UserId};
use time::OffsetDateTime;

use crate::auth::{Admin, User};
use crate::dto::*;
use crate::error::ErrorBody;
use crate::extract::{ApiJson, CampaignPath};
use crate::{ApiError, AppState};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

#[utoipa::path(
    get, path = "/api/campaigns/{id}", tag = "public",
    params(("id" = String, Path, description = "campaign slug")),
    responses((status = 200, body = CampaignDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
pub async fn get_campaign(
    State(s): State<AppState>,
    CampaignPath(id): CampaignPath,
) -> Result<Json<CampaignDto>, ApiError> {
    let now = now();
    Ok(Json(CampaignDto::new(&s.issuer.view(&id, now).await?, now)))
}

#[utoipa::path(
    post, path = "/api/campaigns/{id}/claims", tag = "public",
    params(("id" = String, Path, description = "campaign slug")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "a new coupon, durable", body = ClaimResponse),
        (status = 200, description = "this user already holds this coupon", body = ClaimResponse),
        (status = 409, description = "sold_out | not_open | closed", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
)]
pub async fn claim(
    State(s): State<AppState>,
    CampaignPath(id): CampaignPath,
    User(user): User,
) -> Result<(StatusCode, Json<ClaimResponse>), ApiError> {
    let (status, outcome, coupon) = match s.issuer.claim(&id, &user, now()).await? {
        ClaimOutcome::Issued(c) => (StatusCode::CREATED, "issued", c),
        ClaimOutcome::AlreadyIssued(c) => (StatusCode::OK, "already_issued", c),
        ClaimOutcome::SoldOut => {
            return Err(ApiError::Conflict { code: "sold_out", message: "all coupons have been issued" });
        }
        ClaimOutcome::NotOpen => {
            return Err(ApiError::Conflict { code: "not_open", message: "the campaign has not opened yet" });
        }
        ClaimOutcome::Closed => return Err(ApiError::Conflict { code: "closed", message: "the campaign has closed" }),
    };
    Ok((status, Json(ClaimResponse { outcome: outcome.into(), coupon: coupon.into() })))
}

#[utoipa::path(
    get, path = "/api/campaigns/{id}/claims/me", tag = "public",
    params(("id" = String, Path, description = "campaign slug")),
    security(("bearer" = [])),
    responses((status = 200, body = CouponDto), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
)]
pub async fn my_claim(
    State(s): State<AppState>,
    CampaignPath(id): CampaignPath,
    User(user): User,
) -> Result<Json<CouponDto>, ApiError> {
    match s.issuer.coupon_of(&id, &user).await? {
        Some(c) => Ok(Json(c.into())),
        None => Err(ApiError::NotFound("you hold no coupon from this campaign".into())),
    }
}

#[utoipa::path(
    get, path = "/api/admin/campaigns", tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, body = AdminCampaignList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
)]
pub async fn list_campaigns(State(s): State<AppState>, _: Admin) -> Result<Json<AdminCampaignList>, ApiError> {
    let now = now();
    let campaigns = s.issuer.list(now).await?.iter().map(|(v, written)| admin_dto(v, *written, now)).collect();
    Ok(Json(AdminCampaignList { campaigns }))
}

fn admin_dto(v: &firstcome_core::CampaignView, ledger_written: u64, now: OffsetDateTime) -> AdminCampaignDto {
    AdminCampaignDto { campaign: CampaignDto::new(v, now), issued: v.issued, ledger_written }
}

/// One campaign as the admin sees it right now (after a create or an edit, or on a read).
async fn admin_view(s: &AppState, id: &CampaignId) -> Result<AdminCampaignDto, ApiError> {
    let now = now();
    let (view, written) = s.issuer.admin_get(id, now).await?;
    Ok(admin_dto(&view, written, now))
}

#[utoipa::path(
    post, path = "/api/admin/campaigns", tag = "admin",
    security(("bearer" = [])),
    request_body = CreateCampaign,
    responses(
        (status = 201, body = AdminCampaignDto), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
    ),
)]
pub async fn create_campaign(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<CreateCampaign>,
) -> Result<(StatusCode, Json<AdminCampaignDto>), ApiError> {
    let campaign = NewCampaign {
        id: body.id,
        title: body.title,
        total: body.total,
        opens_at: body.opens_at,
        closes_at: body.closes_at,
        coupon: body.coupon.into(),
    }
    .validate()?;
    let campaign = s.issuer.create(campaign).await?;
    Ok((StatusCode::CREATED, Json(admin_view(&s, &campaign.id).await?)))
}

#[utoipa::path(
    get, path = "/api/admin/campaigns/{id}", tag = "admin",
    params(("id" = String, Path, description = "campaign slug")),
    security(("bearer" = [])),
    responses((status = 200, body = AdminCampaignDto), (status = 404, body = ErrorBody), (status = 403, body = ErrorBody)),
)]
pub async fn admin_campaign(
    State(s): State<AppState>,
    _: Admin,
    CampaignPath(id): CampaignPath,
) -> Result<Json<AdminCampaignDto>, ApiError> {
    Ok(Json(admin_view(&s, &id).await?))
}

#[utoipa::path(
    patch, path = "/api/admin/campaigns/{id}", tag = "admin",
    params(("id" = String, Path, description = "campaign slug")),
    security(("bearer" = [])),
    request_body = PatchCampaign,
    responses(
        (status = 200, body = AdminCampaignDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "already_open", body = ErrorBody), (status = 403, body = ErrorBody),
    ),
)]
pub async fn patch_campaign(
    State(s): State<AppState>,
    _: Admin,
    CampaignPath(id): CampaignPath,
    ApiJson(body): ApiJson<PatchCampaign>,
) -> Result<Json<AdminCampaignDto>, ApiError> {
    let changes = CampaignChanges {
        title: body.title,
        total: body.total,
        opens_at: body.opens_at,
        closes_at: body.closes_at,
        coupon: body.coupon.map(Into::into),
    };
    s.issuer.update(&id, changes, now()).await?;
    Ok(Json(admin_view(&s, &id).await?))
}

#[utoipa::path(
    post, path = "/api/dev/token", tag = "dev",
    request_body = DevTokenRequest,
    responses((status = 200, body = DevTokenResponse), (status = 400, body = ErrorBody)),
)]
/// Local mode only: signs a user token so the page and scripts can sign in. Never mints admin tokens.
pub async fn dev_token(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<DevTokenRequest>,
) -> Result<Json<DevTokenResponse>, ApiError> {
    let user = UserId::parse(&body.user_id)?;
    let token =
        s.auth.sign(user.as_str(), None, time::Duration::days(1)).ok_or(ApiError::NotFound("no such route".into()))?;
    Ok(Json(DevTokenResponse { token }))
}

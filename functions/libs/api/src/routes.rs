//! Route handlers: thin translations between HTTP and the `Issuer`. Each handler reads the clock
//! once; every status a route can answer is listed in its OpenAPI responses.

use axum::Json;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, ETAG};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use firstcome_core::{CampaignChanges, CampaignId, ClaimOutcome, NewCampaign, UserId};
use firstcome_wire::{
    AdminCampaign, AdminCampaignPage, Campaign, CampaignList, ClaimResponse, Coupon, CouponPage, CreateCampaign,
    DevTokenRequest, DevTokenResponse, ErrorBody, Health, LiveView, MAX_COUPON_PAGE, MAX_LISTED, MAX_PAGE,
    PatchCampaign,
};
use time::OffsetDateTime;

use crate::auth::{Admin, User};
use crate::convert;
use crate::extract::{ApiJson, CampaignPath, CouponPageQuery, IdParam, IfMatch, Page, PageQuery, Peer, Ticket, etag};
use crate::{ApiError, Shared};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// How long a CDN or browser may reuse a public campaign view: the issued count it carries is
/// up to this stale anyway (the engine re-reads it at most once a second).
const PUBLIC_CACHE: HeaderValue = HeaderValue::from_static("public, max-age=1");
/// While a campaign is scheduled and for the first seconds after it opens, no copy may be kept
/// anywhere: a copy made before T0 would say "scheduled" (and carry no nonce) past T0, and its
/// old `server_time` would make the page's clock late; a bot at the origin would start first.
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
/// How long after `opens_at` the views stay uncached (the page's first polls after T0).
pub const UNCACHED_AFTER_OPENING: time::Duration = time::Duration::seconds(5);

/// The view's caching: none around the opening, a second otherwise.
fn cache_for(opens_at: OffsetDateTime, now: OffsetDateTime) -> HeaderValue {
    if now < opens_at + UNCACHED_AFTER_OPENING { NO_STORE } else { PUBLIC_CACHE }
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

#[utoipa::path(
    get, path = "/api/campaigns", tag = "public",
    description = "Campaigns open now (first) and upcoming (by opening time), at most 100. Served \
        from a snapshot at most about a second old, with `Cache-Control: public, max-age=1` (`no-store` \
        from a second before any listed campaign opens until 5 s after).",
    responses(
        (status = 200, body = CampaignList, headers(("Cache-Control" = String))),
        (status = 503, description = "the store is unavailable; see Retry-After", body = ErrorBody),
    ),
)]
pub async fn public_campaigns(State(s): State<Shared>) -> Result<Response, ApiError> {
    let now = now();
    let views = s.issuer.listing(now, MAX_LISTED).await?;
    let campaigns = views.iter().map(|v| convert::campaign(v, now)).collect();
    // A copy of the list made in the second before an opening would outlive it (saying
    // "scheduled"): uncached from then on, as long as that campaign's view is.
    let near =
        |opens_at: OffsetDateTime| now >= opens_at - time::Duration::seconds(1) && cache_for(opens_at, now) == NO_STORE;
    let cache = if views.iter().any(|v| near(v.campaign.opens_at)) { NO_STORE } else { PUBLIC_CACHE };
    let mut res = Json(CampaignList { campaigns, server_time: now }).into_response();
    res.headers_mut().insert(CACHE_CONTROL, cache);
    Ok(res)
}

#[utoipa::path(
    get, path = "/api/campaigns/{id}", tag = "public",
    description = "The campaign as the event page shows it. Served from the engine's memory, not a \
        store read per request: `remaining` may lag the store by up to about a second (exact once \
        sold out), and the answer carries `Cache-Control: public, max-age=1` so a CDN absorbs polling \
        (`no-store` while scheduled and for 5 s after `opens_at`: no copy from before T0 outlives it).",
    params(IdParam),
    responses(
        (status = 200, body = Campaign, headers(("Cache-Control" = String))),
        (status = 400, description = "the id is not a campaign slug", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "the store is unavailable; see Retry-After", body = ErrorBody),
    ),
)]
pub async fn get_campaign(State(s): State<Shared>, CampaignPath(id): CampaignPath) -> Result<Response, ApiError> {
    let now = now();
    let view = s.issuer.view(&id, now).await?;
    let mut res = Json(convert::campaign(&view, now)).into_response();
    res.headers_mut().insert(CACHE_CONTROL, cache_for(view.campaign.opens_at, now));
    Ok(res)
}

#[utoipa::path(
    post, path = "/api/campaigns/{id}/claims", tag = "public",
    description = "Claim a coupon. `issued` is answered only once the coupon is durable; a repeat \
        answers the same coupon. Admin tokens are refused (admins are not claimants). When the \
        campaign has `ticket` terms, the claim carries the puzzle's answer in `Firstcome-Ticket` \
        (the nonce is in the campaign view from `opens_at` on).",
    params(
        IdParam,
        ("Firstcome-Ticket" = Option<String>, Header, description = "the claim ticket: a decimal counter \
            whose SHA-256 over (campaign, user, nonce) has the campaign's leading zero bits"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "a new coupon, durable", body = ClaimResponse),
        (status = 200, description = "this user already holds this coupon", body = ClaimResponse),
        (status = 400, description = "invalid_request: the id is not a campaign slug, or the ticket is not a number | ticket_required", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "forbidden: an admin token | ticket_invalid", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "sold_out | not_open | closed", body = ErrorBody),
        (status = 429, description = "rate_limited: this user or client is over its rate; see Retry-After", body = ErrorBody),
        (status = 503, description = "unavailable | overloaded; see Retry-After", body = ErrorBody),
    ),
)]
pub async fn claim(
    State(s): State<Shared>,
    CampaignPath(id): CampaignPath,
    User(user): User,
    Ticket(ticket): Ticket,
    request_id: Option<axum::Extension<crate::RequestId>>,
) -> Result<(StatusCode, Json<ClaimResponse>), ApiError> {
    s.limits.check_user(user.as_str())?;
    let (status, outcome, coupon) = match s.issuer.claim_with_ticket(&id, &user, ticket, now()).await? {
        ClaimOutcome::Issued(c) => {
            // One line per coupon (bounded by the stock); the rest are debug, or a bot's flood
            // of repeats would be a flood of log lines. Never the whole code.
            // The id is formatted only when the line is written (not under RUST_LOG=warn).
            if tracing::enabled!(tracing::Level::INFO) {
                let request_id = request_id.map_or_else(String::new, |r| r.0.to_string());
                tracing::info!(request_id, campaign = %id, seq = c.seq, code = %c.code.redacted(), "issued");
            }
            (StatusCode::CREATED, firstcome_wire::ClaimOutcome::Issued, c)
        }
        ClaimOutcome::AlreadyIssued(c) => {
            tracing::debug!(campaign = %id, seq = c.seq, "already issued");
            (StatusCode::OK, firstcome_wire::ClaimOutcome::AlreadyIssued, c)
        }
        ClaimOutcome::SoldOut => return Err(ApiError::SoldOut),
        ClaimOutcome::NotOpen => return Err(ApiError::NotOpen),
        ClaimOutcome::Closed => return Err(ApiError::Closed),
    };
    Ok((status, Json(ClaimResponse { outcome, coupon: convert::coupon(coupon) })))
}

#[utoipa::path(
    get, path = "/api/campaigns/{id}/claims/me", tag = "public",
    params(IdParam),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Coupon),
        (status = 400, description = "the id is not a campaign slug", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "an admin token", body = ErrorBody),
        (status = 404, description = "no such campaign, or no coupon of yours", body = ErrorBody),
        (status = 503, description = "the store is unavailable; see Retry-After", body = ErrorBody),
    ),
)]
pub async fn my_claim(
    State(s): State<Shared>,
    CampaignPath(id): CampaignPath,
    User(user): User,
) -> Result<Json<Coupon>, ApiError> {
    match s.issuer.coupon_of(&id, &user, now()).await? {
        Some(c) => Ok(Json(convert::coupon(c))),
        None => Err(ApiError::NotFound("you hold no coupon from this campaign".into())),
    }
}

#[utoipa::path(
    get, path = "/api/admin/campaigns", tag = "admin",
    description = "Campaigns ordered by id, a page at a time; follow `next` with `?after=`.",
    params(PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = AdminCampaignPage),
        (status = 400, description = "a bad query parameter", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 503, description = "the store is unavailable; see Retry-After", body = ErrorBody),
    ),
)]
pub async fn list_campaigns(
    State(s): State<Shared>,
    _: Admin,
    Page(q): Page<PageQuery>,
) -> Result<Json<AdminCampaignPage>, ApiError> {
    let limit = page_limit(q.limit, 50, MAX_PAGE)?;
    let after = q.after.as_deref().map(CampaignId::parse).transpose()?;
    let now = now();
    let mut views = s.issuer.admin_page(after.as_ref(), limit + 1, now).await?;
    let more = keep_page(&mut views, limit);
    let campaigns: Vec<AdminCampaign> = views.iter().map(|(v, w)| convert::admin_campaign(v, *w, now)).collect();
    let next = if more { campaigns.last().map(|c| c.campaign.id.clone()) } else { None };
    Ok(Json(AdminCampaignPage { campaigns, next }))
}

/// A page size from `?limit=` (`default` when absent), refused outside 1..=`max`.
fn page_limit(asked: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = asked.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(firstcome_core::ValidationError::new("limit", format!("must be between 1 and {max}")).into())
    }
}

/// Paged reads ask the store for one more than `limit`: the extra tells whether there is a next
/// page. Cuts `items` to the page and says whether there was one.
fn keep_page<T>(items: &mut Vec<T>, limit: usize) -> bool {
    let more = items.len() > limit;
    items.truncate(limit);
    more
}

/// One campaign as the admin sees it right now, with its version as the ETag.
async fn admin_view(s: &Shared, id: &CampaignId, status: StatusCode) -> Result<Response, ApiError> {
    let now = now();
    let (view, written) = s.issuer.admin_get(id, now).await?;
    let mut res = (status, Json(convert::admin_campaign(&view, written, now))).into_response();
    res.headers_mut().insert(ETAG, etag(view.campaign.version));
    Ok(res)
}

#[utoipa::path(
    post, path = "/api/admin/campaigns", tag = "admin",
    security(("bearer" = [])),
    request_body = CreateCampaign,
    responses(
        (status = 201, body = AdminCampaign, headers(("ETag" = String, description = "the campaign's version"))),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "conflict: the id is taken", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 503, description = "the store is unavailable; see Retry-After", body = ErrorBody),
    ),
)]
pub async fn create_campaign(
    State(s): State<Shared>,
    _: Admin,
    ApiJson(body): ApiJson<CreateCampaign>,
) -> Result<Response, ApiError> {
    let now = now();
    let campaign = NewCampaign {
        id: body.id,
        title: body.title,
        total: body.total,
        opens_at: body.opens_at,
        closes_at: body.closes_at,
        coupon: convert::template(body.coupon),
        pow_bits: body.pow_bits,
    }
    .validate(now)?;
    let campaign = s.issuer.create(campaign, now).await?;
    admin_view(&s, &campaign.id, StatusCode::CREATED).await
}

#[utoipa::path(
    get, path = "/api/admin/campaigns/{id}", tag = "admin",
    params(IdParam),
    security(("bearer" = [])),
    responses(
        (status = 200, body = AdminCampaign, headers(("ETag" = String, description = "the campaign's version"))),
        (status = 400, description = "the id is not a campaign slug", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "the store is unavailable; see Retry-After", body = ErrorBody),
    ),
)]
pub async fn admin_campaign(
    State(s): State<Shared>,
    _: Admin,
    CampaignPath(id): CampaignPath,
) -> Result<Response, ApiError> {
    admin_view(&s, &id, StatusCode::OK).await
}

#[utoipa::path(
    patch, path = "/api/admin/campaigns/{id}", tag = "admin",
    description = "Edit a campaign that has not opened and has issued nothing. Send \
        `If-Match: \"<version>\"` (the ETag of the campaign you edited); if another edit landed \
        first the answer is 409 `version_conflict`. `If-Match: *` edits whatever is stored.",
    params(IdParam, ("If-Match" = String, Header, description = "\"<version>\" or *")),
    security(("bearer" = [])),
    request_body = PatchCampaign,
    responses(
        (status = 200, body = AdminCampaign, headers(("ETag" = String, description = "the new version"))),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "already_open | version_conflict", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 428, description = "precondition_required: no If-Match", body = ErrorBody),
        (status = 503, description = "the store is unavailable; see Retry-After", body = ErrorBody),
    ),
)]
pub async fn patch_campaign(
    State(s): State<Shared>,
    _: Admin,
    CampaignPath(id): CampaignPath,
    IfMatch(version): IfMatch,
    ApiJson(body): ApiJson<PatchCampaign>,
) -> Result<Response, ApiError> {
    let changes = CampaignChanges {
        title: body.title,
        total: body.total,
        opens_at: body.opens_at,
        closes_at: body.closes_at,
        coupon: body.coupon.map(convert::template),
        pow_bits: body.pow_bits,
    };
    s.issuer.update(&id, changes, version, now()).await?;
    admin_view(&s, &id, StatusCode::OK).await
}

#[utoipa::path(
    post, path = "/api/admin/campaigns/{id}/end", tag = "admin",
    description = "End a running campaign now: `closes_at` becomes now; stock and coupons are \
        untouched and winners keep their coupons. Claims decided after the answer are `closed`.",
    params(IdParam),
    security(("bearer" = [])),
    responses(
        (status = 200, body = AdminCampaign, headers(("ETag" = String, description = "the new version"))),
        (status = 400, description = "the id is not a campaign slug", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "not_open (reschedule it instead) | closed (already ended)", body = ErrorBody),
        (status = 503, description = "the store is unavailable; see Retry-After", body = ErrorBody),
    ),
)]
pub async fn end_campaign(
    State(s): State<Shared>,
    _: Admin,
    CampaignPath(id): CampaignPath,
) -> Result<Response, ApiError> {
    s.issuer.end(&id, now()).await?;
    admin_view(&s, &id, StatusCode::OK).await
}

#[utoipa::path(
    get, path = "/api/admin/campaigns/{id}/coupons", tag = "admin",
    description = "The winners, by seq, a page at a time; follow `next` with `?after=`. Only \
        durable coupons are listed.",
    params(IdParam, CouponPageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = CouponPage),
        (status = 400, description = "a bad id or query parameter", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "the store is unavailable; see Retry-After", body = ErrorBody),
    ),
)]
pub async fn coupons(
    State(s): State<Shared>,
    _: Admin,
    CampaignPath(id): CampaignPath,
    Page(q): Page<CouponPageQuery>,
) -> Result<Json<CouponPage>, ApiError> {
    let limit = page_limit(q.limit, 100, MAX_COUPON_PAGE)?;
    // Counted first: coupons issued meanwhile may appear in the page, never the other way round.
    let issued = s.issuer.issued(&id).await?;
    let mut page = s.issuer.coupons(&id, q.after.unwrap_or(0), limit + 1).await?;
    let more = keep_page(&mut page, limit);
    let next = if more { page.last().map(|c| c.seq) } else { None };
    Ok(Json(CouponPage { coupons: page.into_iter().map(convert::coupon).collect(), next, issued }))
}

#[utoipa::path(
    get, path = "/api/admin/campaigns/{id}/coupons.csv", tag = "admin",
    description = "Every winner as CSV (`seq,user_id,code,issued_at,expires_at`, RFC 4180 quoting) \
        for fulfilment. A cell that a spreadsheet would run as a formula (starting with = + - @) \
        is prefixed with `'`. A list shorter than the issued count (an index still catching up) \
        is refused with 503 `unavailable` and `Retry-After`, never sent as if complete.",
    params(IdParam),
    security(("bearer" = [])),
    responses(
        (status = 200, content_type = "text/csv", body = String, headers(("Content-Disposition" = String))),
        (status = 400, description = "the id is not a campaign slug", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "the store is unavailable; see Retry-After", body = ErrorBody),
    ),
)]
pub async fn coupons_csv(
    State(s): State<Shared>,
    _: Admin,
    CampaignPath(id): CampaignPath,
) -> Result<Response, ApiError> {
    // Counted first: coupons issued meanwhile may appear in the list, never the other way round.
    let issued = s.issuer.issued(&id).await?;
    let mut out = String::from("seq,user_id,code,issued_at,expires_at\r\n");
    let mut after = 0;
    let mut listed = 0u64;
    loop {
        let page = s.issuer.coupons(&id, after, MAX_COUPON_PAGE).await?;
        listed += page.len() as u64;
        for c in &page {
            let cells = [
                c.seq.to_string(),
                c.user_id.as_str().to_owned(),
                c.code.to_string(),
                firstcome_wire::datetime::format(c.issued_at),
                firstcome_wire::datetime::format(c.expires_at),
            ];
            let row: Vec<String> = cells.iter().map(|cell| csv_cell(cell)).collect();
            out.push_str(&row.join(","));
            out.push_str("\r\n");
        }
        match page.last() {
            Some(last) if page.len() == MAX_COUPON_PAGE => after = last.seq,
            _ => break,
        }
    }
    // A short list is refused, not handed to fulfilment as if it were every winner.
    if listed < issued {
        return Err(ApiError::IncompleteWinners { listed, issued });
    }
    let disposition = format!("attachment; filename=\"{id}-winners.csv\"");
    let mut res = out.into_response();
    let headers = res.headers_mut();
    headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    headers.insert(
        axum::http::header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).expect("campaign ids are header-safe"),
    );
    Ok(res)
}

/// One CSV cell: quoted when it holds a comma, quote or line break (RFC 4180), and defused when
/// a spreadsheet would evaluate it (user ids are chosen by users: `=HYPERLINK(...)` is an attack).
fn csv_cell(cell: &str) -> String {
    let defused = if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{cell}") } else { cell.to_owned() };
    if defused.contains([',', '"', '\n', '\r']) { format!("\"{}\"", defused.replace('"', "\"\"")) } else { defused }
}

#[utoipa::path(
    post, path = "/api/dev/token", tag = "dev",
    description = "Local mode with --dev-tokens only, and only from loopback: signs a user token so \
        the page and scripts can sign in. Never mints admin tokens.",
    request_body = DevTokenRequest,
    responses(
        (status = 200, body = DevTokenResponse),
        (status = 400, body = ErrorBody),
        (status = 403, description = "not from loopback", body = ErrorBody),
        (status = 413, body = ErrorBody),
    ),
)]
pub async fn dev_token(
    State(s): State<Shared>,
    Peer(peer): Peer,
    ApiJson(body): ApiJson<DevTokenRequest>,
) -> Result<Json<DevTokenResponse>, ApiError> {
    if !peer.is_some_and(|addr| addr.ip().is_loopback()) {
        return Err(ApiError::Forbidden("dev tokens are only handed out to this machine (loopback)"));
    }
    let user = UserId::parse(&body.user_id)?;
    let token = s
        .auth
        .sign(user.as_str(), None, time::Duration::days(1))
        .ok_or(ApiError::NotFound("no route for POST /api/dev/token".into()))?;
    Ok(Json(DevTokenResponse { token }))
}

/// Where to look when this deployment keeps no metrics of its own (Lambda: each container only
/// sees its own requests, so the figures are CloudWatch's, from every container's EMF lines).
const NO_METRICS: &str = "this deployment keeps its metrics in CloudWatch (the stack's firstcome-<stack> dashboard, output DashboardUrl), not here";

#[utoipa::path(
    get, path = "/api/admin/live", tag = "admin",
    description = "The opening second as it happens: the last five minutes of claims per second by \
        outcome and their p99, coupons remaining per campaign, the ledger's lag, the breaker and \
        requests in flight, from the same metrics as `/metrics`. Local mode; on AWS the figures \
        are on the CloudWatch dashboard (404).",
    security(("bearer" = [])),
    responses(
        (status = 200, body = LiveView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "this deployment keeps no metrics of its own (Lambda)", body = ErrorBody),
    ),
)]
pub async fn live(State(s): State<Shared>, _: Admin) -> Result<Json<LiveView>, ApiError> {
    let exposition = s.metrics.as_ref().ok_or_else(|| ApiError::NotFound(NO_METRICS.into()))?;
    Ok(Json(exposition.live(now())))
}

#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    description = "Every metric in Prometheus' text format (claims by outcome, claim and store \
        latency, in flight, shed, breaker, remaining stock, ledger writes and lag). Admin only: \
        scrape with the admin token as a bearer token.",
    security(("bearer" = [])),
    responses(
        (status = 200, content_type = "text/plain", body = String),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "this deployment keeps no metrics of its own (Lambda)", body = ErrorBody),
    ),
)]
pub async fn metrics(State(s): State<Shared>, _: Admin) -> Result<Response, ApiError> {
    let exposition = s.metrics.as_ref().ok_or_else(|| ApiError::NotFound(NO_METRICS.into()))?;
    let mut res = exposition.render().into_response();
    res.headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(res)
}

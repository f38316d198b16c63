//! Domain values into their wire shapes. Free functions, because neither side is this crate's
//! (the core knows nothing of the wire, the wire nothing of the core).

use firstcome_core::{CampaignView, Coupon, CouponTemplate, Status};
use firstcome_wire as wire;
use time::OffsetDateTime;

pub fn terms(t: &CouponTemplate) -> wire::CouponTerms {
    wire::CouponTerms { discount: t.discount, currency: t.currency.clone(), valid_days: t.valid_days }
}

pub fn template(t: wire::CouponTerms) -> CouponTemplate {
    CouponTemplate { discount: t.discount, currency: t.currency, valid_days: t.valid_days }
}

pub fn status(s: Status) -> wire::CampaignStatus {
    match s {
        Status::Scheduled => wire::CampaignStatus::Scheduled,
        Status::Open => wire::CampaignStatus::Open,
        Status::SoldOut => wire::CampaignStatus::SoldOut,
        Status::Closed => wire::CampaignStatus::Closed,
    }
}

pub fn campaign(v: &CampaignView, now: OffsetDateTime) -> wire::Campaign {
    let c = &v.campaign;
    wire::Campaign {
        id: c.id.to_string(),
        title: c.title.clone(),
        total: c.total,
        remaining: v.remaining,
        status: status(v.status),
        opens_at: c.opens_at,
        closes_at: c.closes_at,
        server_time: now,
        coupon: terms(&c.coupon),
        ticket: (c.pow_bits > 0)
            .then(|| wire::TicketTerms { bits: c.pow_bits, nonce: c.revealed_nonce(now).map(|n| n.to_hex()) }),
    }
}

pub fn admin_campaign(v: &CampaignView, ledger_written: u64, now: OffsetDateTime) -> wire::AdminCampaign {
    wire::AdminCampaign { campaign: campaign(v, now), version: v.campaign.version, issued: v.issued, ledger_written }
}

pub fn coupon(c: Coupon) -> wire::Coupon {
    wire::Coupon {
        code: c.code.to_string(),
        seq: c.seq,
        campaign_id: c.campaign_id.into(),
        user_id: c.user_id.into(),
        issued_at: c.issued_at,
        expires_at: c.expires_at,
    }
}

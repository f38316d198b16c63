//! The invariants every rehearsal proves, from its own bookkeeping plus the API: exact stock,
//! one code per user, distinct codes, `claims/me` agrees, seq without gaps, ledger catches up.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use hyper::header::HeaderValue;

use crate::Client;
use firstcome_wire::{AdminCampaign, Campaign, Coupon};

/// How stale the public campaign view may be (the engine re-reads the issued count once a second).
const PUBLIC_VIEW_LAG: Duration = Duration::from_millis(1200);
use crate::load::ClaimSeen;

pub struct CheckInput<'a> {
    pub client: &'a Client,
    pub base: &'a str,
    pub campaign: &'a str,
    pub total: u64,
    pub claims: &'a [ClaimSeen],
    /// Distinct users who got any answer to a claim.
    pub users_answered: u64,
    /// Bearer header per user index.
    pub auth: &'a [HeaderValue],
    pub admin_token: Option<&'a str>,
    pub drain_timeout: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct Facts {
    pub issued: u64,
    pub issued_answers: u64,
    pub ledger_written: Option<u64>,
    pub ledger_drain_s: Option<f64>,
}

pub async fn check(input: CheckInput<'_>) -> (Vec<String>, Facts) {
    let mut violations = Vec::new();
    let mut facts = Facts::default();
    let campaign_url = format!("{}/api/campaigns/{}", input.base, input.campaign);

    let admin_url = format!("{}/api/admin/campaigns/{}", input.base, input.campaign);
    match issued(&input, &campaign_url, &admin_url).await {
        Ok(n) => facts.issued = n,
        Err(e) => violations.push(e),
    }
    let expected = input.total.min(input.users_answered);
    if facts.issued != expected {
        violations.push(format!(
            "issued {} but min(stock {}, users who clicked {}) = {expected}",
            facts.issued, input.total, input.users_answered
        ));
    }

    // Per user: every answer must carry the same code; across users codes must differ.
    let mut code_of: HashMap<u32, &ClaimSeen> = HashMap::new();
    for c in input.claims {
        match code_of.get(&c.user) {
            Some(prev) if prev.code != c.code => {
                violations.push(format!("user #{} got two codes: {} and {}", c.user, prev.code, c.code));
            }
            Some(_) => {}
            None => {
                code_of.insert(c.user, c);
            }
        }
    }
    facts.issued_answers = input.claims.iter().filter(|c| c.status == 201).count() as u64;
    if facts.issued_answers > facts.issued {
        violations
            .push(format!("{} `issued` answers but the campaign counts {} issued", facts.issued_answers, facts.issued));
    }
    let mut owner: HashMap<&str, u32> = HashMap::new();
    for c in code_of.values() {
        if let Some(other) = owner.insert(&c.code, c.user) {
            violations.push(format!("code {} went to users #{other} and #{}", c.code, c.user));
        }
    }

    // claims/me must return exactly the code each winner was told.
    let me_url = format!("{campaign_url}/claims/me");
    let mismatches: Vec<String> = futures::stream::iter(code_of.values())
        .map(|c| {
            let (client, url) = (input.client, &me_url);
            let token = input.auth[c.user as usize].to_str().unwrap_or("").trim_start_matches("Bearer ").to_owned();
            async move {
                let me = client.get(url, Some(&token)).await.map(|(s, v)| (s, serde_json::from_value::<Coupon>(v)));
                match me {
                    Ok((200, Ok(coupon))) if coupon.code == c.code && coupon.seq == c.seq => None,
                    other => Some(format!(
                        "user #{}: claims/me gave {other:?}, the claim said {} seq {}",
                        c.user, c.code, c.seq
                    )),
                }
            }
        })
        .buffer_unordered(64)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    let more = mismatches.len().saturating_sub(20);
    violations.extend(mismatches.into_iter().take(20));
    if more > 0 {
        violations.push(format!("... and {more} more claims/me mismatches"));
    }

    // seq: distinct, within 1..=issued, and gap-free when every winner was seen.
    let mut seqs: Vec<u32> = code_of.values().map(|c| c.seq).collect();
    seqs.sort_unstable();
    let distinct: HashSet<u32> = seqs.iter().copied().collect();
    if distinct.len() != seqs.len() {
        violations.push(format!("{} winners share seq numbers", seqs.len() - distinct.len()));
    }
    if seqs.last().is_some_and(|&m| u64::from(m) > facts.issued) || seqs.first() == Some(&0) {
        violations.push(format!("seq outside 1..={}", facts.issued));
    }
    if seqs.len() as u64 == facts.issued && seqs.iter().enumerate().any(|(i, &s)| s as usize != i + 1) {
        violations.push("seq has gaps".into());
    }

    // The ledger converges to the claims once the outbox drains.
    if let Some(admin) = input.admin_token {
        let start = std::time::Instant::now();
        loop {
            match admin_view(&input, &admin_url, admin).await {
                Ok(v) => {
                    let written = v.ledger_written;
                    facts.ledger_written = Some(written);
                    if written == facts.issued {
                        facts.ledger_drain_s = Some(start.elapsed().as_secs_f64());
                        break;
                    }
                }
                Err(e) => {
                    violations.push(e);
                    break;
                }
            }
            if start.elapsed() > input.drain_timeout {
                violations.push(format!(
                    "ledger has {:?} records, issued {} (after {:?})",
                    facts.ledger_written, facts.issued, input.drain_timeout
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (violations, facts)
}

async fn admin_view(input: &CheckInput<'_>, url: &str, admin: &str) -> Result<AdminCampaign, String> {
    match input.client.get(url, Some(admin)).await {
        Ok((200, v)) => serde_json::from_value(v).map_err(|e| format!("admin GET campaign: unexpected body: {e}")),
        other => Err(format!("admin GET campaign failed: {other:?}")),
    }
}

/// Issued coupons, exactly: from the admin view when the tool holds an admin token; else from the
/// public view, which may lag by up to a second (it is served from memory), so read after that.
async fn issued(input: &CheckInput<'_>, public_url: &str, admin_url: &str) -> Result<u64, String> {
    if let Some(admin) = input.admin_token {
        return admin_view(input, admin_url, admin).await.map(|v| v.issued);
    }
    tokio::time::sleep(PUBLIC_VIEW_LAG).await;
    match input.client.get(public_url, None).await {
        Ok((200, v)) => serde_json::from_value::<Campaign>(v)
            .map(|c| input.total.saturating_sub(c.remaining))
            .map_err(|e| format!("GET campaign: unexpected body: {e}")),
        other => Err(format!("GET campaign failed: {other:?}")),
    }
}

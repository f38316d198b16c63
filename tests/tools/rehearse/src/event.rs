//! The post-event report (`cargo xtask report --campaign ID`): what happened at a campaign's
//! opening, read from the server itself. Durable facts come from the store through the admin API
//! (the winners' `issued_at`: sell-out time and issues per second; issued against ledger-written);
//! claims per second by outcome, the latency percentiles and the ledger's drain come from the
//! live view (`/api/admin/live`: the server's own metrics, the last five minutes). Printed, and
//! written as an HTML page with SVG charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use firstcome_api::metric_names::quantile_of_counts;
use firstcome_wire::{AdminCampaign, CouponPage, LiveView};
use serde::Serialize;
use time::OffsetDateTime;

use crate::{Client, RehearseError, read};

/// `firstcome-report`'s options.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about = "The post-event report of one campaign, from the server's own data")]
pub struct ReportOptions {
    /// The campaign.
    #[arg(long)]
    pub campaign: String,
    /// The server (local mode).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The admin token (local mode: <data-dir>/admin-token).
    #[arg(long, default_value = "data/admin-token")]
    pub admin_token_file: PathBuf,
    /// Where to write <campaign>.html and <campaign>.svg.
    #[arg(long, default_value = "target/reports")]
    pub out: PathBuf,
}

/// What the report found; the JSON beside the page (`<campaign>.json`).
#[derive(Debug, Clone, Serialize)]
pub struct EventReport {
    pub campaign: String,
    pub title: String,
    pub total: u64,
    pub issued: u64,
    pub ledger_written: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub opens_at: OffsetDateTime,
    /// From opening to the last coupon, when every coupon was issued.
    pub sold_out_after_s: Option<f64>,
    /// Coupons issued per second from opening (the store's `issued_at`).
    pub issued_per_s: Vec<u64>,
    /// Claims by outcome over the event's seconds in the live view.
    pub outcomes: BTreeMap<String, u64>,
    /// Claims per second by outcome, from the second the campaign opened.
    pub claims_per_s: Vec<BTreeMap<String, u64>>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// From the last issue until the ledger's lag was 0 again (1 s resolution).
    pub ledger_drained_after_s: Option<f64>,
    /// Why a figure is missing, if one is.
    pub notes: Vec<String>,
}

async fn get<T: serde::de::DeserializeOwned>(
    client: &Client,
    url: &str,
    admin: &str,
    what: &'static str,
) -> Result<T, RehearseError> {
    let (status, v) = client.get(url, Some(admin)).await.map_err(|source| RehearseError::Api { what, source })?;
    if status != 200 {
        return Err(RehearseError::Refused { what, status, body: v.to_string() });
    }
    serde_json::from_value(v.clone()).map_err(|_| RehearseError::Refused {
        what,
        status,
        body: format!("not the expected shape: {v}"),
    })
}

/// Reads the campaign, its winners and the live view, and works out the report.
pub async fn event_report(o: &ReportOptions) -> Result<EventReport, RehearseError> {
    let client = Client::new();
    let admin = read(&o.admin_token_file)?;
    let base = o.url.trim_end_matches('/');
    let id = &o.campaign;
    let c: AdminCampaign = get(&client, &format!("{base}/api/admin/campaigns/{id}"), &admin, "the campaign").await?;
    let mut coupons = Vec::new();
    let mut after = 0;
    loop {
        let page: CouponPage = get(
            &client,
            &format!("{base}/api/admin/campaigns/{id}/coupons?after={after}&limit=1000"),
            &admin,
            "the winners",
        )
        .await?;
        coupons.extend(page.coupons);
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    let issued_at: Vec<OffsetDateTime> = coupons.iter().map(|c| c.issued_at).collect();
    match get::<LiveView>(&client, &format!("{base}/api/admin/live"), &admin, "the live view").await {
        Ok(live) => Ok(work_out(&c, &issued_at, &live)),
        // A deployment on AWS keeps its metrics in CloudWatch: the coupons still tell when the
        // stock went and how it was issued.
        Err(RehearseError::Refused { status: 404, .. }) => {
            let none = LiveView {
                server_time: OffsetDateTime::now_utc(),
                seconds: Vec::new(),
                remaining: Default::default(),
                ledger_lag_seconds: 0.0,
                breaker: "unknown".into(),
                in_flight: 0,
                latency_bounds_s: Vec::new(),
            };
            let mut report = work_out(&c, &issued_at, &none);
            report.notes.retain(|n| !n.starts_with("the live view"));
            report.notes.push("this deployment keeps its metrics in CloudWatch (its dashboard): outcomes, latency and the ledger's drain are not in this report".into());
            Ok(report)
        }
        Err(e) => Err(e),
    }
}

/// The report from what was read (pure, so it is tested on made-up inputs too).
pub fn work_out(c: &AdminCampaign, issued_at: &[OffsetDateTime], live: &LiveView) -> EventReport {
    let opens = c.campaign.opens_at;
    let total = u64::from(c.campaign.total);
    let mut notes = Vec::new();
    let last_issue = issued_at.iter().max().copied();
    let sold_out_after_s =
        last_issue.filter(|_| c.issued == total && total > 0).map(|t| (t - opens).as_seconds_f64().max(0.0));
    let mut issued_per_s = Vec::new();
    for t in issued_at {
        let s = (*t - opens).whole_seconds().max(0) as usize;
        if issued_per_s.len() <= s {
            issued_per_s.resize(s + 1, 0);
        }
        issued_per_s[s] += 1;
    }

    // The event's seconds in the live view: from the one holding the opening instant to the
    // last with claims.
    let event: Vec<_> = live.seconds.iter().filter(|s| s.at > opens).collect();
    let last_busy = event.iter().rposition(|s| !s.claims.is_empty());
    let window = &event[..last_busy.map_or(0, |i| i + 1)];
    if live.seconds.first().is_none_or(|s| s.at > opens + time::Duration::seconds(1)) {
        notes.push("the live view no longer reaches back to the opening (it keeps five minutes): outcomes, latency and the ledger's drain are from what it still holds".into());
    }
    let mut outcomes = BTreeMap::new();
    let mut counts = vec![0u64; live.latency_bounds_s.len() + 1];
    let claims_per_s: Vec<BTreeMap<String, u64>> = window.iter().map(|s| s.claims.clone()).collect();
    for s in window {
        for (k, n) in &s.claims {
            *outcomes.entry(k.clone()).or_default() += n;
        }
        for (i, n) in s.latency_counts.iter().enumerate() {
            if let Some(c) = counts.get_mut(i) {
                *c += n;
            }
        }
    }
    let ms = |q| quantile_of_counts(&live.latency_bounds_s, &counts, q).map(|s| s * 1000.0);
    let ledger_drained_after_s = match last_issue {
        Some(last) if c.ledger_written >= c.issued => live
            .seconds
            .iter()
            .find(|s| s.at >= last && s.ledger_lag_seconds == 0.0)
            .map(|s| (s.at - last).as_seconds_f64().max(0.0)),
        Some(_) => {
            notes
                .push(format!("the ledger has {} of {} issuance records: not drained yet", c.ledger_written, c.issued));
            None
        }
        None => None,
    };
    EventReport {
        campaign: c.campaign.id.clone(),
        title: c.campaign.title.clone(),
        total,
        issued: c.issued,
        ledger_written: c.ledger_written,
        opens_at: opens,
        sold_out_after_s,
        issued_per_s,
        outcomes,
        claims_per_s,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        ledger_drained_after_s,
        notes,
    }
}

impl EventReport {
    pub fn text(&self) -> String {
        let mut t = String::new();
        let secs = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |s| format!("{s:.3} s"));
        let _ = writeln!(t, "campaign      {} ({}), opened {}", self.campaign, self.title, self.opens_at);
        let _ = writeln!(t, "issued        {} of {}; ledger {}", self.issued, self.total, self.ledger_written);
        let _ = writeln!(t, "sold out      {}", secs(self.sold_out_after_s).replace('–', "not sold out"));
        let peak = self.claims_per_s.iter().map(|s| s.values().sum::<u64>()).max().unwrap_or(0);
        let _ =
            writeln!(t, "claims/s      peak {peak}; issued/s peak {}", self.issued_per_s.iter().max().unwrap_or(&0));
        let total: u64 = self.outcomes.values().sum();
        for (k, n) in &self.outcomes {
            let _ = writeln!(t, "  {k:<22} {n:>9}  {:5.1}%", *n as f64 * 100.0 / total.max(1) as f64);
        }
        let ms = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |m| format!("{m:.2} ms"));
        let _ = writeln!(t, "latency       p50 {}  p99 {}", ms(self.p50_ms), ms(self.p99_ms));
        let _ = writeln!(t, "ledger        drained {} after the last issue", secs(self.ledger_drained_after_s));
        for n in &self.notes {
            let _ = writeln!(t, "note          {n}");
        }
        t
    }

    /// Claims per second by outcome (lines) and issues per second, one point per second.
    pub fn svg(&self) -> String {
        let (w, h, pad) = (960.0, 360.0, 50.0);
        let n = self.claims_per_s.len().max(self.issued_per_s.len()).max(2);
        let mut series: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (i, s) in self.claims_per_s.iter().enumerate() {
            for (k, v) in s {
                series.entry(k.as_str()).or_insert_with(|| vec![0.0; n])[i] = *v as f64;
            }
        }
        let max = series.values().flatten().copied().fold(1.0f64, f64::max);
        let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1) as f64;
        let y = |v: f64| h - pad - (h - 2.0 * pad) * v / max;
        let colours = ["#1a7f37", "#1f77b4", "#9a6700", "#cf222e", "#8250df", "#57606a", "#bf3989", "#0a3069"];
        let mut s = format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20" font-size="14">{} — claims per second by outcome (max {max:.0}), {n} s from opening</text>
<line x1="{pad}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#888"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{y0}" stroke="#888"/>
"##,
            escape(&self.campaign),
            y0 = h - pad,
            x1 = w - pad,
        );
        for (i, (name, vals)) in series.iter().enumerate() {
            let colour = colours[i % colours.len()];
            let pts: Vec<String> = vals.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/><text x="{}" y="{}" fill="{colour}">{}</text>"#,
                pts.join(" "),
                w - pad + 4.0 - 160.0,
                pad + 14.0 * i as f64,
                escape(name)
            );
        }
        s.push_str("</svg>\n");
        s
    }

    pub fn html(&self) -> String {
        format!(
            "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>{id}: event report</title>\
             <body style=\"font-family:sans-serif\"><h1>{id}: event report</h1><pre>{text}</pre>{svg}</body></html>\n",
            id = escape(&self.campaign),
            text = escape(&self.text()),
            svg = self.svg(),
        )
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Runs the report and writes `<out>/<campaign>.{html,svg,json}`; returns it and the page's path.
pub async fn write_report(o: &ReportOptions) -> Result<(EventReport, PathBuf), RehearseError> {
    let report = event_report(o).await?;
    let page = o.out.join(format!("{}.html", report.campaign));
    crate::write_creating_dirs(&page, report.html().as_bytes())?;
    crate::write_creating_dirs(&o.out.join(format!("{}.svg", report.campaign)), report.svg().as_bytes())?;
    let json = serde_json::to_string_pretty(&report).expect("the report serialises");
    crate::write_creating_dirs(&o.out.join(format!("{}.json", report.campaign)), json.as_bytes())?;
    Ok((report, page))
}

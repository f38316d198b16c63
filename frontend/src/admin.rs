//! `/admin`: the marketing page. Sign in (the admin token locally, a user-pool account in the
//! `admin` group on AWS), create a campaign (times entered in the browser's zone, UTC shown beside
//! them), reschedule or edit it before it opens, end a running one, download the winners, and
//! watch issued / remaining / ledger figures live. The create form proposes the claim ticket's
//! difficulty from this browser's own hash rate: the bits that take about 100 ms here.

use std::time::Duration;

use firstcome_wire::{AdminCampaign, AdminCampaignPage, CampaignStatus, LiveView};
use leptos::prelude::*;
use serde::Serialize;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;

use crate::api::{Call, Failure, Method, millis, sleep, to_json};
use crate::i18n::Lang;
use crate::session;
use firstcome_wire::site::IdentityConfig;

/// Claims-per-second samples kept per campaign for the chart (one per poll, about a minute).
const CHART_POINTS: usize = 60;

/// A `datetime-local` value (the browser's zone) as an RFC 3339 UTC instant, if it is one.
fn local_to_utc(value: &str) -> Option<String> {
    if value.trim().is_empty() {
        return None;
    }
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_str(value));
    if d.get_time().is_nan() { None } else { Some(String::from(d.to_iso_string())) }
}

/// An instant shown in the browser's zone.
fn local_text(t: time::OffsetDateTime) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(millis(t)));
    String::from(d.to_locale_string("default", &wasm_bindgen::JsValue::UNDEFINED))
}

/// A number field: a number when it parses, else the text as typed (the API names the field).
#[derive(Serialize)]
#[serde(untagged)]
enum Num {
    N(u64),
    Text(String),
}

fn number(text: &str) -> Num {
    text.trim().parse::<u64>().map_or_else(|_| Num::Text(text.to_owned()), Num::N)
}

/// A time field: the UTC instant when the input holds one, else the text as typed.
fn instant(text: &str) -> String {
    local_to_utc(text).unwrap_or_else(|| text.to_owned())
}

/// The create form as sent: `CreateCampaign`'s shape, with fields that may still be unparsed.
#[derive(Serialize)]
struct NewBody {
    id: String,
    title: String,
    total: Num,
    opens_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    closes_at: Option<String>,
    coupon: TermsBody,
    pow_bits: Num,
}

#[derive(Serialize)]
struct TermsBody {
    discount: Num,
    currency: String,
    valid_days: Num,
}

/// A reschedule or stock edit (`PatchCampaign`'s shape).
#[derive(Serialize)]
struct EditBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    opens_at: Option<String>,
    total: Num,
}

fn status_name(s: CampaignStatus) -> &'static str {
    match s {
        CampaignStatus::Scheduled => "scheduled",
        CampaignStatus::Open => "open",
        CampaignStatus::SoldOut => "sold out",
        CampaignStatus::Closed => "closed",
    }
}

/// Saves `text` as a file through a temporary object URL.
fn download(name: &str, text: &str) {
    let Some(doc) = web_sys::window().and_then(|w| w.document()) else { return };
    let parts = js_sys::Array::of1(&wasm_bindgen::JsValue::from_str(text));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type("text/csv");
    let Ok(blob) = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts) else { return };
    let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) else { return };
    if let Ok(a) = doc.create_element("a").map(|e| e.unchecked_into::<web_sys::HtmlAnchorElement>()) {
        a.set_href(&url);
        a.set_download(name);
        a.click();
    }
    let _ = web_sys::Url::revoke_object_url(&url);
}

#[component]
pub fn AdminPage(lang: RwSignal<Lang>) -> impl IntoView {
    let _ = lang;
    let token = RwSignal::new(session::load_admin());
    let typed = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let sign_in_error = RwSignal::new(None::<String>);
    // Local mode: the admin token itself. AWS: marketing's user-pool account (group `admin`).
    let identity = RwSignal::new(None::<IdentityConfig>);
    spawn_local(async move { identity.set(Some(session::identity().await)) });

    let sign_in = move || {
        let typed = typed.get_untracked().trim().to_owned();
        let secret = password.get_untracked();
        let Some(provider) = identity.get_untracked() else { return };
        spawn_local(async move {
            let t = match provider {
                IdentityConfig::DevTokens => typed,
                IdentityConfig::Cognito { endpoint, client_id } => {
                    match session::cognito_sign_in(&endpoint, &client_id, &typed, &secret).await {
                        Ok(s) => s.token,
                        Err(f) => return sign_in_error.set(Some(f.message())),
                    }
                }
            };
            // The token is tried on an admin route: a customer's account is told so here (403).
            match Call::get("/api/admin/campaigns?limit=1").token(Some(&t)).json::<AdminCampaignPage>().await {
                Ok(_) => {
                    password.set(String::new());
                    session::save_admin(Some(&t));
                    token.set(Some(t));
                    sign_in_error.set(None);
                }
                Err(f) => sign_in_error.set(Some(f.message())),
            }
        });
    };

    view! {
        <h1>"Marketing"</h1>
        {move || match token.get() {
            // One form; only the credentials asked for depend on the identity provider.
            None => identity.get().map(|provider| view! {
                <form class="sign-in" on:submit=move |ev| { ev.prevent_default(); sign_in(); }>
                    {match provider {
                        IdentityConfig::DevTokens => view! {
                            <label for="admin-token">"Admin token (local mode: the contents of <data-dir>/admin-token)"</label>
                            <input id="admin-token" data-testid="admin-token" type="password" autocomplete="off"
                                prop:value=move || typed.get() on:input=move |ev| typed.set(event_target_value(&ev)) />
                        }.into_any(),
                        IdentityConfig::Cognito { .. } => view! {
                            <label for="admin-email">"Email (an account in the user pool's admin group)"</label>
                            <input id="admin-email" data-testid="admin-email" type="email" autocomplete="username"
                                prop:value=move || typed.get() on:input=move |ev| typed.set(event_target_value(&ev)) />
                            <label for="admin-password">"Password"</label>
                            <input id="admin-password" data-testid="admin-password" type="password" autocomplete="current-password"
                                prop:value=move || password.get() on:input=move |ev| password.set(event_target_value(&ev)) />
                        }.into_any(),
                    }}
                    <button type="submit" data-testid="admin-sign-in">"Sign in"</button>
                    <p class="field-error" data-testid="admin-sign-in-error">{move || sign_in_error.get()}</p>
                </form>
            }).into_any(),
            Some(t) => view! {
                <button type="button" class="link" on:click=move |_| { session::save_admin(None); token.set(None); }>"Sign out"</button>
                <Dashboard token=t />
            }.into_any(),
        }}
    }
}

#[component]
fn Dashboard(token: String) -> impl IntoView {
    let campaigns = RwSignal::new(Vec::<AdminCampaign>::new());
    let rates = RwSignal::new(Vec::<(String, Vec<f64>)>::new());
    let list_error = RwSignal::new(None::<String>);
    let token = StoredValue::new(token);

    // Live figures: the admin list once a second; claims/s from successive issued counts.
    let last = StoredValue::new((Vec::<(String, u64)>::new(), 0.0f64));
    // One list request at a time: on a slow link a tick that finds the last one still out skips,
    // rather than piling requests onto the API it is watching.
    let in_flight = StoredValue::new(false);
    let refresh = move || {
        if in_flight.get_value() {
            return;
        }
        in_flight.set_value(true);
        spawn_local(async move {
            let t = token.get_value();
            let answer =
                Call::get("/api/admin/campaigns?limit=200").token(Some(&t)).fresh().json::<AdminCampaignPage>().await;
            in_flight.set_value(false);
            match answer {
                Ok(a) => {
                    let now = a.received_ms;
                    last.update_value(|(prev, at)| {
                        let secs = ((now - *at) / 1000.0).max(0.001);
                        rates.update(|r| {
                            for c in &a.value.campaigns {
                                if let Some((_, before)) = prev.iter().find(|(id, _)| *id == c.campaign.id) {
                                    // A handful of campaigns: a Vec is smaller WASM than a HashMap.
                                    let at = match r.iter().position(|(id, _)| *id == c.campaign.id) {
                                        Some(i) => i,
                                        None => {
                                            r.push((c.campaign.id.clone(), Vec::new()));
                                            r.len() - 1
                                        }
                                    };
                                    let v = &mut r[at].1;
                                    v.push(c.issued.saturating_sub(*before) as f64 / secs);
                                    if v.len() > CHART_POINTS {
                                        v.remove(0);
                                    }
                                }
                            }
                        });
                        *prev = a.value.campaigns.iter().map(|c| (c.campaign.id.clone(), c.issued)).collect();
                        *at = now;
                    });
                    campaigns.set(a.value.campaigns);
                    list_error.set(None);
                }
                Err(f) => list_error.set(Some(f.message())),
            }
        });
    };
    refresh();
    let _ = set_interval_with_handle(refresh, Duration::from_secs(1));

    // The rows are built again only when this changes (a Memo: equal lists notify nobody).
    let ids = Memo::new(move |_| campaigns.with(|v| v.iter().map(|c| c.campaign.id.clone()).collect::<Vec<_>>()));
    let edits = Edits::new();
    view! {
        <LivePanel token=token.get_value() />
        <CreateForm token=token.get_value() on_created=Callback::new(move |()| refresh()) />
        <h2>"Campaigns"</h2>
        <p class="field-error">{move || list_error.get()}</p>
        <table class="campaign-table">
            <thead><tr>
                <th>"id"</th><th>"title"</th><th>"status"</th><th>"opens (local)"</th>
                <th>"issued"</th><th>"remaining"</th><th>"ledger"</th><th>"ticket"</th><th>"claims/s"</th><th>"actions"</th>
            </tr></thead>
            <tbody>
                {move || ids.get().into_iter().map(|id| view! {
                    <Row id=id campaigns=campaigns token=token.get_value() rates=rates edits=edits
                        on_change=Callback::new(move |()| refresh()) />
                }).collect_view()}
            </tbody>
        </table>
    }
}

/// Whole milliseconds and hundredths, without a float formatter (kilobytes of WASM).
fn ms_text(ms: f64) -> String {
    let hundredths = (ms * 100.0).round().max(0.0) as u64;
    format!("{}.{:02} ms", hundredths / 100, hundredths % 100)
}

/// The opening second as the server sees it (`/api/admin/live`, the server's own metrics):
/// claims per second by outcome over the last minute, their p99, stock left, the ledger's lag,
/// the breaker. Polled once a second, one request at a time. On AWS the figures are CloudWatch's
/// (404 here): the panel says where to look.
#[component]
fn LivePanel(token: String) -> impl IntoView {
    let live = RwSignal::new(None::<LiveView>);
    let elsewhere = RwSignal::new(None::<String>);
    let token = StoredValue::new(token);
    let in_flight = StoredValue::new(false);
    let poll = move || {
        if in_flight.get_value() || elsewhere.get_untracked().is_some() {
            return;
        }
        in_flight.set_value(true);
        spawn_local(async move {
            let t = token.get_value();
            let answer = Call::get("/api/admin/live").token(Some(&t)).fresh().json::<LiveView>().await;
            in_flight.set_value(false);
            match answer {
                Ok(a) => live.set(Some(a.value)),
                Err(f) if f.status() == Some(404) => elsewhere.set(Some(f.message())),
                Err(_) => {}
            }
        });
    };
    poll();
    let _ = set_interval_with_handle(poll, Duration::from_secs(1));

    // The last minute, per outcome group: issued, sold out, refused (everything else).
    let series = move || {
        live.with(|l| {
            let Some(l) = l else { return (Vec::new(), Vec::new(), Vec::new()) };
            let recent = &l.seconds[l.seconds.len().saturating_sub(CHART_POINTS)..];
            let count = |s: &firstcome_wire::LiveSecond, pick: &dyn Fn(&str) -> bool| {
                s.claims.iter().filter(|(k, _)| pick(k)).map(|(_, n)| *n as f64).sum::<f64>()
            };
            (
                recent.iter().map(|s| count(s, &|k| k == "issued")).collect(),
                recent.iter().map(|s| count(s, &|k| k == "sold_out")).collect(),
                recent.iter().map(|s| count(s, &|k| k != "issued" && k != "sold_out")).collect(),
            )
        })
    };
    let total = move |pick: fn(&str) -> bool| {
        live.with(|l| {
            l.as_ref().map_or(0, |l| {
                l.seconds.iter().flat_map(|s| s.claims.iter()).filter(|(k, _)| pick(k)).map(|(_, n)| *n).sum::<u64>()
            })
        })
    };
    let p99 = move || {
        live.with(|l| {
            l.as_ref()
                .and_then(|l| l.seconds.iter().rev().find_map(|s| s.p99_ms))
                .map_or_else(|| "–".to_owned(), ms_text)
        })
    };
    let remaining = move || {
        live.with(|l| {
            l.as_ref().map_or_else(String::new, |l| {
                l.remaining.iter().map(|(id, n)| format!("{id}: {n}")).collect::<Vec<_>>().join(", ")
            })
        })
    };

    view! {
        <section class="live" data-testid="live">
            <h2>"Live (server metrics, last 5 minutes)"</h2>
            {move || match elsewhere.get() {
                Some(m) => view! { <p data-testid="live-elsewhere">{m}</p> }.into_any(),
                None => {
                    let (issued, sold_out, refused) = series();
                    view! {
                        <div class="live-chart">
                            {chart(&[(issued, "issued"), (sold_out, "sold-out"), (refused, "refused")])}
                        </div>
                        <dl class="live-figures">
                            <dt>"issued"</dt><dd data-testid="live-issued">{move || total(|k| k == "issued").to_string()}</dd>
                            <dt>"sold out"</dt><dd data-testid="live-sold-out">{move || total(|k| k == "sold_out").to_string()}</dd>
                            <dt>"refused"</dt><dd data-testid="live-refused">{move || total(|k| k != "issued" && k != "sold_out").to_string()}</dd>
                            <dt>"p99 (last second with claims)"</dt><dd data-testid="live-p99">{p99}</dd>
                            <dt>"remaining"</dt><dd data-testid="live-remaining">{remaining}</dd>
                            <dt>"ledger lag"</dt><dd data-testid="live-lag">{move || live.with(|l| l.as_ref().map_or(0, |l| l.ledger_lag_seconds.round() as u64)).to_string() + " s"}</dd>
                            <dt>"breaker"</dt><dd data-testid="live-breaker">{move || live.with(|l| l.as_ref().map_or_else(String::new, |l| l.breaker.clone()))}</dd>
                            <dt>"in flight"</dt><dd data-testid="live-in-flight">{move || live.with(|l| l.as_ref().map_or(0, |l| l.in_flight)).to_string()}</dd>
                        </dl>
                    }
                    .into_any()
                }
            }}
        </section>
    }
}

/// Claims per second, one line per outcome group, over the last minute (whole pixels).
fn chart(lines: &[(Vec<f64>, &'static str)]) -> impl IntoView + use<> {
    let (w, h) = (360.0, 80.0);
    let max = lines.iter().flat_map(|(p, _)| p.iter().copied()).fold(1.0f64, f64::max);
    let step = w / (CHART_POINTS - 1) as f64;
    let polylines: Vec<_> = lines
        .iter()
        .map(|(points, class)| {
            // The newest second at the right edge, however few there are yet.
            let offset = CHART_POINTS.saturating_sub(points.len());
            let coords: Vec<String> = points
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{},{}", ((offset + i) as f64 * step) as u32, (h - v / max * h) as u32))
                .collect();
            view! { <polyline class=*class points=coords.join(" ") fill="none" stroke="currentColor" stroke-width="1.5" /> }
        })
        .collect();
    view! {
        <svg width="360" height="80" viewBox="0 0 360 80" role="img"
            aria-label=format!("claims per second over the last minute, peak {}", max.round() as u64)>
            {polylines}
        </svg>
    }
}

/// A tiny claims-per-second line chart.
fn sparkline(points: &[f64]) -> impl IntoView + use<> {
    let max = points.iter().copied().fold(1.0f64, f64::max);
    let (w, h) = (120.0, 24.0);
    let step = w / (CHART_POINTS - 1) as f64;
    let coords: Vec<String> =
        // Whole pixels: float formatting would add kilobytes of WASM for nothing visible.
        points.iter().enumerate().map(|(i, v)| format!("{},{}", (i as f64 * step) as u32, (h - v / max * h) as u32)).collect();
    let last = points.last().copied().unwrap_or(0.0).round() as u64;
    view! {
        <svg width="120" height="24" viewBox="0 0 120 24" role="img" aria-label=format!("{last} claims per second")>
            <polyline points=coords.join(" ") fill="none" stroke="currentColor" stroke-width="1.5" />
        </svg>
        <span>{format!(" {last}")}</span>
    }
}

/// What the rows show beyond the campaigns themselves, held by the dashboard so that it outlives
/// the rows: they are built again when the list's ids change (a campaign created or gone), not
/// on every refresh; a keyed `<For>` did the same at 2 KiB gzip more WASM.
#[derive(Clone, Copy)]
struct Edits {
    /// The open editor: which campaign, and the version seen when it was opened (an edit that
    /// landed elsewhere meanwhile comes back as the API's version conflict). One at a time.
    editing: RwSignal<Option<(String, u64)>>,
    new_opens: RwSignal<String>,
    new_total: RwSignal<String>,
    /// The last action's answer, beside the campaign it was about.
    message: RwSignal<Option<(String, String)>>,
}

impl Edits {
    fn new() -> Self {
        Self {
            editing: RwSignal::new(None),
            new_opens: RwSignal::new(String::new()),
            new_total: RwSignal::new(String::new()),
            message: RwSignal::new(None),
        }
    }
}

/// One campaign's row, fed by the live list, so a refresh updates the figures without closing
/// an edit in progress.
#[component]
fn Row(
    id: String,
    campaigns: RwSignal<Vec<AdminCampaign>>,
    token: String,
    rates: RwSignal<Vec<(String, Vec<f64>)>>,
    edits: Edits,
    on_change: Callback<()>,
) -> impl IntoView {
    let token = StoredValue::new(token);
    let id_store = StoredValue::new(id.clone());
    let row = Memo::new(move |_| campaigns.with(|v| v.iter().find(|c| c.campaign.id == id_store.get_value()).cloned()));
    let Edits { editing, new_opens, new_total, message } = edits;
    let say = move |text: String| message.set(Some((id_store.get_value(), text)));
    let my_version = move || editing.with(|e| e.as_ref().filter(|(i, _)| *i == id_store.get_value()).map(|(_, v)| *v));
    let status = move || row.with(|r| r.as_ref().map(|c| c.campaign.status));

    let end_now = Callback::new(move |()| {
        let id = id_store.get_value();
        let confirmed = web_sys::window()
            .and_then(|w| w.confirm_with_message(&format!("End campaign {id} now? Nobody can claim after this.")).ok())
            .unwrap_or(false);
        if !confirmed {
            return;
        }
        spawn_local(async move {
            let path = format!("/api/admin/campaigns/{id}/end");
            let t = token.get_value();
            match Call::post(&path).token(Some(&t)).json::<AdminCampaign>().await {
                Ok(_) => {
                    say("ended".into());
                    on_change.run(());
                }
                Err(f) => say(f.message()),
            }
        });
    });
    let csv = move |_| {
        let id = id_store.get_value();
        spawn_local(async move {
            let path = format!("/api/admin/campaigns/{id}/coupons.csv");
            let t = token.get_value();
            match Call::get(&path).token(Some(&t)).text().await {
                Ok(text) => download(&format!("{id}-winners.csv"), &text),
                Err(f) => say(f.message()),
            }
        });
    };
    let open_editor = Callback::new(move |()| {
        if my_version().is_some() {
            editing.set(None);
            return;
        }
        if let Some(c) = row.get_untracked() {
            new_opens.set(String::new());
            new_total.set(c.campaign.total.to_string());
            editing.set(Some((c.campaign.id, c.version)));
        }
    });
    let save = move |_| {
        let Some(version) = untrack(my_version) else { return };
        let id = id_store.get_value();
        let body = to_json(&EditBody {
            opens_at: local_to_utc(&new_opens.get_untracked()),
            total: number(&new_total.get_untracked()),
        });
        spawn_local(async move {
            let path = format!("/api/admin/campaigns/{id}");
            let t = token.get_value();
            let if_match = format!("\"{version}\"");
            let call = Call {
                method: Method::Patch,
                body: Some(body),
                if_match: Some(&if_match),
                ..Call::get(&path).token(Some(&t))
            };
            match call.json::<AdminCampaign>().await {
                Ok(_) => {
                    editing.set(None);
                    say("saved".into());
                    on_change.run(());
                }
                // A lost race or a campaign that opened meanwhile: say so, in the API's words.
                Err(f) => say(error_text(&f)),
            }
        });
    };

    let testid = |what: &str| format!("{what}-{id}");
    let (t_edit, t_end, t_opens, t_total, t_save) =
        (testid("edit"), testid("end"), testid("edit-opens-at"), testid("edit-total"), testid("save"));
    let field = move |f: fn(&AdminCampaign) -> String| move || row.with(|r| r.as_ref().map(f).unwrap_or_default());
    view! {
        <tr data-testid=testid("row")>
            <td><a href=format!("/e/{id}")>{id.clone()}</a></td>
            <td>{field(|c| c.campaign.title.clone())}</td>
            <td data-testid=testid("status")>{field(|c| status_name(c.campaign.status).to_owned())}</td>
            <td>{field(|c| local_text(c.campaign.opens_at))}</td>
            <td data-testid=testid("issued")>{field(|c| c.issued.to_string())}</td>
            <td data-testid=testid("remaining")>{field(|c| c.campaign.remaining.to_string())}</td>
            <td data-testid=testid("ledger")>{field(|c| c.ledger_written.to_string())}</td>
            <td data-testid=testid("ticket")>{field(|c| c.campaign.ticket.as_ref().map_or("off".into(), |t| format!("{} bits", t.bits)))}</td>
            <td>{move || rates.with(|r| sparkline(r.iter().find(|(id, _)| *id == id_store.get_value()).map(|(_, v)| v.as_slice()).unwrap_or(&[])))}</td>
            <td>
                // Hidden rather than mounted and unmounted: the same for the user, less WASM.
                <button type="button" data-testid=t_edit hidden=move || status() != Some(CampaignStatus::Scheduled)
                    on:click=move |_| open_editor.run(())>"Edit"</button>
                <button type="button" data-testid=t_end
                    hidden=move || !matches!(status(), Some(CampaignStatus::Open | CampaignStatus::SoldOut))
                    on:click=move |_| end_now.run(())>"End now"</button>
                <button type="button" data-testid=testid("csv") on:click=csv>"Winners CSV"</button>
                <div class="edit" hidden=move || my_version().is_none()>
                        <label>"New opening (local) " <input type="datetime-local" step="1" data-testid=t_opens.clone()
                            prop:value=move || new_opens.get() on:input=move |ev| new_opens.set(event_target_value(&ev)) /></label>
                        <span class="utc">{move || local_to_utc(&new_opens.get()).map(|u| format!("= {u}"))}</span>
                        <label>" Stock " <input inputmode="numeric" data-testid=t_total.clone()
                            prop:value=move || new_total.get() on:input=move |ev| new_total.set(event_target_value(&ev)) /></label>
                        <button type="button" data-testid=t_save.clone() on:click=save>"Save"</button>
                    </div>
                <p class="row-message" data-testid=testid("message") role="status">{move || message.with(|m| m.as_ref().filter(|(i, _)| *i == id_store.get_value()).map(|(_, t)| t.clone()))}</p>
            </td>
        </tr>
    }
}

/// The fields of the create form, in the API's names (so its `field` lands beside the input).
const FIELDS: [(&str, &str); 9] = [
    ("id", "Id (a-z, 0-9, -)"),
    ("title", "Title"),
    ("total", "Stock"),
    ("coupon.discount", "Discount"),
    ("coupon.currency", "Currency"),
    ("coupon.valid_days", "Valid days"),
    ("opens_at", "Opens (your time)"),
    ("closes_at", "Closes (optional, your time)"),
    ("pow_bits", "Anti-bot ticket (bits; 0 = off)"),
];

/// What a customer's browser should spend on a claim ticket at T0.
const TICKET_TARGET_MS: f64 = 100.0;

#[component]
fn CreateForm(token: String, on_created: Callback<()>) -> impl IntoView {
    // One signal per field, in FIELDS order.
    let values: Vec<RwSignal<String>> = FIELDS.iter().map(|_| RwSignal::new(String::new())).collect();
    let index = |f: &str| FIELDS.iter().position(|(name, _)| *name == f).expect("a known field");
    values[index("coupon.currency")].set("KRW".into());
    values[index("coupon.valid_days")].set("30".into());
    let values = StoredValue::new(values);
    // The API blames one field at a time: (field, message).
    let errors = RwSignal::new(None::<(String, String)>);
    let general = RwSignal::new(None::<String>);
    let token = StoredValue::new(token);
    let get = move |f: &str| values.with_value(|v| v[index(f)].get_untracked());

    // Measure this browser's hash rate once the form has painted, and propose the difficulty
    // that costs about TICKET_TARGET_MS here (unless marketing typed a value meanwhile).
    let proposal = RwSignal::new(None::<(u8, f64)>);
    let bits_field = values.with_value(|v| v[index("pow_bits")]);
    spawn_local(async move {
        sleep(200.0).await;
        let rate = crate::ticket::hashes_per_ms(60.0);
        let bits = firstcome_ticket::bits_for(rate, TICKET_TARGET_MS);
        proposal.set(Some((bits, rate)));
        if bits_field.get_untracked().trim().is_empty() {
            bits_field.set(bits.to_string());
        }
    });

    let submit = move || {
        let closes = get("closes_at");
        let body = to_json(&NewBody {
            id: get("id").trim().to_owned(),
            title: get("title"),
            total: number(&get("total")),
            opens_at: instant(&get("opens_at")),
            closes_at: (!closes.trim().is_empty()).then(|| instant(&closes)),
            coupon: TermsBody {
                discount: number(&get("coupon.discount")),
                currency: get("coupon.currency").trim().to_owned(),
                valid_days: number(&get("coupon.valid_days")),
            },
            pow_bits: match get("pow_bits").trim() {
                "" => Num::N(0),
                bits => number(bits),
            },
        });
        spawn_local(async move {
            let t = token.get_value();
            let call = Call { body: Some(body), ..Call::post("/api/admin/campaigns").token(Some(&t)) };
            match call.json::<AdminCampaign>().await {
                Ok(a) => {
                    errors.set(None);
                    general.set(Some(format!("created {}", a.value.campaign.id)));
                    on_created.run(());
                }
                Err(f) => {
                    let blamed = f.field().map(str::to_owned).filter(|b| FIELDS.iter().any(|(name, _)| name == b));
                    match blamed {
                        Some(field) => {
                            errors.set(Some((field, f.message())));
                            general.set(None);
                        }
                        None => {
                            errors.set(None);
                            general.set(Some(error_text(&f)));
                        }
                    }
                }
            }
        });
    };

    view! {
        <h2>"New campaign"</h2>
        <form class="create" on:submit=move |ev| { ev.prevent_default(); submit(); }>
            {FIELDS.iter().map(|(field, label)| {
                let field = *field;
                let signal = values.with_value(|v| v[index(field)]);
                let testid = format!("new-{}", field.replace(['.', '_'], "-"));
                let kind = if field.ends_with("_at") { "datetime-local" } else { "text" };
                view! {
                    <div class="field">
                        <label for=testid.clone()>{*label}</label>
                        <input id=testid.clone() data-testid=testid.clone() type=kind step="1"
                            aria-invalid=move || errors.with(|e| e.as_ref().is_some_and(|(f, _)| f == field)).to_string()
                            prop:value=move || signal.get() on:input=move |ev| signal.set(event_target_value(&ev)) />
                        {(field == "pow_bits").then(|| view! {
                            <span class="utc" data-testid="pow-proposal">{move || proposal.get().map(|(bits, rate)| format!(
                                "proposed {bits}: about {:.0} ms in this browser ({:.0} hashes/ms); each step doubles it",
                                2f64.powi(i32::from(bits)) / rate, rate
                            ))}</span>
                        })}
                        {field.ends_with("_at").then(|| view! {
                            <span class="utc" data-testid=format!("{testid}-utc")>{move || local_to_utc(&signal.get()).map(|u| format!("UTC {u}"))}</span>
                        })}
                        <span class="field-error" role="alert" data-testid=format!("error-{field}")>
                            {move || errors.with(|e| e.as_ref().filter(|(f, _)| f == field).map(|(_, m)| m.clone()))}
                        </span>
                    </div>
                }
            }).collect_view()}
            <button type="submit" data-testid="create">"Create"</button>
            <p role="status" data-testid="create-status">{move || general.get()}</p>
        </form>
    }
}

fn error_text(f: &Failure) -> String {
    match f.code() {
        Some(code) => format!("{}: {}", code.as_str(), f.message()),
        None => f.message(),
    }
}

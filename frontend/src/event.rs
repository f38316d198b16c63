//! `/e/{id}`: the event page. Counts down on the server's clock, unlocks the button at T0
//! without a reload, claims once per click (no double submit), retries overload by itself, and
//! shows a returning winner their coupon instead of a button.

use std::time::Duration;

use firstcome_wire::{Campaign, CampaignStatus, ClaimOutcome, ClaimResponse, Coupon, ErrorCode};
use leptos::prelude::*;
use wasm_bindgen_futures::spawn_local;

use crate::api::{Call, Failure, millis, sleep};
use crate::clock::{ClockSync, countdown};
use crate::i18n::Lang;
use crate::retry::backoff_ms;
use crate::session::{self, Session};
use firstcome_ticket::Nonce;
use firstcome_wire::site::IdentityConfig;

/// Where the customer's claim stands.
#[derive(Debug, Clone, PartialEq)]
enum Claim {
    Idle,
    Pending,
    /// Solving the claim ticket (percent: the chance it would be done by now).
    Solving(u32),
    Retrying {
        network: bool,
        secs: u32,
    },
    Won {
        coupon: Coupon,
        fresh: bool,
    },
    SoldOut,
    NotOpen,
    Closed,
    Failed(String),
}

/// What a sign-in form submission asks for; sign-up and confirmation end signed in when they can.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SignInStep {
    SignIn,
    SignUp,
    /// The code Cognito emailed at sign-up.
    Confirm,
}

/// Timings the browser tests read (`performance.getEntriesByName`): when the campaign is first
/// on screen, and when the button first could be clicked.
const CAMPAIGN_SHOWN: (u8, &str) = (1, "firstcome:campaign-shown");
const CLAIM_ENABLED: (u8, &str) = (2, "firstcome:claim-enabled");

thread_local! {
    static MARKED: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// A `performance` mark (the browser's own timeline), once per page load.
fn mark_once((bit, name): (u8, &str)) {
    if MARKED.with(|m| m.replace(m.get() | bit)) & bit == 0
        && let Some(p) = web_sys::window().and_then(|w| w.performance())
    {
        let _ = p.mark(name);
    }
}

/// Retries of one click before giving up and saying so.
const MAX_TRIES: u32 = 12;

#[component]
pub fn EventPage(id: String, lang: RwSignal<Lang>) -> impl IntoView {
    let campaign = RwSignal::new(None::<Campaign>);
    let missing = RwSignal::new(false);
    let clock = RwSignal::new(ClockSync::default());
    // None until the first answer is timed: before that the device's clock is all there is, and
    // it may be an hour off (the button must not unlock on it, even between two ticks).
    let server_now = RwSignal::new(None::<f64>);
    let session = RwSignal::new(session::load());
    let claim = RwSignal::new(Claim::Idle);
    let poll_note = RwSignal::new(None::<(bool, u32)>);

    // The clock ticks every 50 ms, so the button unlocks within ~50 ms of the server's T0.
    let _ = set_interval_with_handle(
        move || server_now.set(clock.with_untracked(|c| c.server_now(js_sys::Date::now()))),
        Duration::from_millis(50),
    );
    spawn_local(poll(id.clone(), campaign, clock, missing, poll_note));

    // A returning winner sees their coupon on arrival.
    let check_mine = {
        let id = id.clone();
        move |s: Session| {
            let id = id.clone();
            spawn_local(async move {
                let s = renewed(s, session).await;
                let path = format!("/api/campaigns/{id}/claims/me");
                match Call::get(&path).token(Some(&s.token)).fresh().json::<Coupon>().await {
                    Ok(a) => claim.set(Claim::Won { coupon: a.value, fresh: false }),
                    Err(f) if f.status() == Some(401) => {
                        session::save(None);
                        session.set(None);
                    }
                    Err(_) => {}
                }
            });
        }
    };
    if let Some(s) = session.get_untracked() {
        check_mine(s);
    }

    let opens_ms = move || campaign.with(|c| c.as_ref().map(|c| millis(c.opens_at)));
    let is_open_by_clock = move || opens_ms().zip(server_now.get()).is_some_and(|(o, now)| now >= o);
    let status = move || campaign.with(|c| c.as_ref().map(|c| c.status));
    let finished = move || {
        matches!(status(), Some(CampaignStatus::SoldOut | CampaignStatus::Closed))
            || matches!(claim.get(), Claim::SoldOut | Claim::Closed)
    };
    let can_click = move || {
        session.with(Option::is_some)
            && is_open_by_clock()
            && !finished()
            && matches!(claim.get(), Claim::Idle | Claim::NotOpen | Claim::Failed(_))
    };

    let on_claim = {
        let id = id.clone();
        Callback::new(move |()| {
            // Disabled buttons do not fire, but a double click can land before the re-render.
            if !can_click() {
                return;
            }
            let Some(s) = session.get_untracked() else { return };
            claim.set(Claim::Pending);
            spawn_local(claim_with_retries(id.clone(), s, claim, campaign, session));
        })
    };

    let signed_in = Callback::new(move |s: Session| {
        session::save(Some(&s));
        session.set(Some(s.clone()));
        check_mine(s);
    });

    // The live region: one message for whatever changed last.
    let status_text = move || {
        let t = lang.get().text();
        match claim.get() {
            Claim::Pending => return t.claiming.to_owned(),
            Claim::Solving(p) => return (t.solving)(p),
            Claim::Retrying { network: true, secs } => return (t.offline_retrying)(secs),
            Claim::Retrying { network: false, secs } => return (t.busy_retrying)(secs),
            Claim::Won { fresh: true, .. } => return t.issued.to_owned(),
            Claim::Won { fresh: false, .. } => return t.already_issued.to_owned(),
            Claim::SoldOut => return t.sold_out.to_owned(),
            Claim::NotOpen => return t.not_open.to_owned(),
            Claim::Closed => return t.closed.to_owned(),
            Claim::Failed(m) => return (t.failed)(&m),
            Claim::Idle => {}
        }
        if let Some((network, secs)) = poll_note.get() {
            return if network { (t.offline_retrying)(secs) } else { (t.busy_retrying)(secs) };
        }
        match status() {
            None => t.loading.to_owned(),
            Some(CampaignStatus::SoldOut) => t.sold_out.to_owned(),
            Some(CampaignStatus::Closed) => t.closed.to_owned(),
            Some(_) if session.with(Option::is_none) => t.sign_in_first.to_owned(),
            Some(_) if is_open_by_clock() => t.ready.to_owned(),
            Some(_) => t.wait_for_open.to_owned(),
        }
    };

    let remaining = move || {
        campaign.with(|c| {
            c.as_ref().map(|c| {
                let left = if matches!(claim.get(), Claim::SoldOut) { 0 } else { c.remaining };
                (left, c.total)
            })
        })
    };

    view! {
        <Show when=move || !missing.get() fallback=move || view! { <p class="notice">{move || lang.get().text().not_found}</p> }>
            <article class="event">
                <h1>{move || campaign.with(|c| c.as_ref().map(|c| {
                    mark_once(CAMPAIGN_SHOWN);
                    c.title.clone()
                }))}</h1>
                <p class="value" data-testid="discount">
                    {move || campaign.with(|c| c.as_ref().map(|c| (lang.get().text().discount)(c.coupon.discount, &c.coupon.currency)))}
                </p>
                {stock_meter(lang, remaining)}
                {countdown_line(lang, status, is_open_by_clock, move || opens_ms().zip(server_now.get()).map(|(o, now)| o - now))}

                <Show when=move || session.with(Option::is_none)>
                    {sign_in(lang, signed_in)}
                </Show>
                <p class="who">{move || session.get().map(|s| (lang.get().text().signed_in_as)(&s.user))}</p>

                {move || match claim.get() {
                    Claim::Won { coupon, .. } => coupon_card(lang, coupon).into_any(),
                    _ => claim_button(lang, claim, status, can_click, on_claim).into_any(),
                }}

                <p data-testid="status" role="status" aria-live="polite" class="status">{status_text}</p>
            </article>
        </Show>
    }
}

/// Polls the campaign: at most once a second while open, every few seconds (and right at T0)
/// while scheduled, never again once sold out or closed. Every answer re-syncs the clock.
async fn poll(
    id: String,
    campaign: RwSignal<Option<Campaign>>,
    clock: RwSignal<ClockSync>,
    missing: RwSignal<bool>,
    note: RwSignal<Option<(bool, u32)>>,
) {
    let path = format!("/api/campaigns/{id}");
    let mut attempt = 0;
    loop {
        // While counting down, bypass the browser cache: a cached answer's server_time is old.
        let scheduled = campaign.with_untracked(|c| c.as_ref().is_none_or(|c| c.status == CampaignStatus::Scheduled));
        let call = if scheduled { Call::get(&path).fresh() } else { Call::get(&path) };
        match call.json::<Campaign>().await {
            Ok(a) => {
                attempt = 0;
                note.set(None);
                if !a.cached {
                    clock.update(|c| c.add(a.sent_ms, a.received_ms, millis(a.value.server_time)));
                }
                let c = a.value;
                let wait = match c.status {
                    CampaignStatus::SoldOut | CampaignStatus::Closed => None,
                    CampaignStatus::Open => Some(1000.0),
                    CampaignStatus::Scheduled => {
                        let now = js_sys::Date::now();
                        let left = millis(c.opens_at) - clock.with_untracked(|k| k.server_now(now)).unwrap_or(now);
                        Some(left.clamp(100.0, 5000.0))
                    }
                };
                campaign.set(Some(c));
                match wait {
                    Some(ms) => sleep(ms).await,
                    None => return,
                }
            }
            Err(f) if f.status() == Some(404) => {
                missing.set(true);
                return;
            }
            Err(f) => {
                let ms = backoff_ms(attempt, f.retry_after(), js_sys::Math::random()).max(1000.0);
                note.set(Some((f.is_network(), (ms / 1000.0).ceil() as u32)));
                attempt += 1;
                sleep(ms).await;
            }
        }
    }
}

/// The session with a token that will not expire in the next two minutes, also in the signal.
async fn renewed(s: Session, session: RwSignal<Option<Session>>) -> Session {
    let new = session::fresh(s.clone()).await;
    if new != s {
        session.set(Some(new.clone()));
    }
    new
}

/// The claim ticket, when the campaign asks for one: the nonce from the campaign view (re-read
/// until it is out: a view cached just before T0 does not carry it yet), then solved here with
/// progress shown on the button.
async fn ticket(
    id: &str,
    s: &Session,
    campaign: RwSignal<Option<Campaign>>,
    claim: RwSignal<Claim>,
) -> Result<Option<u64>, String> {
    let Some(terms) = campaign.with_untracked(|c| c.as_ref().and_then(|c| c.ticket.clone())) else { return Ok(None) };
    claim.set(Claim::Solving(0));
    let mut nonce = terms.nonce;
    let path = format!("/api/campaigns/{id}");
    for _ in 0..40 {
        if nonce.is_some() {
            break;
        }
        sleep(250.0).await;
        if let Ok(a) = Call::get(&path).fresh().json::<Campaign>().await {
            nonce = a.value.ticket.as_ref().and_then(|t| t.nonce.clone());
            campaign.set(Some(a.value));
        }
    }
    let nonce = nonce.and_then(|n| Nonce::from_hex(&n)).ok_or("the ticket's nonce did not arrive; reload the page")?;
    let user = session::subject(&s.token).ok_or("the sign-in token is unreadable; sign in again")?;
    let n = crate::ticket::solve(terms.bits, id, &user, &nonce, |p| claim.set(Claim::Solving(p))).await;
    claim.set(Claim::Pending);
    Ok(Some(n))
}

/// One click: POST the claim; on overload or a network error, wait (honouring Retry-After,
/// jittered) and try again by itself. A repeat is safe: the server answers the same coupon.
async fn claim_with_retries(
    id: String,
    s: Session,
    claim: RwSignal<Claim>,
    campaign: RwSignal<Option<Campaign>>,
    session: RwSignal<Option<Session>>,
) {
    let path = format!("/api/campaigns/{id}/claims");
    // A token about to expire is renewed before the click is sent, not after a 401 at T0.
    let s = renewed(s, session).await;
    let ticket = match ticket(&id, &s, campaign, claim).await {
        Ok(t) => t,
        Err(message) => {
            claim.set(Claim::Failed(message));
            return;
        }
    };
    for attempt in 0..MAX_TRIES {
        match Call::post(&path).token(Some(&s.token)).ticket(ticket).json::<ClaimResponse>().await {
            Ok(a) => {
                let fresh = a.value.outcome == ClaimOutcome::Issued;
                if fresh {
                    // This coupon came after the last poll's count: the stock line says so at
                    // once (the next poll corrects it either way).
                    campaign.update(|c| {
                        if let Some(c) = c {
                            c.remaining = c.remaining.saturating_sub(1);
                        }
                    });
                }
                claim.set(Claim::Won { coupon: a.value.coupon, fresh });
                return;
            }
            Err(f) if f.is_transient() || f.outcome_unknown() => {
                // The claim may have been issued with its answer lost: look before saying anything
                // (a retry would find the same coupon too, but only after its backoff).
                if f.outcome_unknown()
                    && let Some(coupon) = mine(&id, &s).await
                {
                    claim.set(Claim::Won { coupon, fresh: true });
                    return;
                }
                let ms = backoff_ms(attempt, f.retry_after(), js_sys::Math::random());
                claim.set(Claim::Retrying { network: f.is_network(), secs: (ms / 1000.0).ceil().max(1.0) as u32 });
                sleep(ms).await;
            }
            Err(f) => {
                claim.set(match f.code() {
                    Some(ErrorCode::SoldOut) => {
                        campaign.update(|c| {
                            if let Some(c) = c {
                                c.remaining = 0;
                                c.status = CampaignStatus::SoldOut;
                            }
                        });
                        Claim::SoldOut
                    }
                    Some(ErrorCode::NotOpen) => Claim::NotOpen,
                    Some(ErrorCode::Closed) => Claim::Closed,
                    Some(ErrorCode::Unauthorized) => {
                        session::save(None);
                        session.set(None);
                        Claim::Idle
                    }
                    _ => Claim::Failed(f.message()),
                });
                return;
            }
        }
    }
    // Given up: the claim may still have been issued by one of the tries.
    if let Some(coupon) = mine(&id, &s).await {
        claim.set(Claim::Won { coupon, fresh: true });
        return;
    }
    claim.set(Claim::Failed(Failure::Network("gave up after retrying".into()).message()));
}

/// The user's coupon of this campaign, if the server can say so now.
async fn mine(id: &str, s: &Session) -> Option<Coupon> {
    let path = format!("/api/campaigns/{id}/claims/me");
    Call::get(&path).token(Some(&s.token)).fresh().json::<Coupon>().await.ok().map(|a| a.value)
}

// The page's parts below are plain functions over closures, not `#[component]`s with `Signal`
// props: `Signal::derive` for their props took the customer bundle from 146.5 to 150.6 KiB gzip,
// past its budget (measured with `cargo xtask site`).

/// The remaining stock as a bar and a line.
fn stock_meter(
    lang: RwSignal<Lang>,
    remaining: impl Fn() -> Option<(u64, u32)> + Copy + Send + Sync + 'static,
) -> impl IntoView {
    view! {
        <div class="meter">
            <div class="bar" aria-hidden="true">
                <div class="fill" style:width=move || {
                    remaining().map_or("0%".to_owned(), |(l, t)| format!("{}%", l.saturating_mul(100) / u64::from(t.max(1))))
                }></div>
            </div>
            <p data-testid="remaining">{move || remaining().map(|(l, t)| (lang.get().text().remaining)(l, t))}</p>
        </div>
    }
}

/// Before T0 the time left on the server's clock; from then on the campaign's state, not 00:00:00.
fn countdown_line(
    lang: RwSignal<Lang>,
    status: impl Fn() -> Option<CampaignStatus> + Copy + Send + Sync + 'static,
    open: impl Fn() -> bool + Copy + Send + Sync + 'static,
    left_ms: impl Fn() -> Option<f64> + Copy + Send + Sync + 'static,
) -> impl IntoView {
    view! {
        <p class="countdown">
            <span data-testid="phase">{move || {
                let t = lang.get().text();
                match status() {
                    Some(CampaignStatus::SoldOut) => t.sold_out,
                    Some(CampaignStatus::Closed) => t.closed,
                    _ if open() => t.opened,
                    _ => t.opens_in,
                }
            }}</span>
            " "
            <strong data-testid="countdown">
                {move || if open() { None } else { left_ms().map(countdown) }}
            </strong>
        </p>
    }
}

/// The button: enabled only while a signed-in customer can claim; says why when it is not.
fn claim_button(
    lang: RwSignal<Lang>,
    claim: RwSignal<Claim>,
    status: impl Fn() -> Option<CampaignStatus> + Copy + Send + Sync + 'static,
    can_click: impl Fn() -> bool + Copy + Send + Sync + 'static,
    on_claim: Callback<()>,
) -> impl IntoView {
    view! {
        <button type="button" class="claim" data-testid="claim"
            disabled=move || {
                let enabled = can_click();
                if enabled {
                    mark_once(CLAIM_ENABLED);
                }
                !enabled
            }
            aria-busy=move || matches!(claim.get(), Claim::Pending | Claim::Solving(_) | Claim::Retrying { .. }).to_string()
            on:click=move |_| on_claim.run(())>
            {move || {
                let t = lang.get().text();
                match (claim.get(), status()) {
                    (Claim::Pending | Claim::Solving(_) | Claim::Retrying { .. }, _) => t.claiming,
                    (Claim::SoldOut, _) | (_, Some(CampaignStatus::SoldOut)) => t.claim_sold_out,
                    (Claim::Closed, _) | (_, Some(CampaignStatus::Closed)) => t.claim_closed,
                    _ => t.claim,
                }
            }}
        </button>
    }
}

/// The coupon a customer holds: its code with a copy button, and until when it is valid.
fn coupon_card(lang: RwSignal<Lang>, coupon: Coupon) -> impl IntoView {
    let copied = RwSignal::new(false);
    let code = coupon.code.clone();
    let expires_at = coupon.expires_at;
    view! {
        <section class="coupon" aria-label=move || lang.get().text().your_coupon>
            <h2>{move || lang.get().text().your_coupon}</h2>
            <code data-testid="coupon-code">{coupon.code.clone()}</code>
            <button type="button" data-testid="copy" on:click=move |_| {
                if let Some(w) = web_sys::window() {
                    let _ = w.navigator().clipboard().write_text(&code);
                    copied.set(true);
                }
            }>{move || if copied.get() { lang.get().text().copied } else { lang.get().text().copy }}</button>
            <p data-testid="expires">{move || (lang.get().text().expires)(&crate::i18n::local_datetime(lang.get(), expires_at))}</p>
        </section>
    }
}

/// Signing in: a name in local mode; email and password (and sign-up with the emailed code) on
/// the Cognito user pool. Hands the session to `signed_in`.
fn sign_in(lang: RwSignal<Lang>, signed_in: Callback<Session>) -> impl IntoView {
    // Sign-in: a name in local mode; email and password (and sign-up) on the Cognito user pool.
    let identity = RwSignal::new(None::<IdentityConfig>);
    spawn_local(async move { identity.set(Some(session::identity().await)) });
    let name = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let code = RwSignal::new(String::new());
    let awaiting_code = RwSignal::new(false);
    let sign_in_error = RwSignal::new(None::<String>);
    let done = move |s: Session| {
        sign_in_error.set(None);
        password.set(String::new());
        signed_in.run(s);
    };
    let on_sign_in = Callback::new(move |action: SignInStep| {
        let (typed, secret, emailed) = (name.get_untracked(), password.get_untracked(), code.get_untracked());
        if typed.trim().is_empty() {
            return;
        }
        let Some(provider) = identity.get_untracked() else { return };
        spawn_local(async move {
            let result = match provider {
                IdentityConfig::DevTokens => session::dev_sign_in(&typed).await.map(Some),
                IdentityConfig::Cognito { endpoint, client_id } => {
                    let (e, c) = (endpoint.as_str(), client_id.as_str());
                    let ready = match action {
                        SignInStep::SignUp => session::cognito_sign_up(e, c, &typed, &secret).await,
                        SignInStep::Confirm => session::cognito_confirm(e, c, &typed, &emailed).await.map(|()| true),
                        SignInStep::SignIn => Ok(true),
                    };
                    match ready {
                        Ok(true) => session::cognito_sign_in(e, c, &typed, &secret).await.map(Some),
                        Ok(false) => Ok(None),
                        Err(f) => Err(f),
                    }
                }
            };
            match result {
                Ok(Some(s)) => {
                    awaiting_code.set(false);
                    done(s);
                }
                Ok(None) => {
                    awaiting_code.set(true);
                    sign_in_error.set(None);
                }
                Err(f) => sign_in_error.set(Some(f.message())),
            }
        });
    });

    view! {
        {move || match identity.get() {
            None => ().into_any(),
            Some(IdentityConfig::DevTokens) => view! {
                <form class="sign-in" on:submit=move |ev| { ev.prevent_default(); on_sign_in.run(SignInStep::SignIn); }>
                    <label for="sign-in-name">{move || lang.get().text().sign_in_name}</label>
                    <input id="sign-in-name" data-testid="sign-in-name" autocomplete="username" maxlength="128"
                        prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
                    <button type="submit" data-testid="sign-in">{move || lang.get().text().sign_in}</button>
                    <p class="field-error" data-testid="sign-in-error">{move || sign_in_error.get()}</p>
                </form>
            }.into_any(),
            Some(IdentityConfig::Cognito { .. }) => view! {
                <form class="sign-in" on:submit=move |ev| {
                    ev.prevent_default();
                    on_sign_in.run(if awaiting_code.get_untracked() { SignInStep::Confirm } else { SignInStep::SignIn });
                }>
                    <label for="sign-in-email">{move || lang.get().text().email}</label>
                    <input id="sign-in-email" data-testid="sign-in-email" type="email" autocomplete="username"
                        maxlength="128" prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
                    <label for="sign-in-password">{move || lang.get().text().password}</label>
                    <input id="sign-in-password" data-testid="sign-in-password" type="password"
                        autocomplete="current-password" maxlength="256"
                        prop:value=move || password.get() on:input=move |ev| password.set(event_target_value(&ev)) />
                    <Show when=move || awaiting_code.get()>
                        <p>{move || lang.get().text().code_sent}</p>
                        <label for="confirm-code">{move || lang.get().text().confirm_code}</label>
                        <input id="confirm-code" data-testid="confirm-code" autocomplete="one-time-code" maxlength="16"
                            prop:value=move || code.get() on:input=move |ev| code.set(event_target_value(&ev)) />
                        <button type="submit" data-testid="confirm">{move || lang.get().text().confirm}</button>
                    </Show>
                    <Show when=move || !awaiting_code.get()>
                        <button type="submit" data-testid="sign-in">{move || lang.get().text().sign_in}</button>
                        <button type="button" class="link" data-testid="sign-up" on:click=move |_| on_sign_in.run(SignInStep::SignUp)>
                            {move || lang.get().text().sign_up}
                        </button>
                    </Show>
                    <p class="field-error" data-testid="sign-in-error">{move || sign_in_error.get()}</p>
                </form>
            }.into_any(),
        }}
    }
}

//! `/`: the campaigns open now and coming up, each a link to its event page.

use firstcome_wire::{CampaignList, CampaignStatus};
use leptos::prelude::*;
use wasm_bindgen_futures::spawn_local;

use crate::api::Call;
use crate::i18n::Lang;

#[component]
pub fn Home(lang: RwSignal<Lang>) -> impl IntoView {
    let list = RwSignal::new(None::<Result<CampaignList, String>>);
    spawn_local(async move {
        list.set(Some(
            Call::get("/api/campaigns").json::<CampaignList>().await.map(|a| a.value).map_err(|f| f.message()),
        ));
    });
    view! {
        <h1>{move || lang.get().text().home_title}</h1>
        {move || match list.get() {
            None => view! { <p>{lang.get().text().loading}</p> }.into_any(),
            Some(Err(m)) => view! { <p class="notice">{(lang.get().text().failed)(&m)}</p> }.into_any(),
            Some(Ok(l)) if l.campaigns.is_empty() => view! { <p>{lang.get().text().home_empty}</p> }.into_any(),
            Some(Ok(l)) => view! {
                <ul class="campaigns">
                    {l.campaigns.into_iter().map(|c| {
                        let t = lang.get().text();
                        let badge = if c.status == CampaignStatus::Open { t.open_now } else { t.upcoming };
                        view! {
                            <li>
                                <a href=format!("/e/{}", c.id)>{c.title.clone()}</a>
                                " "<span class="badge">{badge}</span>
                                " "<span>{(t.discount)(c.coupon.discount, &c.coupon.currency)}</span>
                            </li>
                        }
                    }).collect_view()}
                </ul>
            }.into_any(),
        }}
    }
}

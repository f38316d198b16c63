//! firstcome's page: the event page (`/e/{id}`), the list of events (`/`) and the marketing page
//! (`/admin`), one Leptos CSR app served as static files (by `firstcome-local`, or S3/CloudFront).
//! Every API shape comes from `firstcome-wire`. The routes are few and the server falls back to
//! `index.html` for each, so the path is read once at start (plain links navigate). Built as two
//! bundles (features `event` and `admin`) so a customer downloads only the customer pages.

pub mod api;
pub mod clock;
pub mod i18n;
pub mod retry;
pub mod session;
pub mod ticket;

#[cfg(all(target_arch = "wasm32", feature = "admin"))]
mod admin;
#[cfg(all(target_arch = "wasm32", feature = "event"))]
mod event;
#[cfg(all(target_arch = "wasm32", feature = "event"))]
mod home;

/// Which page a path shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    Home,
    Event(String),
    Admin,
    NotFound,
}

impl Page {
    pub fn of(path: &str) -> Self {
        let path = path.trim_end_matches('/');
        match path {
            "" => Page::Home,
            "/admin" => Page::Admin,
            _ => match path.strip_prefix("/e/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Page::Event(id.to_owned()),
                _ => Page::NotFound,
            },
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod app {
    use leptos::prelude::*;
    use wasm_bindgen::prelude::wasm_bindgen;

    use crate::Page;
    use crate::i18n::Lang;

    fn stored_lang() -> Lang {
        let stored = web_sys::window()
            .and_then(|w| w.local_storage().ok().flatten())
            .and_then(|s| s.get_item("firstcome.lang").ok().flatten());
        Lang::from_code(stored.as_deref().unwrap_or("ko"))
    }

    #[component]
    fn App() -> impl IntoView {
        let lang = RwSignal::new(stored_lang());
        Effect::new(move |_| {
            let l = lang.get();
            if let Some(doc) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.document_element()) {
                let _ = doc.set_attribute("lang", l.code());
            }
            if let Some(s) = web_sys::window().and_then(|w| w.local_storage().ok().flatten()) {
                let _ = s.set_item("firstcome.lang", l.code());
            }
        });
        let path = web_sys::window().and_then(|w| w.location().pathname().ok()).unwrap_or_default();
        let page = match Page::of(&path) {
            #[cfg(feature = "event")]
            Page::Home => view! { <crate::home::Home lang=lang /> }.into_any(),
            #[cfg(feature = "event")]
            Page::Event(id) => view! { <crate::event::EventPage id=id lang=lang /> }.into_any(),
            #[cfg(feature = "admin")]
            Page::Admin => view! { <crate::admin::AdminPage lang=lang /> }.into_any(),
            // A page this bundle does not carry (index.html picks the bundle by path) or none at all.
            _ => view! { <p class="notice">{move || lang.get().text().not_found}</p> }.into_any(),
        };
        view! {
            <header>
                <a href="/" class="brand">"firstcome"</a>
                <button type="button" data-testid="lang-toggle" on:click=move |_| lang.update(|l| *l = l.other())>
                    {move || lang.get().text().toggle}
                </button>
            </header>
            <main>{page}</main>
        }
    }

    #[wasm_bindgen(start)]
    pub fn start() {
        leptos::mount::mount_to_body(App);
    }
}

#[cfg(test)]
mod tests {
    use super::Page;

    #[test]
    fn paths_pick_pages() {
        assert_eq!(Page::of("/"), Page::Home);
        assert_eq!(Page::of(""), Page::Home);
        assert_eq!(Page::of("/admin/"), Page::Admin);
        assert_eq!(Page::of("/e/spring-sale"), Page::Event("spring-sale".into()));
        assert_eq!(Page::of("/e/"), Page::NotFound);
        assert_eq!(Page::of("/e/a/b"), Page::NotFound);
        assert_eq!(Page::of("/nope"), Page::NotFound);
    }
}

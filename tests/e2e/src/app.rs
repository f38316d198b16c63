//! `TestApp`: the local service in this process on a free port, with typed calls over real HTTP
//! that return the API's own wire types, so a test reads `coupon.code`, not a JSON path.

use std::path::{Path, PathBuf};

use firstcome_wire::{AdminCampaign, AdminCampaignPage, ClaimResponse, Coupon, CreateCampaign, ErrorBody};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Client;

/// An answer: its status and its body, read as the type the API documents for a success, or as
/// the error body otherwise.
pub type Answer<T> = (u16, Result<T, ErrorBody>);

/// A running `firstcome-local` (the same `start` and `run` as the binary) on 127.0.0.1, port 0.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The same address, for tests that speak raw TCP.
    pub addr: std::net::SocketAddr,
    pub data_dir: PathBuf,
    /// The admin token the server wrote into its data dir.
    pub admin: String,
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    /// Starts the service with `config` (see `firstcome_local::Config::new` for the defaults).
    pub async fn spawn(config: firstcome_local::Config) -> Self {
        let data_dir = config.data_dir.clone();
        let local = firstcome_local::start(config).await.expect("the local service starts");
        let admin = std::fs::read_to_string(&local.admin_token_path).expect("an admin token").trim().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        let url = format!("http://{addr}");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(firstcome_local::run(listener, local, async move {
            let _ = stopped.await;
        }));
        Self { url, addr, data_dir, admin, client: Client::new(), stop: Some(stop), task: Some(task) }
    }

    /// Shuts down as the binary does on SIGTERM (in-flight requests finish, the store flushes)
    /// and waits until it has.
    pub async fn stop(self) {
        assert!(self.stop_within(std::time::Duration::from_secs(60)).await, "the server stops within a minute");
    }

    /// Shuts down and waits at most `limit`; false if the server was still running then.
    pub async fn stop_within(mut self, limit: std::time::Duration) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.task.take() else { return true };
        match tokio::time::timeout(limit, task).await {
            Ok(done) => {
                done.expect("the server task does not panic").expect("the server stops cleanly");
                true
            }
            Err(_) => false,
        }
    }

    /// A customer's token, signed with the server's own secret (as a sign-in would give).
    pub fn user_token(&self, user: &str) -> String {
        user_token(&self.data_dir, user)
    }

    pub async fn create_campaign(&self, campaign: &CreateCampaign) -> Answer<AdminCampaign> {
        let body = serde_json::to_value(campaign).expect("plain data serialises");
        let answer = self.client.post(&self.api("admin/campaigns"), Some(&self.admin), Some(&body)).await;
        typed(answer.expect("the server answers"))
    }

    /// `user` claims a coupon of `campaign`.
    pub async fn claim(&self, campaign: &str, user: &str) -> Answer<ClaimResponse> {
        self.claim_as(campaign, &self.user_token(user)).await
    }

    /// A claim with a given bearer token.
    pub async fn claim_as(&self, campaign: &str, token: &str) -> Answer<ClaimResponse> {
        let answer = self.client.post(&self.api(&format!("campaigns/{campaign}/claims")), Some(token), None).await;
        typed(answer.expect("the server answers"))
    }

    /// `user`'s coupon of `campaign` (`claims/me`).
    pub async fn my_claim(&self, campaign: &str, user: &str) -> Answer<Coupon> {
        let token = self.user_token(user);
        let answer = self.client.get(&self.api(&format!("campaigns/{campaign}/claims/me")), Some(&token)).await;
        typed(answer.expect("the server answers"))
    }

    /// The campaign as marketing sees it: exact `issued`, `ledger_written`, `version`.
    pub async fn admin_view(&self, campaign: &str) -> Answer<AdminCampaign> {
        let answer = self.client.get(&self.api(&format!("admin/campaigns/{campaign}")), Some(&self.admin)).await;
        typed(answer.expect("the server answers"))
    }

    /// The first page of campaigns, by id.
    pub async fn admin_list(&self) -> Answer<AdminCampaignPage> {
        let answer = self.client.get(&self.api("admin/campaigns"), Some(&self.admin)).await;
        typed(answer.expect("the server answers"))
    }

    /// Polls the admin view until `ledger_written` reaches `expected` (10 s at most).
    pub async fn wait_for_ledger(&self, campaign: &str, expected: u64) -> AdminCampaign {
        for _ in 0..200 {
            if let (200, Ok(v)) = self.admin_view(campaign).await
                && v.ledger_written == expected
            {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the ledger of {campaign} did not reach {expected}");
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/{path}", self.url)
    }
}

/// A customer's token for a server whose data dir is `dir` (signed with its `jwt-secret`).
pub fn user_token(dir: &Path, user: &str) -> String {
    let secret = std::fs::read_to_string(dir.join("jwt-secret")).expect("the server's jwt-secret");
    firstcome_api::sign_hs256(secret.trim().as_bytes(), user, None, time::Duration::hours(1))
}

fn typed<T: DeserializeOwned>((status, body): (u16, Value)) -> Answer<T> {
    let parsed = if (200..300).contains(&status) {
        Ok(T::deserialize(&body)
            .unwrap_or_else(|e| panic!("a {status} answer that is not the documented type ({e}): {body}")))
    } else {
        Err(ErrorBody::deserialize(&body)
            .unwrap_or_else(|e| panic!("a {status} answer that is not an error body ({e}): {body}")))
    };
    (status, parsed)
}

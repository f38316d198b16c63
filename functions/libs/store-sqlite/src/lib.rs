//! `SqliteStore`: every store port on one embedded SQLite database in a data dir.
//!
//! Decisions (stock, dedup, seq) are made in memory under a per-campaign lock and queued, in
//! seq order, to a single writer thread that commits them in groups with one fsync each
//! (`writer`). An `issued` answer waits for that commit. At start the in-memory state is
//! rebuilt from the database, so a `kill -9` loses nothing that was answered.

mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use async_trait::async_trait;
use firstcome_core::{
    Campaign, CampaignId, CampaignStore, ClaimStore, Coupon, CouponCode, EndOutcome, IssuanceRecord, LedgerStore,
    LedgerWrite, Outbox, Status, StoreClaim, StoreError, UserId,
};
use parking_lot::{Mutex, RwLock};
use rusqlite::Connection;
use time::OffsetDateTime;
use tokio::sync::{oneshot, watch};

use writer::{ClaimRow, Cmd};

/// A campaign's winners map is sized from its stock at its first claim in this process (a map
/// resizing under the lock stalls every claim behind it), but capped so a 10M campaign does not
/// reserve it all at once. At load only what is on disk is reserved: campaigns that never open
/// (or ended long ago) cost nothing.
const PRESIZE_CAP: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("sqlite")]
    Sqlite(#[from] rusqlite::Error),
    #[error("commit failed")]
    Commit(#[source] Arc<rusqlite::Error>),
    #[error("data dir {path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("data dir {0} is in use by another firstcome process")]
    Locked(PathBuf),
    #[error("a commit failed earlier; restart to rebuild state from disk")]
    Poisoned,
    #[error("the writer thread has stopped")]
    WriterGone,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Highest seq of a campaign known to be on disk; `failed` once a commit has failed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Durability {
    pub upto: u32,
    pub failed: bool,
}

struct Winner {
    code: CouponCode,
    seq: u32,
    issued_at: OffsetDateTime,
}

/// One campaign's state, under its lock: the stored campaign (claims and edits are decided on
/// this copy, never a caller's), its winners and how far its coupons are durable.
struct CampaignClaims {
    campaign: Campaign,
    issued: u32,
    winners: HashMap<UserId, Winner>,
    presized: bool,
    durable: Arc<watch::Sender<Durability>>,
}

impl CampaignClaims {
    fn new(campaign: Campaign, loaded: usize) -> Self {
        Self {
            campaign,
            issued: 0,
            winners: HashMap::with_capacity(loaded),
            presized: false,
            durable: Arc::new(watch::Sender::new(Durability::default())),
        }
    }

    fn coupon(&self, user: &UserId, w: &Winner) -> Coupon {
        self.campaign.coupon_for(user.clone(), w.code, w.seq, w.issued_at)
    }
}

struct Shared {
    claims: RwLock<HashMap<CampaignId, Arc<Mutex<CampaignClaims>>>>,
    tx: mpsc::Sender<Cmd>,
    reader: Mutex<Connection>,
    poisoned: Arc<AtomicBool>,
    /// When a batch holding claims last committed, in ms since `opened`.
    last_claim_commit: Arc<AtomicU64>,
    opened: std::time::Instant,
    stop_checkpoints: Arc<AtomicBool>,
    /// Held (flock) while this process owns the data dir; released by `close` or the last drop.
    lock: Mutex<Option<File>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop_checkpoints.store(true, Ordering::Relaxed);
    }
}

/// The embedded store. Cheap to clone; all clones share one database, one writer thread.
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE campaigns (id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
-- Keyed by (campaign, seq) only, so a batch of claims appends to one end of one B-tree. One
-- coupon per user and distinct codes are enforced by the in-memory winners map under the
-- campaign lock and re-verified here at every start (`load_claims`): unique indexes on random
-- keys (user id, code) would dirty a page per claim and multiply the WAL written per commit.
CREATE TABLE coupons (
    campaign_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    code TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, seq)
) WITHOUT ROWID;
-- Undelivered issuance records: a pointer to the coupon. The record itself is derived from the
-- coupon and its campaign's terms, which are frozen once the campaign opens.
CREATE TABLE outbox (id INTEGER PRIMARY KEY, campaign_id TEXT NOT NULL, seq INTEGER NOT NULL, UNIQUE (campaign_id, seq));
CREATE TABLE ledger (
    code TEXT PRIMARY KEY,
    campaign_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    discount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX ledger_by_campaign ON ledger (campaign_id);
";

fn open_conn(path: &Path) -> Result<Connection, SqliteError> {
    let conn = Connection::open(path)?;
    // WAL + synchronous=FULL: every commit fsyncs the WAL before returning (invariant 3),
    // and readers never block the writer.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Checkpoints run on their own thread (`checkpoints`), never inside a claim's commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

/// Copies the WAL back into the database in the background. A checkpoint inside the writer's
/// commit would stall every claim of that batch (tens of ms during a bulk issuance); PASSIVE
/// checkpoints on another connection run alongside the writer instead.
fn checkpoints(path: PathBuf, stop: Arc<AtomicBool>) {
    let Ok(conn) = open_conn(&path) else { return };
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(500));
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "background checkpoint failed");
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir` and rebuilds in-memory state from it.
    /// Only one process may hold a data dir: two would each believe they own the stock.
    pub fn open(dir: &Path) -> Result<Self, SqliteError> {
        let io = |source| SqliteError::Io { path: dir.to_owned(), source };
        // Coupon codes are bearer secrets: the data dir is the owner's alone.
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        let lock =
            File::options().create(true).truncate(false).write(true).mode(0o600).open(dir.join("lock")).map_err(io)?;
        if lock.try_lock().is_err() {
            return Err(SqliteError::Locked(dir.to_owned()));
        }
        let path = dir.join("firstcome.sqlite3");
        if !path.exists() {
            create_database(&path)?;
        }
        for file in [path.clone(), wal_path(&path, "-wal"), wal_path(&path, "-shm")] {
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            }
        }
        let conn = open_conn(&path)?;
        check_schema(&conn, &path)?;
        let claims = load_claims(&conn)?;
        let reader = open_conn(&path)?;
        let (tx, rx) = mpsc::channel();
        let poisoned = Arc::new(AtomicBool::new(false));
        let last_claim_commit = Arc::new(AtomicU64::new(0));
        let opened = std::time::Instant::now();
        let (flag, last) = (poisoned.clone(), last_claim_commit.clone());
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                writer::run(conn, rx, flag, move || last.store(opened.elapsed().as_millis() as u64, Ordering::Relaxed))
            })
            .map_err(io)?;
        let stop_checkpoints = Arc::new(AtomicBool::new(false));
        let stop = stop_checkpoints.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoints(path, stop))
            .map_err(io)?;
        Ok(Self {
            shared: Arc::new(Shared {
                claims: RwLock::new(claims),
                tx,
                reader: Mutex::new(reader),
                poisoned,
                last_claim_commit,
                opened,
                stop_checkpoints,
                lock: Mutex::new(Some(lock)),
            }),
        })
    }

    /// Commits everything queued so far, stops the writer and the checkpoints, and releases the
    /// data dir. Claims after this fail. The release is explicit rather than left to the last
    /// clone's drop: a clone can outlive shutdown by a moment (a connection task dropping its
    /// router after signalling it is done), and a restart in that moment must not find the dir
    /// locked. Nothing can write once the writer has stopped, so releasing here is safe.
    pub async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.shared.tx.send(Cmd::Close { reply }).is_ok() {
            let _ = rx.await;
        }
        self.shared.stop_checkpoints.store(true, Ordering::Relaxed);
        self.shared.lock.lock().take();
    }

    /// Whether claims committed within `window`: lets background work (the ledger drain) yield
    /// the disk and the CPU to a rush of claims.
    pub fn claims_busy(&self, window: std::time::Duration) -> bool {
        let last = self.shared.last_claim_commit.load(Ordering::Relaxed);
        last > 0 && (self.shared.opened.elapsed().as_millis() as u64).saturating_sub(last) < window.as_millis() as u64
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            Err(StoreError::unavailable(SqliteError::Poisoned))
        } else {
            Ok(())
        }
    }

    fn campaign_claims(&self, id: &CampaignId) -> Option<Arc<Mutex<CampaignClaims>>> {
        self.shared.claims.read().get(id).cloned()
    }

    fn send<T>(
        &self,
        cmd: Cmd,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> impl Future<Output = Result<T, StoreError>> {
        let sent = self.shared.tx.send(cmd).map_err(|_| StoreError::unavailable(SqliteError::WriterGone));
        async move {
            sent?;
            rx.await.map_err(|_| StoreError::unavailable(SqliteError::WriterGone))?
        }
    }

    /// New terms for a campaign, called under its claims' lock (`st`). The write is queued before
    /// any claim decided on the new terms can be, so none of those is durable before it; if it
    /// fails the writer poisons the store and a restart reloads the old terms. Returns the
    /// receiver answered once the write is committed.
    fn replace_terms(
        &self,
        st: &mut CampaignClaims,
        next: Campaign,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let body = serde_json::to_string(&next).map_err(StoreError::unavailable)?;
        let (reply, rx) = oneshot::channel();
        self.shared
            .tx
            .send(Cmd::UpdateCampaign { id: next.id.to_string(), body, reply })
            .map_err(|_| StoreError::unavailable(SqliteError::WriterGone))?;
        st.campaign = next;
        Ok(rx)
    }

    /// Runs a read on the reader connection off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, SqliteError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared.reader.lock()))
            .await
            .map_err(StoreError::unavailable)?
            .map_err(StoreError::unavailable)
    }
}

fn wal_path(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates the schema in a file beside `path` and renames it into place once committed, so a
/// database file that exists always had its schema: an empty or schema-less file found later is
/// damage (or someone else's file), never "a fresh start" that would forget every coupon.
fn create_database(path: &Path) -> Result<(), SqliteError> {
    let io = |source| SqliteError::Io { path: path.to_owned(), source };
    let fresh = wal_path(path, ".new");
    for leftover in [fresh.clone(), wal_path(&fresh, "-wal"), wal_path(&fresh, "-shm")] {
        match std::fs::remove_file(&leftover) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
    }
    // SQLite gives the -wal and -shm files the database file's mode.
    File::options().write(true).create_new(true).mode(0o600).open(&fresh).map_err(io)?;
    let mut conn = open_conn(&fresh)?;
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    conn.close().map_err(|(_, e)| e)?;
    std::fs::rename(&fresh, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// Refuses a database this build did not create, in whole: wrong version, or a table missing.
fn check_schema(conn: &Connection, path: &Path) -> Result<(), SqliteError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != SCHEMA_VERSION {
        return Err(SqliteError::Corrupt(format!(
            "{} has schema version {version}; this build reads version {SCHEMA_VERSION} (an empty or foreign file has 0)",
            path.display()
        )));
    }
    for table in ["campaigns", "coupons", "outbox", "ledger"] {
        let n: i64 =
            conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |r| {
                r.get(0)
            })?;
        if n != 1 {
            return Err(SqliteError::Corrupt(format!("{}: table {table} is missing", path.display())));
        }
    }
    Ok(())
}

fn load_claims(conn: &Connection) -> Result<HashMap<CampaignId, Arc<Mutex<CampaignClaims>>>, SqliteError> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| SqliteError::Corrupt(format!("{what}: {e}"));
    let mut totals = HashMap::new();
    let mut stmt = conn.prepare("SELECT body FROM campaigns")?;
    for body in stmt.query_map([], |r| r.get::<_, String>(0))? {
        let c: Campaign = serde_json::from_str(&body?).map_err(|e| corrupt("campaign", &e))?;
        let count: i64 =
            conn.query_row("SELECT COUNT(*) FROM coupons WHERE campaign_id = ?1", [c.id.as_str()], |r| r.get(0))?;
        if count > i64::from(c.total) {
            return Err(corrupt(&format!("campaign {}", c.id), &format!("{count} coupons but total {}", c.total)));
        }
        totals.insert(c.id.clone(), CampaignClaims::new(c, count as usize));
    }
    let mut codes = std::collections::HashSet::new();
    let mut stmt =
        conn.prepare("SELECT campaign_id, seq, user_id, code, issued_at FROM coupons ORDER BY campaign_id, seq")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id = CampaignId::parse(&r.get::<_, String>(0)?).map_err(|e| corrupt("coupon campaign id", &e))?;
        let seq: u32 = r.get(1)?;
        let user = UserId::parse(&r.get::<_, String>(2)?).map_err(|e| corrupt("coupon user id", &e))?;
        let code = CouponCode::parse(&r.get::<_, String>(3)?).map_err(|e| corrupt("coupon code", &e))?;
        let issued_at = from_millis(r.get(4)?).map_err(|e| corrupt("coupon issued_at", &e))?;
        let state =
            totals.get_mut(&id).ok_or_else(|| SqliteError::Corrupt(format!("coupon for unknown campaign {id}")))?;
        // Rows come in seq order, so any hole shows up here.
        if seq != state.issued + 1 {
            return Err(SqliteError::Corrupt(format!("campaign {id}: seq {seq} follows {}", state.issued)));
        }
        state.issued = seq;
        if !codes.insert(code) {
            return Err(SqliteError::Corrupt(format!("code {code} was issued twice")));
        }
        if let Some(first) = state.winners.insert(user.clone(), Winner { code, seq, issued_at }) {
            return Err(SqliteError::Corrupt(format!("campaign {id}: user {user} holds seq {} and {seq}", first.seq)));
        }
    }
    Ok(totals
        .into_iter()
        .map(|(id, s)| {
            s.durable.send_modify(|d| d.upto = s.issued);
            (id, Arc::new(Mutex::new(s)))
        })
        .collect())
}

fn from_millis(ms: i64) -> Result<OffsetDateTime, time::error::ComponentRange> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
}

/// Returns `coupon` once its seq is on disk, or fails if the commit carrying it failed.
async fn once_durable(coupon: Coupon, mut rx: watch::Receiver<Durability>) -> Result<Coupon, StoreError> {
    let seq = coupon.seq;
    let d = *rx
        .wait_for(|d| d.upto >= seq || d.failed)
        .await
        .map_err(|_| StoreError::unavailable(SqliteError::WriterGone))?;
    if d.upto >= seq { Ok(coupon) } else { Err(StoreError::unavailable(SqliteError::Poisoned)) }
}

/// What a claim must wait for after its decision was made under the lock.
enum Wait {
    /// Our own new coupon: the writer answers once its batch is committed.
    Issued(Coupon, oneshot::Receiver<Result<(), StoreError>>),
    /// Someone (an earlier click of this user) holds a coupon that may still be in flight.
    Existing(Coupon, watch::Receiver<Durability>),
}

#[async_trait]
impl ClaimStore for SqliteStore {
    async fn claim_with_ticket(
        &self,
        campaign: &CampaignId,
        user: &UserId,
        code: CouponCode,
        ticket: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<StoreClaim, StoreError> {
        self.check()?;
        let state = self.campaign_claims(campaign).ok_or(StoreError::NotFound)?;
        let wait = {
            let mut st = state.lock();
            if let Some(w) = st.winners.get(user) {
                Wait::Existing(st.coupon(user, w), st.durable.subscribe())
            } else {
                match st.campaign.window_at(now) {
                    Status::Scheduled => return Ok(StoreClaim::NotOpen),
                    Status::Closed => return Ok(StoreClaim::Closed),
                    _ => {}
                }
                if st.issued >= st.campaign.total {
                    return Ok(StoreClaim::SoldOut);
                }
                // Against the terms under this lock, not the engine's copy (one hash).
                if let Err(e) = st.campaign.check_ticket(user, ticket) {
                    return Ok(StoreClaim::Ticket(e));
                }
                if !st.presized {
                    let want = (st.campaign.total as usize).min(PRESIZE_CAP).saturating_sub(st.winners.len());
                    st.winners.reserve(want);
                    st.presized = true;
                }
                let seq = st.issued + 1;
                let c = st.campaign.coupon_for(user.clone(), code, seq, now);
                let (reply, rx) = oneshot::channel();
                let row = ClaimRow { coupon: c.clone(), durable: st.durable.clone(), reply };
                // Sent under the campaign lock so the writer sees this campaign's seqs in order.
                self.shared.tx.send(Cmd::Claim(row)).map_err(|_| StoreError::unavailable(SqliteError::WriterGone))?;
                st.issued = seq;
                st.winners.insert(user.clone(), Winner { code, seq, issued_at: now });
                Wait::Issued(c, rx)
            }
        };
        match wait {
            Wait::Issued(c, rx) => {
                rx.await.map_err(|_| StoreError::unavailable(SqliteError::WriterGone))??;
                Ok(StoreClaim::Issued(c))
            }
            Wait::Existing(c, rx) => Ok(StoreClaim::Existing(once_durable(c, rx).await?)),
        }
    }

    async fn coupon_of(&self, campaign: &CampaignId, user: &UserId) -> Result<Option<Coupon>, StoreError> {
        self.check()?;
        let Some(state) = self.campaign_claims(campaign) else { return Ok(None) };
        let (c, rx) = {
            let st = state.lock();
            let Some(w) = st.winners.get(user) else { return Ok(None) };
            if w.seq <= st.durable.borrow().upto {
                return Ok(Some(st.coupon(user, w)));
            }
            (st.coupon(user, w), st.durable.subscribe())
        };
        // Never show a coupon that could still vanish in a crash.
        Ok(Some(once_durable(c, rx).await?))
    }

    async fn issued(&self, campaign: &CampaignId) -> Result<u64, StoreError> {
        Ok(self.campaign_claims(campaign).map_or(0, |s| u64::from(s.lock().durable.borrow().upto)))
    }

    async fn coupons(&self, campaign: &CampaignId, after: u32, limit: usize) -> Result<Vec<Coupon>, StoreError> {
        let Some(state) = self.campaign_claims(campaign) else { return Ok(Vec::new()) };
        // Terms come from memory (frozen once anything was issued); rows from disk, where only
        // committed, so durable, coupons are.
        let terms = state.lock().campaign.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, user_id, code, issued_at FROM coupons WHERE campaign_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let mut rows = stmt.query(rusqlite::params![terms.id.as_str(), after, limit as i64])?;
            let corrupt = |what: &str, e: &dyn std::fmt::Display| SqliteError::Corrupt(format!("{what}: {e}"));
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let user = UserId::parse(&r.get::<_, String>(1)?).map_err(|e| corrupt("coupon user id", &e))?;
                let code = CouponCode::parse(&r.get::<_, String>(2)?).map_err(|e| corrupt("coupon code", &e))?;
                let issued_at = from_millis(r.get(3)?).map_err(|e| corrupt("coupon issued_at", &e))?;
                out.push(terms.coupon_for(user, code, r.get(0)?, issued_at));
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl CampaignStore for SqliteStore {
    async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError> {
        self.check()?;
        let (reply, rx) = oneshot::channel();
        let body = serde_json::to_string(campaign).map_err(StoreError::unavailable)?;
        self.send(Cmd::InsertCampaign { id: campaign.id.to_string(), body, reply }, rx).await?;
        // Only once it is durable do claims see it.
        self.shared
            .claims
            .write()
            .entry(campaign.id.clone())
            .or_insert_with(|| Arc::new(Mutex::new(CampaignClaims::new(campaign.clone(), 0))));
        Ok(())
    }

    async fn update_campaign(&self, next: &Campaign, expected: u64, now: OffsetDateTime) -> Result<(), StoreError> {
        self.check()?;
        let state = self.campaign_claims(&next.id).ok_or(StoreError::NotFound)?;
        let rx = {
            // The claims' lock: no claim can be decided between this check and the new terms.
            let mut st = state.lock();
            if st.campaign.version != expected {
                return Err(StoreError::VersionMismatch { current: st.campaign.version });
            }
            if st.campaign.window_at(now) != Status::Scheduled || st.issued > 0 {
                return Err(StoreError::Frozen);
            }
            self.replace_terms(&mut st, next.clone())?
        };
        rx.await.map_err(|_| StoreError::unavailable(SqliteError::WriterGone))?
    }

    async fn end_campaign(&self, id: &CampaignId, now: OffsetDateTime) -> Result<EndOutcome, StoreError> {
        self.check()?;
        let state = self.campaign_claims(id).ok_or(StoreError::NotFound)?;
        let (ended, rx) = {
            // The claims' lock: every claim decided after this sees the new closes_at; claims
            // still in flight were decided before the end and are answered as issued.
            let mut st = state.lock();
            let outcome = st.campaign.end_at(now);
            let EndOutcome::Ended(next) = outcome else { return Ok(outcome) };
            (next.clone(), self.replace_terms(&mut st, next)?)
        };
        rx.await.map_err(|_| StoreError::unavailable(SqliteError::WriterGone))??;
        Ok(EndOutcome::Ended(ended))
    }

    async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, StoreError> {
        Ok(self.campaign_claims(id).map(|s| s.lock().campaign.clone()))
    }

    async fn campaigns(&self, after: Option<&CampaignId>, limit: usize) -> Result<Vec<Campaign>, StoreError> {
        let all: Vec<Arc<Mutex<CampaignClaims>>> = {
            let map = self.shared.claims.read();
            let mut ids: Vec<&CampaignId> = map.keys().filter(|id| after.is_none_or(|a| *id > a)).collect();
            ids.sort_unstable();
            ids.into_iter().take(limit).map(|id| map[id].clone()).collect()
        };
        Ok(all.iter().map(|s| s.lock().campaign.clone()).collect())
    }
}

#[async_trait]
impl LedgerStore for SqliteStore {
    async fn append(&self, record: &IssuanceRecord) -> Result<LedgerWrite, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Append { record: record.clone(), reply }, rx).await
    }

    async fn ledger_written(&self, campaign: &CampaignId) -> Result<u64, StoreError> {
        let id = campaign.to_string();
        self.read(move |conn| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM ledger WHERE campaign_id = ?1")?
                .query_row([id], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn pending(&self, limit: usize) -> Result<Vec<IssuanceRecord>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.campaign_id, c.seq, c.user_id, c.code, c.issued_at, k.body
                 FROM outbox o
                 JOIN coupons c ON c.campaign_id = o.campaign_id AND c.seq = o.seq
                 JOIN campaigns k ON k.id = o.campaign_id
                 ORDER BY o.id LIMIT ?1",
            )?;
            let mut rows = stmt.query([limit as i64])?;
            let mut campaigns: HashMap<String, Campaign> = HashMap::new();
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let id: String = r.get(0)?;
                if !campaigns.contains_key(&id) {
                    let body: String = r.get(5)?;
                    let c = serde_json::from_str(&body).map_err(|e| SqliteError::Corrupt(format!("campaign: {e}")))?;
                    campaigns.insert(id.clone(), c);
                }
                let campaign = &campaigns[&id];
                let corrupt = |what: &str| SqliteError::Corrupt(format!("outbox coupon {what}"));
                let coupon = campaign.coupon_for(
                    UserId::parse(&r.get::<_, String>(2)?).map_err(|_| corrupt("user id"))?,
                    CouponCode::parse(&r.get::<_, String>(3)?).map_err(|_| corrupt("code"))?,
                    r.get(1)?,
                    from_millis(r.get(4)?).map_err(|_| corrupt("issued_at"))?,
                );
                out.push(IssuanceRecord::new(campaign, &coupon));
            }
            Ok(out)
        })
        .await
    }

    async fn acknowledge(&self, record: &IssuanceRecord) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Acknowledge { campaign_id: record.campaign_id.to_string(), seq: record.seq, reply }, rx).await
    }
}

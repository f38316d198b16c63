//! The reference `MemoryStore` passes every contract suite, so a failing adapter is the adapter's bug.

use firstcome_core::testkit::MemoryStore;

async fn fresh() -> ((), MemoryStore) {
    ((), MemoryStore::new())
}

firstcome_core::campaign_store_contract!(fresh());
firstcome_core::claim_store_contract!(fresh());
firstcome_core::ledger_store_contract!(fresh());
firstcome_core::outbox_contract!(fresh());

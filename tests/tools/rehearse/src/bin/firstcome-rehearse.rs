//! `firstcome-rehearse`: parse options, run the rehearsal, print the table; exit 1 on any invariant violation.

use clap::Parser;
use firstcome_rehearse::{Options, rehearse};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let report = rehearse(Options::parse()).await?;
    print!("{}", report.table());
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

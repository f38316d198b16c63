//! `firstcome-report`: the post-event report of one campaign (`cargo xtask report --campaign ID`).

use clap::Parser;
use firstcome_rehearse::event::{ReportOptions, write_report};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (report, page) = write_report(&ReportOptions::parse()).await?;
    print!("{}", report.text());
    println!("written       {}", page.display());
    Ok(())
}

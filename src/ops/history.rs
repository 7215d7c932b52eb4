//! `sp site history NAME`: every roll-out of a site (the last 50).

use serde::Serialize;

use crate::error::Result;
use crate::site::history::{self, DeployRecord, Outcome};

use super::Ctx;

/// One site's deploy history (`sp site history NAME`), oldest first.
#[derive(Debug, Serialize)]
pub struct HistoryReport {
    pub site: String,
    pub deploys: Vec<DeployRecord>,
}

impl std::fmt::Display for HistoryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.deploys.is_empty() {
            return write!(f, "{}: no deploys recorded yet", self.site);
        }
        writeln!(
            f,
            "{:>4}  {:<20}  {:<6}  {:<10}  {:<11}  {:>6}  {:<12}  IMAGE",
            "N", "TIME", "RESULT", "ACTOR", "WHY", "SECS", "DIGEST"
        )?;
        let mut first = true;
        for r in &self.deploys {
            if !first {
                writeln!(f)?;
            }
            first = false;
            let hex = r.digest().trim_start_matches("sha256:");
            let why = match r.rollback_to {
                Some(n) => format!("{}→{n}", r.reason),
                None => r.reason.clone(),
            };
            write!(
                f,
                "{:>4}  {:<20}  {:<6}  {:<10}  {:<11}  {:>6.1}  {:<12}  {}",
                r.n,
                r.time,
                match r.result {
                    Outcome::Ok => "ok",
                    Outcome::Failed => "FAILED",
                },
                r.actor,
                why,
                r.duration_seconds,
                &hex[..hex.len().min(12)],
                r.image
            )?;
            if let Some(e) = &r.error {
                write!(f, "\n      {e}")?;
            }
        }
        Ok(())
    }
}

/// `sp site history NAME`.
pub fn history(ctx: &Ctx, site: &str) -> Result<HistoryReport> {
    ctx.site(site)?;
    Ok(HistoryReport {
        site: site.to_string(),
        deploys: history::load(&ctx.paths(site).history())?,
    })
}

//! The terminal front-end of the `sp` binary: how an op's notes and progress reach a person.
//! Notes go to stderr (none with `-q`); byte counts become a live line per task, only when
//! stderr is a terminal — so cron mail stays quiet. A task that announced its total
//! ([`Reporter::total`]) gets a bar with percent and ETA, one that did not a spinner.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ops::Reporter;

const SPINNER: &str = "{spinner} {prefix:<24} {bytes:>10} {bytes_per_sec:>12} {elapsed:>4}";
const BAR: &str =
    "{prefix:<24} [{bar:24}] {percent:>3}% {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}";

pub struct Terminal {
    quiet: bool,
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Terminal {
    /// `live`: draw progress lines (stderr is a terminal and the output is for people).
    pub fn new(quiet: bool, live: bool) -> Terminal {
        let multi =
            (live && !quiet).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Terminal {
            quiet,
            multi,
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` on the live line of `label` (made on first use; `f` may ask to drop it);
    /// nothing when no lines are drawn.
    fn with_bar(&self, label: &str, f: impl FnOnce(&ProgressBar, &mut bool)) {
        let Some(multi) = &self.multi else { return };
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let bar = bars.entry(label.to_string()).or_insert_with(|| {
            let b = multi.add(ProgressBar::new_spinner());
            if let Ok(style) = ProgressStyle::with_template(SPINNER) {
                b.set_style(style);
            }
            b.set_prefix(label.to_string());
            b
        });
        let mut remove = false;
        f(bar, &mut remove);
        if remove {
            bars.remove(label);
        }
    }
}

impl Reporter for Terminal {
    fn note(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }

    fn total(&self, label: &str, bytes: u64) {
        self.with_bar(label, |bar, _| {
            if bytes == 0 {
                return;
            }
            if bar.length().is_none() {
                if let Ok(style) = ProgressStyle::with_template(BAR) {
                    bar.set_style(style.progress_chars("=> "));
                }
            }
            bar.set_length(bytes);
        });
    }

    fn progress(&self, label: &str, bytes: u64, done: bool) {
        self.with_bar(label, |bar, remove| {
            // An estimate that fell short grows rather than stick at 100 %.
            if bar.length().is_some_and(|len| bytes > len) {
                bar.set_length(bytes);
            }
            bar.set_position(bytes);
            if done {
                bar.finish_and_clear();
                *remove = true;
            } else {
                bar.tick();
            }
        });
    }
}

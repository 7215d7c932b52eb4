//! The terminal front-end of the `sp` binary: how an op's notes and progress reach a person.
//! Notes go to stderr (none with `-q`); byte counts become a live line per task, only when
//! stderr is a terminal — so cron mail stays quiet.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ops::Reporter;

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

    fn progress(&self, label: &str, bytes: u64, done: bool) {
        let Some(multi) = &self.multi else { return };
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let bar = bars.entry(label.to_string()).or_insert_with(|| {
            let b = multi.add(ProgressBar::new_spinner());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} {prefix:<24} {bytes:>10} {bytes_per_sec:>12} {elapsed:>4}",
            ) {
                b.set_style(style);
            }
            b.set_prefix(label.to_string());
            b
        });
        bar.set_position(bytes);
        if done {
            bar.finish_and_clear();
            bars.remove(label);
        } else {
            bar.tick();
        }
    }
}

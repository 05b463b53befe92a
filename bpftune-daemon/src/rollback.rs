//! Rollback in one place: the decision whether to restore a sysctl bpftune
//! changed (per namespace: restore, leave it because an administrator
//! changed it since, nothing to do, or the namespace is gone) and every
//! message about it, for the three paths that restore or explain: exit
//! rollback (`-R`, [`crate::tuners::rollback_tuner`]), crash-journal
//! recovery ([`crate::journal::Journal::recover`]) and the `-q rollback`
//! reply ([`crate::replies`]). The original's strings are kept where it has
//! them (`Rolling back sysctl values for ...`, the `-q rollback` header and
//! comment lines); what it does not have (skips, namespaces, journal
//! entries of an earlier run) extends them after the original text.

use std::fmt::Display;
use std::io;

use bpftune_core::netns;

use crate::logging;

/// First line of the `-q rollback` reply (the original's).
pub const QUERY_HEADER: &str = "# Summary of rollback operations needed to restore original state for all tuners:";
/// The original's reason line for a restore; `{name}`, `{now}` and
/// `{original}` are filled in by [`rolling_back_line`].
pub const ROLLING_BACK: &str =
    "Rolling back sysctl values for '{name}' from ({now}) to original values ({original})...";
/// Prefix of every rollback line about a value left alone.
pub const NOT_ROLLING_BACK: &str = "Not rolling back sysctl values for";
/// Why a value is left alone: it is not one bpftune wrote.
pub const ADMIN_CHANGED: &str = "so someone else changed it";
/// The namespace of a change no longer exists.
pub const NETNS_GONE: &str = "is gone; nothing to restore";
/// The one sysctl command a `-q rollback` comment line introduces.
pub const SYSCTL_COMMAND: &str = "sysctl -w {name}=\"{original}\"";

/// One value bpftune changed in one namespace: what it was before bpftune
/// first changed it, and the values bpftune wrote since.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub tunable: &'a str,
    pub cookie: u64,
    pub global: bool,
    pub original: &'a str,
    /// Values bpftune wrote there (the current one, or the journal's last
    /// old and new); empty when unknown, and then the value counts as ours.
    pub written: Vec<&'a str>,
    /// Set for a change an earlier run (this pid) left behind.
    pub left_by: Option<u32>,
}

/// What to do with a [`Change`], given the value there now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The value is the original again: nothing to do.
    Unchanged,
    /// Still a value bpftune wrote: put the original back.
    Restore,
    /// Neither the original nor a value bpftune wrote: an administrator
    /// changed it since, so it is theirs now.
    AdminChanged,
}

/// How a restore went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Restored,
    Unchanged,
    AdminChanged,
    NetnsGone,
    Unreadable,
    Failed,
}

/// The same sysctl value, whatever the white space.
pub fn same(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// Values separated by single spaces.
pub fn normal(a: &str) -> String {
    a.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Change<'_> {
    pub fn decide(&self, now: &str) -> Decision {
        if same(now, self.original) {
            Decision::Unchanged
        } else if self.written.is_empty() || self.written.iter().any(|w| same(now, w)) {
            Decision::Restore
        } else {
            Decision::AdminChanged
        }
    }

    /// `global ns` or `netns (cookie N)`.
    pub fn place(&self) -> String {
        ns_label(self.global, self.cookie)
    }
}

/// `global ns` or `netns (cookie N)`, as every rollback line names a place.
pub fn ns_label(global: bool, cookie: u64) -> String {
    if global { "global ns".to_string() } else { format!("netns (cookie {cookie})") }
}

/// The original's `Rolling back ...` line; outside the global namespace it
/// says where, and for an earlier run's change which run.
pub fn rolling_back_line(c: &Change<'_>, now: &str) -> String {
    let mut line = ROLLING_BACK
        .replace("{name}", c.tunable)
        .replace("{now}", &normal(now))
        .replace("{original}", &normal(c.original));
    if !c.global {
        line.push_str(&format!(" in {}", c.place()));
    }
    if let Some(pid) = c.left_by {
        line.push_str(&format!(" (left by bpftune pid {pid} that did not exit cleanly)"));
    }
    line
}

/// A value an administrator changed since bpftune wrote it.
pub fn admin_changed_line(c: &Change<'_>, now: &str) -> String {
    format!(
        "{NOT_ROLLING_BACK} '{}' in {}: it is now ({}), not a value bpftune set, {ADMIN_CHANGED}",
        c.tunable,
        c.place(),
        normal(now)
    )
}

/// The namespace of a change is gone.
pub fn netns_gone_line(c: &Change<'_>) -> String {
    format!("{NOT_ROLLING_BACK} '{}': netns (cookie {}) {NETNS_GONE}", c.tunable, c.cookie)
}

/// The value cannot be read (not a gone namespace).
pub fn unreadable_line(c: &Change<'_>, err: &dyn Display) -> String {
    format!("{NOT_ROLLING_BACK} '{}' in {}: cannot read it: {err}", c.tunable, c.place())
}

/// The write that would restore it failed.
pub fn failed_line(c: &Change<'_>, err: &dyn Display) -> String {
    format!("could not roll back '{}' in {}: {err}", c.tunable, c.place())
}

/// Start without `-R`: an earlier run left this changed.
pub fn left_changed_line(c: &Change<'_>, now: &str) -> String {
    format!(
        "a previous bpftune run (pid {}) left sysctl '{}' changed from ({}) to ({}) in {}; to restore: {} (or start bpftune with -R)",
        c.left_by.unwrap_or(0),
        c.tunable,
        normal(c.original),
        normal(now),
        c.place(),
        sysctl_command(c.tunable, c.original)
    )
}

/// `sysctl -w name="values"`.
pub fn sysctl_command(tunable: &str, original: &str) -> String {
    SYSCTL_COMMAND.replace("{name}", tunable).replace("{original}", &normal(original))
}

/// The `-q rollback` lines for one change: the original's comment line
/// (with the namespace, and the earlier run, where they apply) and the
/// command.
pub fn query_lines(c: &Change<'_>) -> [String; 2] {
    let whose = match c.left_by {
        Some(pid) => format!("changes an earlier bpftune run (pid {pid}) made to"),
        None => "changes to".to_string(),
    };
    let comment = if c.global {
        format!("# To roll back {whose} '{}', run the following as a privileged user in a terminal:", c.tunable)
    } else {
        format!(
            "# To roll back {whose} '{}' in netns (cookie {}), run the following inside that namespace:",
            c.tunable, c.cookie
        )
    };
    [comment, sysctl_command(c.tunable, c.original)]
}

/// Restore one change: given the value read there now, decide, log, and
/// write the original back where it is still bpftune's. `before_write`
/// runs just before the `Rolling back` line (exit rollback logs the
/// scenario there).
pub fn restore(
    c: &Change<'_>,
    now: io::Result<String>,
    before_write: impl FnOnce(),
    write: impl FnOnce(&str) -> io::Result<()>,
) -> Outcome {
    let now = match now {
        Ok(v) => v,
        Err(e) if netns::is_gone_error(&e) => {
            logging::debug(&netns_gone_line(c));
            return Outcome::NetnsGone;
        }
        Err(e) => {
            logging::debug(&unreadable_line(c, &e));
            return Outcome::Unreadable;
        }
    };
    match c.decide(&now) {
        Decision::Unchanged => Outcome::Unchanged,
        Decision::AdminChanged => {
            logging::notice(&admin_changed_line(c, &now));
            Outcome::AdminChanged
        }
        Decision::Restore => {
            before_write();
            logging::notice(&rolling_back_line(c, &now));
            match write(&normal(c.original)) {
                Ok(()) => Outcome::Restored,
                Err(e) => {
                    logging::err(&failed_line(c, &e));
                    Outcome::Failed
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(written: Vec<&'static str>) -> Change<'static> {
        Change {
            tunable: "net.ipv4.tcp_rmem",
            cookie: 9,
            global: false,
            original: "4096 131072  6291456",
            written,
            left_by: None,
        }
    }

    #[test]
    fn decisions() {
        let c = change(vec!["4096 131072 7864320"]);
        assert_eq!(c.decide("4096\t131072 6291456"), Decision::Unchanged);
        assert_eq!(c.decide("4096 131072 7864320"), Decision::Restore);
        assert_eq!(c.decide("4096 131072 1"), Decision::AdminChanged);
        // Unknown writes: anything but the original is ours.
        assert_eq!(change(vec![]).decide("1 2 3"), Decision::Restore);
    }

    #[test]
    fn lines_keep_the_originals_text() {
        let mut c = change(vec![]);
        c.global = true;
        assert_eq!(
            rolling_back_line(&c, "4096 131072 7864320"),
            "Rolling back sysctl values for 'net.ipv4.tcp_rmem' from (4096 131072 7864320) to original values (4096 131072 6291456)..."
        );
        assert_eq!(
            query_lines(&c),
            [
                "# To roll back changes to 'net.ipv4.tcp_rmem', run the following as a privileged user in a terminal:"
                    .to_string(),
                "sysctl -w net.ipv4.tcp_rmem=\"4096 131072 6291456\"".to_string()
            ]
        );
        c.global = false;
        c.left_by = Some(7);
        assert!(
            rolling_back_line(&c, "1")
                .ends_with("... in netns (cookie 9) (left by bpftune pid 7 that did not exit cleanly)")
        );
        assert!(
            query_lines(&c)[0]
                .contains("an earlier bpftune run (pid 7) made to 'net.ipv4.tcp_rmem' in netns (cookie 9)")
        );
        assert!(
            admin_changed_line(&c, "1  2")
                .contains("it is now (1 2), not a value bpftune set, so someone else changed it")
        );
    }

    #[test]
    fn restore_writes_only_what_is_still_ours() {
        let c = change(vec!["5"]);
        let mut wrote = None;
        let o = restore(
            &c,
            Ok("5\n".into()),
            || {},
            |v| {
                wrote = Some(v.to_string());
                Ok(())
            },
        );
        assert_eq!((o, wrote.as_deref()), (Outcome::Restored, Some("4096 131072 6291456")));
        let o = restore(&c, Ok("6".into()), || {}, |_| panic!("no write"));
        assert_eq!(o, Outcome::AdminChanged);
        let gone = Err(io::Error::new(io::ErrorKind::NotFound, netns::NetnsGone("x".into())));
        assert_eq!(restore(&c, gone, || {}, |_| panic!("no write")), Outcome::NetnsGone);
    }
}

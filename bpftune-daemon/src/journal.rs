//! Crash-safe rollback journal (`/var/lib/bpftune/journal`): before the
//! daemon first changes a sysctl in a namespace, the original value is
//! appended and fsynced; every later write appends the value it replaces and
//! the one it writes (and where the namespace is), without fsync (the page
//! cache survives a crash of the daemon, and a reboot resets sysctls anyway;
//! the boot id tells the two apart).
//!
//! Policy:
//! * the next start with `-R` restores what the journal lists, for
//!   namespaces that still exist, before any tuner is loaded, unless the
//!   value is no longer one bpftune wrote (an administrator changed it);
//! * without `-R` it reports what a previous run left changed and keeps the
//!   entries (the earliest original wins), so a later `-R` start, or
//!   `-q rollback`, can still undo them; an entry whose value someone else
//!   changed since is dropped (it is no longer bpftune's doing);
//! * a clean exit with `-R` (after rolling back) clears the journal; a clean
//!   exit without `-R` keeps it as the record of what changed;
//! * entries from a previous boot are dropped: sysctls do not survive one.
//!
//! Format: one JSON object per line (a torn last line after power loss is
//! skipped). The file is rewritten atomically (temp file, fsync, rename,
//! fsync of the directory) at start, when it grows, and when cleared.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bpftune_core::host::{FirstWrite, PlannedWrite};
use bpftune_core::netns::{NetnsHandle, NsTarget};
use bpftune_core::sysctl::{ProcSysctl, SysctlIo};
use serde::{Deserialize, Serialize};

use crate::logging;
use crate::rollback::{self, normal};

/// Where the journal lives.
pub const JOURNAL_PATH: &str = "/var/lib/bpftune/journal";

/// Rewrite (compact) the file when this many records were appended beyond
/// what the live entries need.
const COMPACT_SLACK: usize = 4096;

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Record {
    /// A daemon run started.
    Begin { boot_id: String, pid: u32, global_cookie: u64 },
    /// The value before bpftune first changed `tunable` in `cookie`.
    Orig { tuner: String, tunable: String, cookie: u64, global: bool, value: String },
    /// A write about to happen (old → new), and where the namespace is.
    Set {
        tuner: String,
        tunable: String,
        cookie: u64,
        global: bool,
        #[serde(default)]
        inum: u64,
        #[serde(default)]
        path: Option<String>,
        old: String,
        new: String,
    },
    /// Tuner `tuner` was finalised and rolled back: its entries are done.
    Forget { tuner: String },
    /// The verdict on a change (see [`VerdictRecord`]).
    Verdict(VerdictRecord),
}

/// The verdict on a change (old → new), with the signal's rates per second
/// before and after it, and whether it was reverted. A record of what
/// happened: recovery does not act on it. On disk it is the
/// `"op":"verdict"` line, its fields after the tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    pub tuner: String,
    pub tunable: String,
    pub cookie: u64,
    pub old: String,
    pub new: String,
    pub verdict: String,
    pub signal: String,
    pub before: Option<f64>,
    pub after: Option<f64>,
    pub reverted: bool,
    /// The guard signal (TCP buffer raises: `tcp_rtt`) and its medians
    /// before and after; absent from lines of changes without one (and
    /// from journals written before guards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_before: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_after: Option<f64>,
}

/// What the journal knows about one sysctl in one namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub tuner: String,
    pub tunable: String,
    pub cookie: u64,
    pub global: bool,
    pub original: String,
    pub inum: u64,
    pub path: Option<String>,
    /// The last write: the value it replaced and the value it wrote.
    pub last: Option<(String, String)>,
    /// The last verdict on a change of it (written again when the file is
    /// rewritten).
    pub verdict: Option<VerdictRecord>,
    /// Boot and run the entry was made in.
    pub boot_id: String,
    pub pid: u32,
    pub run_global_cookie: u64,
}

type Key = (String, u64);

/// The journal: its file, and the entries it holds.
pub struct Journal {
    path: PathBuf,
    file: Option<File>,
    entries: BTreeMap<Key, Entry>,
    boot_id: String,
    pid: u32,
    global_cookie: u64,
    appended: usize,
    failed: bool,
}

/// This boot's id.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Parse journal text into entries (later lines update earlier ones; the
/// earliest original wins; unparsable lines are skipped).
fn parse(text: &str) -> (BTreeMap<Key, Entry>, usize) {
    let mut entries: BTreeMap<Key, Entry> = BTreeMap::new();
    let (mut boot, mut pid, mut gcookie) = (String::new(), 0u32, 0u64);
    let mut bad = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let Ok(rec) = serde_json::from_str::<Record>(line) else {
            bad += 1;
            continue;
        };
        match rec {
            Record::Begin { boot_id, pid: p, global_cookie } => {
                boot = boot_id;
                pid = p;
                gcookie = global_cookie;
            }
            Record::Orig { tuner, tunable, cookie, global, value } => {
                entries.entry((tunable.clone(), cookie)).or_insert(Entry {
                    tuner,
                    tunable,
                    cookie,
                    global,
                    original: value,
                    inum: 0,
                    path: None,
                    last: None,
                    verdict: None,
                    boot_id: boot.clone(),
                    pid,
                    run_global_cookie: gcookie,
                });
            }
            Record::Set { tunable, cookie, inum, path, old, new, .. } => {
                if let Some(e) = entries.get_mut(&(tunable, cookie)) {
                    if inum != 0 {
                        e.inum = inum;
                    }
                    if path.is_some() {
                        e.path = path;
                    }
                    e.last = Some((old, new));
                }
            }
            Record::Forget { tuner } => {
                entries.retain(|_, e| !(e.tuner == tuner && e.boot_id == boot));
            }
            Record::Verdict(v) => {
                if let Some(e) = entries.get_mut(&(v.tunable.clone(), v.cookie)) {
                    e.verdict = Some(v);
                }
            }
        }
    }
    (entries, bad)
}

fn to_lines(entries: &BTreeMap<Key, Entry>, begin: &Record) -> String {
    let mut out = String::new();
    let mut push = |r: &Record| {
        if let Ok(s) = serde_json::to_string(r) {
            out.push_str(&s);
            out.push('\n');
        }
    };
    // Entries carried from earlier runs keep their run's framing.
    let mut runs: BTreeMap<(String, u32, u64), Vec<&Entry>> = BTreeMap::new();
    for e in entries.values() {
        runs.entry((e.boot_id.clone(), e.pid, e.run_global_cookie)).or_default().push(e);
    }
    for ((boot_id, pid, global_cookie), list) in runs {
        push(&Record::Begin { boot_id, pid, global_cookie });
        for e in list {
            push(&Record::Orig {
                tuner: e.tuner.clone(),
                tunable: e.tunable.clone(),
                cookie: e.cookie,
                global: e.global,
                value: e.original.clone(),
            });
            if e.last.is_some() || e.path.is_some() {
                let (old, new) = e.last.clone().unwrap_or_default();
                push(&Record::Set {
                    tuner: e.tuner.clone(),
                    tunable: e.tunable.clone(),
                    cookie: e.cookie,
                    global: e.global,
                    inum: e.inum,
                    path: e.path.clone(),
                    old,
                    new,
                });
            }
            if let Some(v) = &e.verdict {
                push(&Record::Verdict(v.clone()));
            }
        }
    }
    push(begin);
    out
}

/// Write `text` to `path` atomically and durably.
fn atomic_write(path: &Path, text: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    // Created on the first write only: a daemon that changes nothing leaves
    // no state behind.
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("journal")));
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Read the journal at `path` (creating its directory), as this run
    /// (`global_cookie` is the daemon's namespace).
    pub fn open(path: &Path, global_cookie: u64) -> io::Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let (entries, bad) = parse(&text);
        if bad > 0 {
            logging::warn(&format!("journal '{}': skipped {bad} unreadable record(s)", path.display()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: None,
            entries,
            boot_id: boot_id(),
            pid: std::process::id(),
            global_cookie,
            appended: 0,
            failed: false,
        })
    }

    /// Entries a previous run left (not this run's).
    pub fn leftovers(&self) -> impl Iterator<Item = &Entry> {
        let pid = self.pid;
        let boot = self.boot_id.clone();
        self.entries.values().filter(move |e| !(e.pid == pid && e.boot_id == boot))
    }

    fn begin(&self) -> Record {
        Record::Begin { boot_id: self.boot_id.clone(), pid: self.pid, global_cookie: self.global_cookie }
    }

    /// Rewrite the file from the entries held, and reopen it for appends.
    fn rewrite(&mut self) -> io::Result<()> {
        self.file = None;
        atomic_write(&self.path, &to_lines(&self.entries, &self.begin()))?;
        self.file = Some(OpenOptions::new().append(true).custom_flags(libc::O_CLOEXEC).open(&self.path)?);
        self.appended = 0;
        Ok(())
    }

    fn append(&mut self, rec: &Record, durable: bool) {
        let line = match serde_json::to_string(rec) {
            Ok(s) => s + "\n",
            Err(_) => return,
        };
        let result = (|| -> io::Result<()> {
            if self.file.is_none() {
                self.rewrite()?;
            }
            let Some(f) = self.file.as_mut() else { return Err(io::Error::other("journal not open")) };
            f.write_all(line.as_bytes())?;
            if durable {
                f.sync_data()?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.appended += 1;
                self.failed = false;
                if self.appended > self.entries.len() * 2 + COMPACT_SLACK {
                    self.compact();
                }
            }
            Err(e) => {
                if !self.failed {
                    logging::err(&format!("could not write rollback journal '{}': {e}", self.path.display()));
                }
                self.failed = true;
                self.file = None;
            }
        }
    }

    /// A namespace is gone (the daemon's registry said so): its entries
    /// have nothing left to restore.
    pub fn forget_netns(&mut self, cookie: u64) {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.global || e.cookie != cookie);
        if self.entries.len() != before {
            self.appended += 1;
        }
    }

    /// Rewrite the file from the live entries (namespaces that are gone
    /// were dropped by [`Journal::forget_netns`]).
    pub fn compact(&mut self) {
        if let Err(e) = self.rewrite() {
            logging::err(&format!("could not rewrite rollback journal '{}': {e}", self.path.display()));
        }
    }

    /// First-write hook: record the original durably.
    pub fn record_original(&mut self, w: &FirstWrite<'_>) {
        let key = (w.tunable.to_string(), w.netns_cookie);
        if self.entries.contains_key(&key) {
            return;
        }
        self.entries.insert(
            key,
            Entry {
                tuner: w.tuner.to_string(),
                tunable: w.tunable.to_string(),
                cookie: w.netns_cookie,
                global: w.global,
                original: normal(w.original),
                inum: 0,
                path: None,
                last: None,
                verdict: None,
                boot_id: self.boot_id.clone(),
                pid: self.pid,
                run_global_cookie: self.global_cookie,
            },
        );
        let rec = Record::Orig {
            tuner: w.tuner.to_string(),
            tunable: w.tunable.to_string(),
            cookie: w.netns_cookie,
            global: w.global,
            value: normal(w.original),
        };
        self.append(&rec, true);
    }

    /// Write hook: record what is about to be written, and where.
    pub fn record_write(&mut self, w: &PlannedWrite<'_>) {
        let (inum, path) = match w.netns {
            Some(h) => (h.inum, Some(h.path.display().to_string())),
            None => (0, None),
        };
        if let Some(e) = self.entries.get_mut(&(w.tunable.to_string(), w.netns_cookie)) {
            if inum != 0 {
                e.inum = inum;
                e.path = path.clone();
            }
            e.last = Some((normal(w.old), normal(w.new)));
        }
        let rec = Record::Set {
            tuner: w.tuner.to_string(),
            tunable: w.tunable.to_string(),
            cookie: w.netns_cookie,
            global: w.global,
            inum,
            path,
            old: normal(w.old),
            new: normal(w.new),
        };
        self.append(&rec, false);
    }

    /// Verdict hook: keep the verdict with the change.
    pub fn record_verdict(&mut self, v: &bpftune_core::evidence::Judgement, reverted: bool) {
        let c = &v.change;
        self.keep_verdict(VerdictRecord {
            tuner: c.tuner.clone(),
            tunable: c.key.tunable.clone(),
            cookie: c.key.cookie,
            old: normal(&c.old),
            new: normal(&c.new),
            verdict: v.verdict.as_str().to_string(),
            signal: c.signal.name().to_string(),
            before: c.before.map(|r| r.per_sec),
            after: v.after.map(|r| r.per_sec),
            reverted,
            guard: c.guard.map(|g| g.name().to_string()),
            guard_before: c.guard_before.map(|r| r.per_sec),
            guard_after: v.guard_after.map(|r| r.per_sec),
        });
    }

    /// Keep a verdict with its entry (if the journal has one) and append it.
    fn keep_verdict(&mut self, v: VerdictRecord) {
        if let Some(e) = self.entries.get_mut(&(v.tunable.clone(), v.cookie)) {
            e.verdict = Some(v.clone());
        }
        self.append(&Record::Verdict(v), false);
    }

    /// A tuner was finalised and rolled back at run time.
    pub fn forget_tuner(&mut self, tuner: &str) {
        let (boot, pid) = (self.boot_id.clone(), self.pid);
        self.entries.retain(|_, e| !(e.tuner == tuner && e.boot_id == boot && e.pid == pid));
        self.append(&Record::Forget { tuner: tuner.to_string() }, true);
    }

    /// Clean exit after rollback: nothing left to undo.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.remove_file();
    }

    /// No entries: no file (it is created again with the next record).
    fn remove_file(&mut self) {
        self.file = None;
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => logging::err(&format!("could not clear rollback journal '{}': {e}", self.path.display())),
        }
    }

    /// Start-up: deal with what earlier runs left. With `restore`, put the
    /// originals back (before any tuner runs) and start a fresh journal;
    /// otherwise report them and keep them. Returns how many were restored.
    ///
    /// `find` names where a namespace is now, by cookie (the daemon's
    /// namespace registry: no walk of `/proc` here).
    pub fn recover(&mut self, restore: bool, find: &mut dyn FnMut(u64) -> Option<NsTarget>) -> usize {
        let stale: Vec<Key> =
            self.entries.iter().filter(|(_, e)| e.boot_id != self.boot_id).map(|(k, _)| k.clone()).collect();
        if !stale.is_empty() {
            logging::notice(&format!(
                "rollback journal: {} entr{} from a previous boot dropped (sysctls were reset by the reboot)",
                stale.len(),
                if stale.len() == 1 { "y" } else { "ies" }
            ));
            for k in stale {
                self.entries.remove(&k);
            }
        }
        let io = ProcSysctl::default();
        let mut restored = 0;
        let mut keep = BTreeMap::new();
        for (key, e) in std::mem::take(&mut self.entries) {
            let written: Vec<&str> = e.last.iter().flat_map(|(old, new)| [old.as_str(), new.as_str()]).collect();
            let mut change = rollback::Change {
                tunable: &e.tunable,
                cookie: e.cookie,
                global: e.global,
                original: &e.original,
                written,
                left_by: Some(e.pid),
            };
            let Some(target) = self.find_target(&e, find) else {
                logging::debug(&rollback::netns_gone_line(&change));
                continue;
            };
            // Where it is now: an entry made in another run's global
            // namespace may be a namespace of ours, and the reverse.
            change.global = matches!(target, NsTarget::Global);
            let now = io.read(&target, &e.tunable);
            if restore {
                if rollback::restore(&change, now, || {}, |v| io.write(&target, &e.tunable, v))
                    == rollback::Outcome::Restored
                {
                    restored += 1;
                }
                continue;
            }
            // Without -R: report what is still bpftune's and keep it.
            let now = match now {
                Ok(v) => v,
                Err(err) => {
                    logging::debug(&rollback::unreadable_line(&change, &err));
                    continue;
                }
            };
            match change.decide(&now) {
                rollback::Decision::Unchanged => {}
                rollback::Decision::AdminChanged => {
                    // No longer bpftune's doing: forget it.
                    logging::debug(&rollback::admin_changed_line(&change, &now));
                }
                rollback::Decision::Restore => {
                    logging::notice(&rollback::left_changed_line(&change, &now));
                    keep.insert(key, e);
                }
            }
        }
        self.entries = keep;
        if self.entries.is_empty() {
            self.remove_file();
        } else if let Err(e) = self.rewrite() {
            logging::err(&format!("could not write rollback journal '{}': {e}", self.path.display()));
        }
        restored
    }

    /// Where an entry's namespace is now, if it still exists.
    fn find_target(&self, e: &Entry, find: &mut dyn FnMut(u64) -> Option<NsTarget>) -> Option<NsTarget> {
        // The global namespace of the run that wrote it is ours (the usual
        // case), or the entry's namespace is ours.
        if (e.global && (e.run_global_cookie == self.global_cookie || e.run_global_cookie == 0))
            || e.cookie == self.global_cookie
        {
            return Some(NsTarget::Global);
        }
        // The recorded path, if it still names the same namespace.
        if let Some(p) = &e.path {
            if e.inum != 0 && fs::metadata(p).map(|m| m.ino()).ok() == Some(e.inum) {
                return Some(NsTarget::Netns(NetnsHandle { cookie: e.cookie, inum: e.inum, path: PathBuf::from(p) }));
            }
        }
        // Any path to it, found by cookie (cookies are unique within a boot).
        find(e.cookie).filter(|t| matches!(t, NsTarget::Netns(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(r: &Record) -> String {
        serde_json::to_string(r).expect("json") + "\n"
    }

    #[test]
    fn earliest_original_wins_and_torn_lines_are_skipped() {
        let mut text = String::new();
        text += &line(&Record::Begin { boot_id: "b".into(), pid: 1, global_cookie: 1 });
        text += &line(&Record::Orig {
            tuner: "t".into(),
            tunable: "net.x".into(),
            cookie: 1,
            global: true,
            value: "60".into(),
        });
        text += &line(&Record::Set {
            tuner: "t".into(),
            tunable: "net.x".into(),
            cookie: 1,
            global: true,
            inum: 0,
            path: None,
            old: "60".into(),
            new: "61".into(),
        });
        text += &line(&Record::Begin { boot_id: "b".into(), pid: 2, global_cookie: 1 });
        text += &line(&Record::Orig {
            tuner: "t".into(),
            tunable: "net.x".into(),
            cookie: 1,
            global: true,
            value: "61".into(),
        });
        text += "{\"op\":\"set\",\"tun";
        let (entries, bad) = parse(&text);
        assert_eq!(bad, 1);
        let e = entries.get(&("net.x".to_string(), 1)).expect("entry");
        assert_eq!(e.original, "60");
        assert_eq!(e.pid, 1);
        assert_eq!(e.last, Some(("60".into(), "61".into())));
    }

    #[test]
    fn forget_drops_that_runs_entries_and_rewrite_round_trips() {
        let mut text = String::new();
        text += &line(&Record::Begin { boot_id: "b".into(), pid: 1, global_cookie: 1 });
        for (tuner, name) in [("a", "net.a"), ("b", "net.b")] {
            text += &line(&Record::Orig {
                tuner: tuner.into(),
                tunable: name.into(),
                cookie: 7,
                global: false,
                value: "1 2 3".into(),
            });
        }
        text += &line(&Record::Set {
            tuner: "b".into(),
            tunable: "net.b".into(),
            cookie: 7,
            global: false,
            inum: 42,
            path: Some("/run/netns/x".into()),
            old: "1 2 3".into(),
            new: "1 2 4".into(),
        });
        text += &line(&Record::Forget { tuner: "a".into() });
        let (entries, _) = parse(&text);
        assert_eq!(entries.len(), 1);
        let again = to_lines(&entries, &Record::Begin { boot_id: "b".into(), pid: 3, global_cookie: 1 });
        let (entries2, bad) = parse(&again);
        assert_eq!(bad, 0);
        assert_eq!(entries, entries2);
        let e = entries2.values().next().expect("entry");
        assert_eq!((e.inum, e.path.as_deref()), (42, Some("/run/netns/x")));
    }

    /// A journal as the daemon wrote it before verdicts were kept as
    /// records: a run's framing, an original, a write and its verdict (a
    /// rate whose shortest form only parses back exactly with
    /// serde_json's `float_roundtrip`).
    const WITH_VERDICT: &str = concat!(
        r#"{"op":"begin","boot_id":"b","pid":1,"global_cookie":1}"#,
        "\n",
        r#"{"op":"orig","tuner":"udp_buffer","tunable":"net.core.rmem_max","cookie":7,"global":false,"value":"212992"}"#,
        "\n",
        r#"{"op":"set","tuner":"udp_buffer","tunable":"net.core.rmem_max","cookie":7,"global":false,"inum":4026532000,"path":"/run/netns/x","old":"212992","new":"266240"}"#,
        "\n",
        r#"{"op":"verdict","tuner":"udp_buffer","tunable":"net.core.rmem_max","cookie":7,"old":"212992","new":"266240","verdict":"helped","signal":"udp_drops","before":15972665.364527375,"after":null,"reverted":false}"#,
        "\n",
    );

    fn temp_journal(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("bpftune-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        (dir.join("journal"), dir)
    }

    #[test]
    fn a_verdict_survives_compaction_unchanged() {
        let (entries, bad) = parse(WITH_VERDICT);
        assert_eq!(bad, 0);
        let v = entries.get(&("net.core.rmem_max".to_string(), 7)).and_then(|e| e.verdict.as_ref()).expect("verdict");
        assert_eq!(
            (v.verdict.as_str(), v.before, v.after, v.reverted),
            ("helped", Some(15972665.364527375), None, false)
        );
        // Rewritten through the daemon's own path: the old lines come back
        // byte for byte, followed by this run's framing.
        let (path, dir) = temp_journal("verdict");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(&path, WITH_VERDICT).expect("write");
        let mut j = Journal::open(&path, 1).expect("open");
        j.compact();
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text, WITH_VERDICT.to_string() + &line(&j.begin()));
        assert_eq!(parse(&text).0, entries);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_verdict_kept_at_run_time_is_written_again_on_rewrite() {
        let (path, dir) = temp_journal("keep");
        let mut j = Journal::open(&path, 1).expect("open");
        j.record_original(&FirstWrite { tuner: "t", tunable: "net.x", netns_cookie: 1, global: true, original: "60" });
        let v = VerdictRecord {
            tuner: "t".into(),
            tunable: "net.x".into(),
            cookie: 1,
            old: "60".into(),
            new: "61".into(),
            verdict: "hurt".into(),
            signal: "listen_drops".into(),
            before: Some(0.1 + 0.2),
            after: Some(9272385.106312785),
            reverted: true,
            guard: Some("tcp_rtt".into()),
            guard_before: Some(41.0),
            guard_after: Some(50.5),
        };
        j.keep_verdict(v.clone());
        // A verdict on a change the journal holds no entry for is appended
        // but not kept.
        j.keep_verdict(VerdictRecord { tunable: "net.y".into(), ..v.clone() });
        j.compact();
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().filter(|l| l.contains(r#""op":"verdict""#)).count(), 1);
        let again = Journal::open(&path, 1).expect("reopen");
        assert_eq!(again.entries, j.entries);
        let kept = again.entries.values().next().and_then(|e| e.verdict.clone());
        assert_eq!(kept, Some(v));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn atomic_write_replaces_file() {
        let dir = std::env::temp_dir().join(format!("bpftune-journal-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("journal");
        atomic_write(&p, "one\n").expect("write");
        atomic_write(&p, "two\n").expect("write");
        assert_eq!(fs::read_to_string(&p).expect("read"), "two\n");
        let _ = fs::remove_dir_all(&dir);
    }
}

//! MeroLink's local journal (`--journal FILE`): process events and STOB errors are appended
//! and fdatasync'd, and a message is confirmed to Motr once its line is on disk, instead of once
//! its Consul transaction commits. Motr holds every unconfirmed message (a whole `m0_ha_msg`,
//! about 24 KiB) and everything after it on its link, so confirming in a fraction of a
//! millisecond instead of a Consul round trip is what keeps a burst, or a slow Consul, out of
//! memory. The records still go to Consul as before; when one is committed (or replaced by a
//! newer event of its process) it is *retired*.
//!
//! The file is JSON lines: `{"seq":N,"event":{..}}` or `{"seq":N,"stob":{..}}` for a record,
//! `{"retired":N}` once record N needs no replay. Retire lines are buffered and written with the
//! next sync (a lost one only makes a record replayed twice, which recording tolerates). When
//! nothing is live the file is emptied; it is rewritten with only the live records when it
//! grows past [`COMPACT_BYTES`]. At start, every record without a retire line is replayed
//! (a torn last line, never synced and so never confirmed, is dropped: Motr sends it again).
use crate::fid::Fid;
use crate::messages::AckKey;
use crate::motr::{LinkId, ProcessEventKind, ProcessType, StobIoError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The journal is rewritten with only its live records beyond this size.
pub const COMPACT_BYTES: u64 = 4 << 20;

/// The link of replayed records (no real link has handle 0): their key is
/// `(REPLAY_LINK, 0, sequence number)`.
pub const REPLAY_LINK: LinkId = LinkId(0);

/// What a journal line records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Event {
        process: Fid,
        kind: ProcessEventKind,
        process_type: ProcessType,
        pid: u64,
    },
    Stob {
        from_process: Option<Fid>,
        error: StobIoError,
    },
}

#[derive(Serialize, Deserialize)]
struct EventLine {
    process: Fid,
    event: String,
    #[serde(rename = "type")]
    process_type: String,
    pid: u64,
}

#[derive(Serialize, Deserialize)]
struct StobLine {
    from: Option<Fid>,
    error: StobIoError,
}

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<EventLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stob: Option<StobLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retired: Option<u64>,
}

const TYPES: [ProcessType; 4] = [
    ProcessType::Other,
    ProcessType::Kernel,
    ProcessType::M0mkfs,
    ProcessType::M0d,
];

impl Entry {
    fn line(&self, seq: u64) -> String {
        let mut l = Line {
            seq: Some(seq),
            event: None,
            stob: None,
            retired: None,
        };
        match self {
            Entry::Event {
                process,
                kind,
                process_type,
                pid,
            } => {
                l.event = Some(EventLine {
                    process: *process,
                    event: kind.motr_name().into(),
                    process_type: process_type.motr_name().into(),
                    pid: *pid,
                })
            }
            Entry::Stob {
                from_process,
                error,
            } => {
                l.stob = Some(StobLine {
                    from: *from_process,
                    error: error.clone(),
                })
            }
        }
        let mut s = serde_json::to_string(&l).expect("a journal line serializes");
        s.push('\n');
        s
    }

    fn of(l: Line) -> Option<Entry> {
        if let Some(e) = l.event {
            return Some(Entry::Event {
                process: e.process,
                kind: ProcessEventKind::from_motr_name(&e.event)?,
                process_type: TYPES
                    .into_iter()
                    .find(|t| t.motr_name() == e.process_type)
                    .unwrap_or(ProcessType::Other),
                pid: e.pid,
            });
        }
        l.stob.map(|s| Entry::Stob {
            from_process: s.from,
            error: s.error,
        })
    }
}

/// The open journal.
pub struct Journal {
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
    next_seq: u64,
    /// Records not retired: their message's key (link, generation, tag) → (sequence number,
    /// line).
    live: HashMap<AckKey, (u64, String)>,
    /// Records appended since the last sync.
    unsynced: Vec<AckKey>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Journal {
    /// Opens (or creates) the journal at `path` and returns the records to replay, in order,
    /// each with its sequence number (their key is `(REPLAY_LINK, 0, seq)`).
    pub fn open(path: &Path) -> io::Result<(Journal, Vec<(u64, Entry)>)> {
        let mut records: BTreeMap<u64, (Entry, String)> = BTreeMap::new();
        let mut valid_len = 0u64;
        let mut next_seq = 1;
        if let Ok(f) = File::open(path) {
            let mut r = BufReader::new(f);
            let mut buf = String::new();
            loop {
                buf.clear();
                let n = r.read_line(&mut buf)?;
                if n == 0 || !buf.ends_with('\n') {
                    break; // the end, or a torn last line (never synced, never confirmed)
                }
                valid_len += n as u64;
                let Ok(line) = serde_json::from_str::<Line>(&buf) else {
                    log::warn!(
                        "journal {}: unreadable line skipped: {:?}",
                        path.display(),
                        buf.trim_end()
                    );
                    continue;
                };
                if let Some(s) = line.retired {
                    records.remove(&s);
                    continue;
                }
                if let Some(seq) = line.seq {
                    next_seq = next_seq.max(seq + 1);
                    if let Some(e) = Entry::of(line) {
                        records.insert(seq, (e, buf.clone()));
                    }
                }
            }
        }
        let file = open_append(path)?;
        if file.metadata()?.len() > valid_len {
            file.set_len(valid_len)?;
        }
        let mut j = Journal {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(64 << 10, file),
            len: valid_len,
            next_seq,
            live: HashMap::new(),
            unsynced: Vec::new(),
        };
        let mut replay = Vec::new();
        for (seq, (e, line)) in records {
            j.live.insert((REPLAY_LINK, 0, seq), (seq, line));
            replay.push((seq, e));
        }
        if j.live.is_empty() && j.len > 0 {
            j.empty()?;
        }
        crate::metrics::journal_live(j.live.len());
        Ok((j, replay))
    }

    /// Appends a record (durable at the next [`Journal::sync`]) under its message's key.
    pub fn append(&mut self, key: AckKey, e: &Entry) -> io::Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let line = e.line(seq);
        self.out.write_all(line.as_bytes())?;
        self.len += line.len() as u64;
        self.live.insert(key, (seq, line));
        self.unsynced.push(key);
        Ok(())
    }

    /// Records appended and not synced yet.
    pub fn pending(&self) -> usize {
        self.unsynced.len()
    }

    /// Writes and fdatasyncs what was appended: returns the keys now durable.
    pub fn sync(&mut self) -> io::Result<Vec<AckKey>> {
        self.out.flush()?;
        let t = std::time::Instant::now();
        self.out.get_ref().sync_data()?;
        crate::metrics::journal_sync(t.elapsed().as_secs_f64());
        Ok(std::mem::take(&mut self.unsynced))
    }

    /// The record of `key` needs no replay any more (committed to Consul, or replaced by a
    /// newer event of its process). Unknown keys are ignored.
    pub fn retire(&mut self, key: AckKey) -> io::Result<()> {
        let Some((seq, _)) = self.live.remove(&key) else {
            return Ok(());
        };
        crate::metrics::journal_live(self.live.len());
        if self.live.is_empty() {
            return self.empty();
        }
        let line = format!("{{\"retired\":{seq}}}\n");
        self.out.write_all(line.as_bytes())?;
        self.len += line.len() as u64;
        if self.len > COMPACT_BYTES {
            self.compact()?;
        }
        Ok(())
    }

    /// Records not retired.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Nothing is live: the file is emptied (what was buffered is written first: retired
    /// records and retire lines, then cut off with the rest).
    fn empty(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().set_len(0)?;
        self.len = 0;
        Ok(())
    }

    /// Rewrites the file with only the live records (written to a new file, synced, renamed
    /// over the old one).
    fn compact(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let tmp = self.path.with_extension("compacting");
        let mut lines: Vec<&(u64, String)> = self.live.values().collect();
        lines.sort_by_key(|(seq, _)| *seq);
        {
            let mut w = BufWriter::new(File::create(&tmp)?);
            for (_, l) in &lines {
                w.write_all(l.as_bytes())?;
            }
            w.flush()?;
            w.get_ref().sync_data()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        self.len = lines.iter().map(|(_, l)| l.len() as u64).sum();
        self.out = BufWriter::with_capacity(64 << 10, open_append(&self.path)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(p: u64, pid: u64) -> Entry {
        Entry::Event {
            process: Fid::typed(b'r', 1, p),
            kind: ProcessEventKind::Started,
            process_type: ProcessType::M0d,
            pid,
        }
    }

    fn stob() -> Entry {
        Entry::Stob {
            from_process: Some(Fid::typed(b'r', 1, 9)),
            error: StobIoError {
                sdev: Fid::typed(b'd', 1, 1),
                stob_domain: Fid::typed(b'o', 2, 3),
                stob: Fid::typed(b'o', 4, 5),
                fd: 7,
                opcode: 1,
                rc: -5,
                offset: 4096,
                size: 512,
                bshift: 12,
            },
        }
    }

    fn dir() -> tempdir::Dir {
        tempdir::Dir::new()
    }

    mod tempdir {
        /// A folder under the target's temporary directory, removed on drop.
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let p = std::env::temp_dir().join(format!(
                    "hax-journal-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn records_not_retired_are_replayed_after_a_restart_in_their_order() {
        let d = dir();
        let path = d.0.join("j");
        let (mut j, replay) = Journal::open(&path).unwrap();
        assert!(replay.is_empty());
        j.append((LinkId(5), 1, 1), &ev(1, 10)).unwrap();
        j.append((LinkId(5), 1, 3), &stob()).unwrap();
        j.append((LinkId(6), 1, 1), &ev(2, 20)).unwrap();
        assert_eq!(j.pending(), 3);
        let durable = j.sync().unwrap();
        assert_eq!(
            durable,
            vec![(LinkId(5), 1, 1), (LinkId(5), 1, 3), (LinkId(6), 1, 1)]
        );
        j.retire((LinkId(5), 1, 1)).unwrap();
        j.sync().unwrap();
        drop(j); // as if SIGKILLed: nothing else is written
        let (j, replay) = Journal::open(&path).unwrap();
        let got: Vec<Entry> = replay.into_iter().map(|(_, e)| e).collect();
        assert_eq!(got, vec![stob(), ev(2, 20)]);
        assert_eq!(j.live(), 2);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_cut_off() {
        let d = dir();
        let path = d.0.join("j");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append((LinkId(5), 1, 1), &ev(1, 10)).unwrap();
        j.sync().unwrap();
        drop(j);
        let whole = std::fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":2,\"event\":{\"proc").unwrap();
        drop(f);
        let (mut j, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.len(), 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        // New records follow the good ones, with fresh sequence numbers.
        j.append((LinkId(7), 1, 1), &ev(3, 30)).unwrap();
        j.sync().unwrap();
        drop(j);
        let (_, replay) = Journal::open(&path).unwrap();
        let seqs: Vec<u64> = replay.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2]);
    }

    #[test]
    fn the_file_is_emptied_once_nothing_is_live() {
        let d = dir();
        let path = d.0.join("j");
        let (mut j, _) = Journal::open(&path).unwrap();
        for tag in 0..10 {
            j.append((LinkId(5), 1, tag), &ev(1, tag)).unwrap();
        }
        j.sync().unwrap();
        for tag in 0..10 {
            j.retire((LinkId(5), 1, tag)).unwrap();
        }
        assert_eq!(j.live(), 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        // Retiring an unknown key is harmless.
        j.retire((LinkId(5), 1, 99)).unwrap();
        let (_, replay) = Journal::open(&path).unwrap();
        assert!(replay.is_empty());
    }

    #[test]
    fn replayed_records_are_retired_under_the_replay_link() {
        let d = dir();
        let path = d.0.join("j");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append((LinkId(5), 1, 1), &ev(1, 10)).unwrap();
        j.append((LinkId(5), 1, 3), &ev(2, 20)).unwrap();
        j.sync().unwrap();
        drop(j);
        let (mut j, replay) = Journal::open(&path).unwrap();
        let (seq, _) = replay[0];
        j.retire((REPLAY_LINK, 0, seq)).unwrap();
        j.sync().unwrap();
        drop(j);
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(
            replay.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
            vec![ev(2, 20)]
        );
    }

    #[test]
    fn a_long_lived_journal_is_compacted_to_its_live_records() {
        let d = dir();
        let path = d.0.join("j");
        let (mut j, _) = Journal::open(&path).unwrap();
        // One record stays live throughout; many come and go after it.
        j.append((LinkId(1), 1, 1), &stob()).unwrap();
        let mut tag = 0;
        while tag < 60_000 {
            j.append((LinkId(2), 1, tag), &ev(2, tag)).unwrap();
            j.retire((LinkId(2), 1, tag)).unwrap();
            tag += 1;
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(
            len <= COMPACT_BYTES + 4096,
            "compacted: {len} bytes after {tag} records"
        );
        j.sync().unwrap();
        drop(j);
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(
            replay.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
            vec![stob()]
        );
    }

    #[test]
    fn unreadable_lines_in_the_middle_are_skipped_not_fatal() {
        let d = dir();
        let path = d.0.join("j");
        std::fs::write(
            &path,
            "{\"seq\":1,\"event\":{\"process\":\"0x7200000000000001:0x1\",\"event\":\"M0_CONF_HA_PROCESS_STARTED\",\"type\":\"M0_CONF_HA_PROCESS_M0D\",\"pid\":10}}\nnot json\n",
        )
        .unwrap();
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(
            replay.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
            vec![ev(1, 10)]
        );
    }
}

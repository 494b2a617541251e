//! Helpers shared by the `faults_*` tests (included with `#[path = "faults_common.rs"] mod
//! common;`): process events carrying a sequence number, KV read-back, RSS sampling from
//! /proc, and the one-line figures RELIABILITY.md quotes. Compiled alone it is an empty test
//! binary.
#![allow(dead_code)]

use hax::fid::Fid;
use hax_sim::wire::read_frame;
use hax_sim::{
    EpReply, EpRequest, FromHa, HaMsg, MsgBody, ProcessEvent, ProcessType, SimConfig, SimError,
    SimProcess, ToHa,
};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Sends EVENT_PROCESS `event` for `p` with `pid` = `seq` (the sequence number a test reads
/// back from `processes/<fid>`); returns the message's tag.
pub fn send_seq_event(p: &SimProcess, event: ProcessEvent, seq: u64) -> Result<u64, SimError> {
    p.send_process_event_with_pid(event, ProcessType::M0d, seq)
}

/// The `pid` of `processes/<fid>` (the sequence number of the last event written), if any.
pub fn kv_seq(base_url: &str, fid: Fid) -> Option<u64> {
    let c = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let r = c
        .get(&format!("{base_url}/v1/kv/processes/{fid}?raw"))
        .call()
        .ok()?;
    let v: serde_json::Value = r.into_json().ok()?;
    v["pid"].as_u64()
}

/// Resident set size of a process in KiB (VmRSS of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples the RSS of `pid` every `every` on a thread until dropped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: at most 10 minutes of samples.
            let end = Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::SeqCst) && Instant::now() < end {
                if let Some(kib) = rss_kib(pid) {
                    v.lock().unwrap().push((Instant::now(), kib));
                }
                std::thread::sleep(every);
            }
        });
        RssSampler {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// (time, KiB) samples so far.
    pub fn samples(&self) -> Vec<(Instant, u64)> {
        self.samples.lock().unwrap().clone()
    }

    /// The largest sample taken in `[from, to)`.
    pub fn max_between(&self, from: Instant, to: Instant) -> Option<u64> {
        self.samples()
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, k)| *k)
            .max()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The pid of this test process's child whose command line holds the argument `arg`
/// exactly (the test harness does not expose its Consul servers' pids).
pub fn child_with_arg(arg: &str) -> Option<u32> {
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if !cmd.split(|b| *b == 0).any(|a| a == arg.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // Field 4 (after the parenthesised command) is the parent pid.
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) {
            return Some(pid);
        }
    }
    None
}

/// How many lines of a log contain `needle`.
pub fn log_count(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Prints one figure line (grep `RELIABILITY` in the test output).
pub fn figure(scenario: &str, what: &str) {
    eprintln!("RELIABILITY | {scenario} | {what}");
}

/// Percentile of durations (p in 0..=100); zero for an empty list.
pub fn pct(v: &[Duration], p: usize) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    s[((s.len() - 1) * p / 100).min(s.len() - 1)]
}

/// What a [`RawPeer`] saw.
#[derive(Default)]
pub struct RawState {
    pub ep_replies: Vec<EpReply>,
    /// Notes about processes (service notes are only counted), with their arrival time.
    pub process_notes: Vec<(Instant, Fid, u32)>,
    pub notes_total: u64,
    pub msgs: u64,
    /// Highest tag of ours HA confirmed.
    pub acked: u64,
    pub closed: Option<String>,
}

/// A minimal Motr process over the stand-in's wire protocol that keeps counters instead of
/// every note (a `SimProcess` stores each note it gets, which is too much for floods of
/// millions of notes): entrypoint, process events, and every HA message ACKed on receipt.
pub struct RawPeer {
    fid: Fid,
    stream: TcpStream,
    writer: Arc<Mutex<TcpStream>>,
    state: Arc<(Mutex<RawState>, Condvar)>,
    next_tag: Mutex<u64>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl RawPeer {
    pub fn connect(ha_endpoint: &str, fid: Fid) -> RawPeer {
        let addr = hax_sim::parse_ha_endpoint(ha_endpoint).expect("endpoint");
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream.set_nodelay(true).ok();
        stream.set_write_timeout(Some(Duration::from_secs(15))).ok();
        let writer = Arc::new(Mutex::new(stream.try_clone().expect("clone")));
        let state: Arc<(Mutex<RawState>, Condvar)> = Arc::default();
        let (mut rd, w, st) = (
            stream.try_clone().expect("clone"),
            writer.clone(),
            state.clone(),
        );
        let reader = std::thread::spawn(move || {
            let why = loop {
                let frame = match read_frame(&mut rd) {
                    Ok(f) => f,
                    Err(e) => break e.to_string(),
                };
                let f = match FromHa::decode(&frame) {
                    Ok(f) => f,
                    Err(e) => break format!("bad frame: {e}"),
                };
                let mut s = st.0.lock().unwrap();
                match f {
                    FromHa::EpRep(r) => s.ep_replies.push(r),
                    FromHa::Ack { tag } => s.acked = s.acked.max(tag),
                    FromHa::Drop => {}
                    FromHa::Msg { tag, msg } => {
                        s.msgs += 1;
                        if let MsgBody::Nvec { notes, .. } = &msg.body {
                            let now = Instant::now();
                            s.notes_total += notes.len() as u64;
                            s.process_notes.extend(
                                notes
                                    .iter()
                                    .filter(|n| n.fid.is_process())
                                    .map(|n| (now, n.fid, n.state)),
                            );
                        }
                        drop(s);
                        let ack = ToHa::Ack { tag }.encode().expect("ack");
                        if let Err(e) = w.lock().unwrap().write_all(&ack) {
                            break format!("ack: {e}");
                        }
                        st.1.notify_all();
                        continue;
                    }
                }
                drop(s);
                st.1.notify_all();
            };
            st.0.lock().unwrap().closed = Some(why);
            st.1.notify_all();
        });
        RawPeer {
            fid,
            stream,
            writer,
            state,
            next_tag: Mutex::new(2),
            reader: Some(reader),
        }
    }

    pub fn fid(&self) -> Fid {
        self.fid
    }

    fn send(&self, f: &ToHa) -> std::io::Result<()> {
        self.writer
            .lock()
            .unwrap()
            .write_all(&f.encode().expect("encode"))
    }

    /// Waits until `pick` finds something or `timeout` passes.
    pub fn wait<T>(
        &self,
        timeout: Duration,
        mut pick: impl FnMut(&mut RawState) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.0.lock().unwrap();
        loop {
            if let Some(v) = pick(&mut s) {
                return Some(v);
            }
            let now = Instant::now();
            if now >= deadline || s.closed.is_some() {
                return None;
            }
            s = self.state.1.wait_timeout(s, deadline - now).unwrap().0;
        }
    }

    /// One entrypoint request; its reply (any rc) within 10 s.
    pub fn entrypoint(&self, first: bool) -> Option<EpReply> {
        let cfg = SimConfig::new(self.fid);
        let (seq, cookie_expected) = {
            let s = self.state.0.lock().unwrap();
            // Motr sends back the cookie of the last reply it got.
            let cookie = s.ep_replies.last().map_or(0, |r| r.cookie_actual);
            (s.ep_replies.len() as u64 + 1, cookie)
        };
        let req = EpRequest {
            seq,
            first_request: first,
            cookie_expected,
            pid: cfg.pid,
            process: self.fid,
            endpoint: cfg.endpoint,
            git_rev: cfg.git_rev,
        };
        self.send(&ToHa::EpReq(req)).ok()?;
        self.wait(Duration::from_secs(10), |s| {
            s.ep_replies.iter().find(|r| r.seq == seq).cloned()
        })
    }

    /// Asks until rc 0 (hax paces its EAGAIN answers) or `timeout`.
    pub fn entrypoint_until_ok(&self, timeout: Duration) -> Option<EpReply> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(r) = self.entrypoint(true).filter(|r| r.rc == 0) {
                return Some(r);
            }
        }
        None
    }

    /// EVENT_PROCESS with `pid` = `seq`; returns the tag.
    pub fn send_event(&self, event: ProcessEvent, seq: u64) -> std::io::Result<u64> {
        let body = MsgBody::EventProcess {
            event,
            process_type: ProcessType::M0d,
            pid: seq,
        };
        let msg = HaMsg::new(self.fid, Fid::ZERO, Fid::ZERO, body);
        let mut w = self.writer.lock().unwrap();
        let mut tag = self.next_tag.lock().unwrap();
        w.write_all(&ToHa::Msg { tag: *tag, msg }.encode().expect("encode"))?;
        *tag += 2;
        Ok(*tag - 2)
    }

    /// The first note `fid -> state` that arrived at or after `after`.
    pub fn wait_note_after(
        &self,
        fid: Fid,
        state: u32,
        after: Instant,
        timeout: Duration,
    ) -> Option<Instant> {
        self.wait(timeout, |s| {
            s.process_notes
                .iter()
                .rev()
                .take_while(|n| n.0 >= after)
                .filter(|n| n.1 == fid && n.2 == state)
                .map(|n| n.0)
                .last()
        })
    }

    pub fn with_state<T>(&self, f: impl FnOnce(&RawState) -> T) -> T {
        f(&self.state.0.lock().unwrap())
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

/// SIGCONTs the process when dropped (also when a test fails while it is stopped).
pub struct Thaw(pub u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

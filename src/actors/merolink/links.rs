//! MeroLink's bookkeeping: the link table (which process each link belongs to and whether
//! it may be sent on) and delivery tracking (every send until delivered, not delivered or
//! timed out, grouped into batches whose completion can be awaited).
use crate::fid::Fid;
use crate::motr::LinkId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use crate::motr::LinkState;

#[derive(Clone, Debug)]
pub struct LinkInfo {
    pub process: Option<Fid>,
    pub peer_ep: String,
    pub state: LinkState,
    pub is_self: bool,
}

#[derive(Default)]
pub struct LinkTable {
    links: HashMap<LinkId, LinkInfo>,
}

impl LinkTable {
    pub fn connect(&mut self, link: LinkId, info: LinkInfo) {
        self.links.insert(link, info);
    }
    pub fn get_mut(&mut self, link: LinkId) -> Option<&mut LinkInfo> {
        self.links.get_mut(&link)
    }
    pub fn remove(&mut self, link: LinkId) -> Option<LinkInfo> {
        self.links.remove(&link)
    }
    pub fn len(&self) -> usize {
        self.links.len()
    }
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
    /// Links broadcasts go to, optionally leaving out one process's links.
    pub fn active(&self, skip_process: Option<Fid>) -> Vec<LinkId> {
        let mut v: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, i)| i.state == LinkState::Active)
            .filter(|(_, i)| skip_process.is_none() || i.process != skip_process)
            .map(|(l, _)| *l)
            .collect();
        v.sort();
        v
    }
    /// Live (not disconnecting) links of a process.
    pub fn of_process(&self, process: Fid) -> Vec<LinkId> {
        self.links
            .iter()
            .filter(|(_, i)| i.process == Some(process) && i.state != LinkState::Disconnecting)
            .map(|(l, _)| *l)
            .collect()
    }
    /// Marks a process's links inactive; returns how many.
    pub fn deactivate_process(&mut self, process: Fid) -> usize {
        let mut n = 0;
        for i in self.links.values_mut() {
            if i.process == Some(process) && i.state == LinkState::Active {
                i.state = LinkState::Inactive;
                n += 1;
            }
        }
        n
    }
    /// How many links are in each state (active, inactive, disconnecting).
    pub fn count_by_state(&self) -> [(LinkState, usize); 3] {
        let mut out = [
            (LinkState::Active, 0),
            (LinkState::Inactive, 0),
            (LinkState::Disconnecting, 0),
        ];
        for info in self.links.values() {
            if let Some(slot) = out.iter_mut().find(|(s, _)| *s == info.state) {
                slot.1 += 1;
            }
        }
        out
    }

    pub fn self_link(&self) -> Option<LinkId> {
        self.links.iter().find(|(_, i)| i.is_self).map(|(l, _)| *l)
    }
    pub fn snapshot(&self) -> Vec<(LinkId, LinkInfo)> {
        let mut v: Vec<_> = self.links.iter().map(|(l, i)| (*l, i.clone())).collect();
        v.sort_by_key(|(l, _)| *l);
        v
    }
}

pub use crate::messages::SendReport;

pub type OnDone = Box<dyn FnOnce(SendReport) + Send>;

struct Batch {
    report: SendReport,
    remaining: usize,
    done: Option<OnDone>,
}

struct Pending {
    sent_at: Instant,
    batch: u64,
}

/// Tracks every send until Motr says delivered or not delivered, or `timeout` passes.
pub struct Deliveries {
    pending: HashMap<(LinkId, u64), Pending>,
    batches: HashMap<u64, Batch>,
    next_batch: u64,
    timeout: Duration,
}

impl Deliveries {
    pub fn new(timeout: Duration) -> Self {
        Deliveries {
            pending: HashMap::new(),
            batches: HashMap::new(),
            next_batch: 1,
            timeout,
        }
    }

    /// Opens a batch; sends are added with `sent`/`failed`, then `seal` it.
    pub fn open(&mut self, done: Option<OnDone>) -> u64 {
        let id = self.next_batch;
        self.next_batch += 1;
        self.batches.insert(
            id,
            Batch {
                report: SendReport::default(),
                remaining: 0,
                done,
            },
        );
        id
    }
    pub fn sent(&mut self, batch: u64, link: LinkId, tag: u64) {
        if let Some(b) = self.batches.get_mut(&batch) {
            b.report.sent += 1;
            b.remaining += 1;
        }
        self.pending.insert(
            (link, tag),
            Pending {
                sent_at: Instant::now(),
                batch,
            },
        );
    }
    pub fn failed(&mut self, batch: u64) {
        if let Some(b) = self.batches.get_mut(&batch) {
            b.report.failed += 1;
        }
    }
    /// No more sends will join the batch: completes it now if nothing is pending.
    pub fn seal(&mut self, batch: u64) {
        if let Some(b) = self.batches.get_mut(&batch) {
            b.report.all_sent = Some(Instant::now());
        }
        self.finish_if_done(batch);
    }

    /// Motr reported the fate of one send. Returns false for an unknown (link, tag).
    pub fn resolve(&mut self, link: LinkId, tag: u64, delivered: bool) -> bool {
        let Some(p) = self.pending.remove(&(link, tag)) else {
            return false;
        };
        if let Some(b) = self.batches.get_mut(&p.batch) {
            if delivered {
                b.report.delivered += 1;
            } else {
                b.report.not_delivered += 1;
            }
            b.remaining -= 1;
        }
        self.finish_if_done(p.batch);
        true
    }

    /// Gives up on sends older than the timeout; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let old: Vec<(LinkId, u64)> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.sent_at) >= self.timeout)
            .map(|(k, _)| *k)
            .collect();
        for k in &old {
            if let Some(p) = self.pending.remove(k) {
                if let Some(b) = self.batches.get_mut(&p.batch) {
                    b.report.timed_out += 1;
                    b.remaining -= 1;
                }
                self.finish_if_done(p.batch);
            }
        }
        old.len()
    }

    /// Sends still waiting for Motr's answer.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn finish_if_done(&mut self, batch: u64) {
        if self.batches.get(&batch).is_some_and(|b| b.remaining == 0) {
            if let Some(b) = self.batches.remove(&batch) {
                if let Some(done) = b.done {
                    done(b.report);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_batch_completes_once_every_send_is_answered_or_timed_out() {
        let got = Arc::new(Mutex::new(None));
        let g = got.clone();
        let mut d = Deliveries::new(Duration::from_millis(0));
        let b = d.open(Some(Box::new(move |r| *g.lock().unwrap() = Some(r))));
        d.sent(b, LinkId(1), 1);
        d.sent(b, LinkId(2), 1);
        d.sent(b, LinkId(3), 1);
        d.seal(b);
        assert!(d.resolve(LinkId(1), 1, true));
        assert!(d.resolve(LinkId(2), 1, false));
        assert!(
            !d.resolve(LinkId(9), 1, true),
            "unknown sends are reported, not counted"
        );
        assert!(got.lock().unwrap().is_none());
        assert_eq!(d.expire(Instant::now()), 1);
        let r = got.lock().unwrap().unwrap();
        assert_eq!(
            (r.sent, r.delivered, r.not_delivered, r.timed_out),
            (3, 1, 1, 1)
        );
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn an_empty_batch_completes_when_sealed() {
        let got = Arc::new(Mutex::new(false));
        let g = got.clone();
        let mut d = Deliveries::new(Duration::from_secs(1));
        let b = d.open(Some(Box::new(move |_| *g.lock().unwrap() = true)));
        d.seal(b);
        assert!(*got.lock().unwrap());
    }

    #[test]
    fn stopped_processes_leave_the_broadcast_set() {
        let mut t = LinkTable::default();
        let p = Fid::typed(b'r', 1, 5);
        let info = |process, is_self| LinkInfo {
            process,
            peer_ep: String::new(),
            state: LinkState::Active,
            is_self,
        };
        t.connect(LinkId(1), info(Some(Fid::typed(b'r', 1, 1)), true));
        t.connect(LinkId(2), info(Some(p), false));
        assert_eq!(t.active(None), vec![LinkId(1), LinkId(2)]);
        assert_eq!(t.active(Some(p)), vec![LinkId(1)]);
        assert_eq!(t.deactivate_process(p), 1);
        assert_eq!(t.active(None), vec![LinkId(1)]);
        assert_eq!(t.self_link(), Some(LinkId(1)));
    }
}

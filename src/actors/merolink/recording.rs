//! What MeroLink hands on to be recorded (process events and STOB errors, to ProcessStatus),
//! with a credit: at most [`CREDIT`] records await their `Ack` at a time. Beyond it records
//! wait here: a process's newest event replaces its older waiting one (which then counts as
//! handled: the newer one says more, and stays unconfirmed until it is durable), STOB errors
//! wait in order. So a burst of events costs Motr one held message per process, plus what is
//! in flight, instead of every message until the burst is written; and while Consul cannot
//! take writes, nothing piles up behind ConsulWriter.
use crate::fid::Fid;
use crate::messages::{AckKey, ProcessEvent, StobIoEvent};
use std::collections::{HashMap, VecDeque};

/// Records handed on and not acknowledged yet, at most.
pub const CREDIT: usize = 256;

/// A record for ProcessStatus.
#[derive(Debug)]
pub enum ToRecord {
    Event(ProcessEvent),
    Stob(StobIoEvent),
}

/// What to do with an offered record.
#[derive(Debug)]
pub enum Offer {
    /// Hand it on now.
    Send(ToRecord),
    /// It waits; the message it replaced (a waiting older event of the same process), if
    /// any, is handled: confirm it in its link's order.
    Waits { replaced: Option<AckKey> },
}

#[derive(Debug)]
enum Waiting {
    Event(Fid),
    Stob(StobIoEvent),
}

#[derive(Debug)]
pub struct Recording {
    credit: usize,
    in_flight: usize,
    events: HashMap<Fid, ProcessEvent>,
    order: VecDeque<Waiting>,
}

impl Default for Recording {
    fn default() -> Self {
        Recording::with_credit(CREDIT)
    }
}

impl Recording {
    pub fn with_credit(credit: usize) -> Recording {
        Recording {
            credit: credit.max(1),
            in_flight: 0,
            events: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records waiting here.
    pub fn waiting(&self) -> usize {
        self.order.len()
    }

    /// A record to hand on (it carries an `Ack`).
    pub fn offer(&mut self, r: ToRecord) -> Offer {
        if self.in_flight < self.credit && self.order.is_empty() {
            self.in_flight += 1;
            return Offer::Send(r);
        }
        match r {
            ToRecord::Event(ev) => {
                let p = ev.process;
                match self.events.insert(p, ev) {
                    Some(old) => Offer::Waits {
                        replaced: old.ack.map(|a| a.key()),
                    },
                    None => {
                        self.order.push_back(Waiting::Event(p));
                        Offer::Waits { replaced: None }
                    }
                }
            }
            ToRecord::Stob(s) => {
                self.order.push_back(Waiting::Stob(s));
                Offer::Waits { replaced: None }
            }
        }
    }

    /// Every waiting record, in order, credit or not (at shutdown: ConsulWriter's flush may
    /// still write them; what it cannot, Motr sends again to the next hax).
    pub fn drain(&mut self) -> Vec<ToRecord> {
        let mut out = Vec::new();
        while let Some(w) = self.order.pop_front() {
            match w {
                Waiting::Event(p) => {
                    if let Some(ev) = self.events.remove(&p) {
                        out.push(ToRecord::Event(ev));
                    }
                }
                Waiting::Stob(s) => out.push(ToRecord::Stob(s)),
            }
        }
        self.in_flight += out.len();
        out
    }

    /// A handed-on record was acknowledged: the records that may go now.
    pub fn acked(&mut self) -> Vec<ToRecord> {
        self.in_flight = self.in_flight.saturating_sub(1);
        let mut out = Vec::new();
        while self.in_flight < self.credit {
            let Some(w) = self.order.pop_front() else {
                break;
            };
            let r = match w {
                Waiting::Event(p) => match self.events.remove(&p) {
                    Some(ev) => ToRecord::Event(ev),
                    None => continue,
                },
                Waiting::Stob(s) => ToRecord::Stob(s),
            };
            self.in_flight += 1;
            out.push(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Ack;
    use crate::motr::LinkId;
    use crate::motr::{ProcessEventKind, ProcessType};

    fn event(p: u64, tag: u64, acks: &crossbeam_channel::Sender<AckKey>) -> ToRecord {
        ToRecord::Event(ProcessEvent {
            process: Fid::typed(b'r', 1, p),
            event: ProcessEventKind::Started,
            process_type: ProcessType::M0d,
            pid: tag,
            link: Some(LinkId(p)),
            ack: Some(Ack::new(LinkId(p), 1, tag, acks.clone())),
        })
    }

    fn sent_tag(o: Offer) -> u64 {
        match o {
            Offer::Send(ToRecord::Event(e)) => e.pid,
            other => panic!("expected a send, got {other:?}"),
        }
    }

    #[test]
    fn beyond_the_credit_a_process_newest_event_waits_and_replaces_its_older_one() {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let mut r = Recording::with_credit(2);
        assert_eq!(sent_tag(r.offer(event(1, 2, &tx))), 2);
        assert_eq!(sent_tag(r.offer(event(2, 2, &tx))), 2);
        // The credit is used: process 1's events wait, each replacing the one before.
        assert!(matches!(
            r.offer(event(1, 4, &tx)),
            Offer::Waits { replaced: None }
        ));
        match r.offer(event(1, 6, &tx)) {
            Offer::Waits { replaced } => assert_eq!(replaced, Some((LinkId(1), 1, 4))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.offer(event(3, 2, &tx)),
            Offer::Waits { replaced: None }
        ));
        assert_eq!(r.waiting(), 2);
        // One ack frees one slot: the first waiting process goes with its newest event.
        let go = r.acked();
        assert_eq!(go.len(), 1);
        assert!(
            matches!(&go[0], ToRecord::Event(e) if e.process == Fid::typed(b'r', 1, 1) && e.pid == 6)
        );
        let go = r.acked();
        assert!(matches!(&go[0], ToRecord::Event(e) if e.process == Fid::typed(b'r', 1, 3)));
        assert_eq!(r.waiting(), 0);
        // Records never wait behind nothing: with credit free they go at once.
        r.acked();
        r.acked();
        assert_eq!(sent_tag(r.offer(event(4, 2, &tx))), 2);
    }

    #[test]
    fn stob_errors_wait_in_order_and_are_never_replaced() {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let stob = |tag: u64| {
            ToRecord::Stob(StobIoEvent {
                from_process: None,
                error: crate::motr::StobIoError {
                    sdev: Fid::typed(b'd', 1, 1),
                    stob_domain: Fid::default(),
                    stob: Fid::default(),
                    fd: 0,
                    opcode: 0,
                    rc: -5,
                    offset: 0,
                    size: 0,
                    bshift: 0,
                },
                ack: Some(Ack::new(LinkId(9), 1, tag, tx.clone())),
            })
        };
        let mut r = Recording::with_credit(1);
        assert!(matches!(r.offer(stob(2)), Offer::Send(_)));
        assert!(matches!(r.offer(stob(4)), Offer::Waits { replaced: None }));
        assert!(matches!(r.offer(stob(6)), Offer::Waits { replaced: None }));
        let tags: Vec<u64> = [r.acked(), r.acked()]
            .into_iter()
            .flatten()
            .map(|x| match x {
                ToRecord::Stob(s) => s.ack.unwrap().tag,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(tags, vec![4, 6]);
    }
}

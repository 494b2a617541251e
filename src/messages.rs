//! Messages that cross actors. Suffix tells the kind: `...Req` gets a reply, `...Event` is
//! fire-and-forget, `...Update` pushes state. `actors.md` maps who sends what to whom.
use crate::fid::Fid;
use crate::model::health::Snapshot;
use crate::motr::{HaState, LinkId, Note, ProcessEventKind, ProcessType, StobIoError};
use actix::Message;
use std::time::Instant;

/// Tells MeroLink that a message from Motr is durable, so that it can be confirmed (MeroLink
/// → ProcessStatus → ConsulWriter, and back through the channel it holds). Dropping it
/// without `confirm` leaves the message unconfirmed: Motr keeps it and sends it again to the
/// next hax.
#[derive(Clone, Debug)]
pub struct Ack {
    pub link: LinkId,
    /// Which connection of `link` it came on: Motr may give a new link the address of one
    /// that is gone, and a late `Ack` must not confirm the new one's message of the same tag.
    pub gen: u64,
    pub tag: u64,
    to: crossbeam_channel::Sender<AckKey>,
}

/// What an `Ack` reports: (link, its connection's generation, tag).
pub type AckKey = (LinkId, u64, u64);

impl Ack {
    pub fn new(link: LinkId, gen: u64, tag: u64, to: crossbeam_channel::Sender<AckKey>) -> Ack {
        Ack { link, gen, tag, to }
    }

    /// The message is durable: MeroLink may confirm it (in its link's order).
    pub fn confirm(&self) {
        let _ = self.to.send((self.link, self.gen, self.tag));
    }

    /// (link, generation, tag).
    pub fn key(&self) -> AckKey {
        (self.link, self.gen, self.tag)
    }
}

impl PartialEq for Ack {
    fn eq(&self, o: &Ack) -> bool {
        self.key() == o.key()
    }
}

impl Eq for Ack {}

/// A Motr process reported a lifecycle event (MeroLink → ProcessStatus to be recorded, and
/// → HaBroadcaster for the HA state it gives).
#[derive(Clone, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct ProcessEvent {
    pub process: Fid,
    pub event: ProcessEventKind,
    pub process_type: ProcessType,
    pub pid: u64,
    /// The link it came on (None when hax reports for itself).
    pub link: Option<LinkId>,
    /// Confirms the message to Motr once the event is durable (None: nothing to confirm).
    pub ack: Option<Ack>,
}

/// A health report for the HA model (WatchIngest, HealthMonitor → HaBroadcaster).
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct HealthReport {
    pub snapshot: Snapshot,
    /// When the news reached hax (a watch POST's arrival): broadcast timings start here.
    pub received: Instant,
}

/// A drive reported an I/O error (MeroLink → ProcessStatus, recorded under `eq/`).
#[derive(Clone, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct StobIoEvent {
    pub from_process: Option<Fid>,
    pub error: StobIoError,
    /// Confirms the message to Motr once the entry is durable.
    pub ack: Option<Ack>,
}

/// One note per fid, for an answer or a broadcast.
pub fn notes(fids: impl IntoIterator<Item = Fid>, state: HaState) -> Vec<Note> {
    fids.into_iter().map(|fid| Note { fid, state }).collect()
}

/// How one batch of sends ended (MeroLink's report to whoever asked for the sends). Reports compare by their counts (not by `all_sent`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SendReport {
    pub sent: usize,
    pub delivered: usize,
    pub not_delivered: usize,
    pub timed_out: usize,
    /// Sends refused because the link was gone or the message invalid.
    pub failed: usize,
    /// When the last send of the batch had been handed to Motr.
    pub all_sent: Option<Instant>,
}

impl PartialEq for SendReport {
    fn eq(&self, o: &Self) -> bool {
        (
            self.sent,
            self.delivered,
            self.not_delivered,
            self.timed_out,
            self.failed,
        ) == (o.sent, o.delivered, o.not_delivered, o.timed_out, o.failed)
    }
}

impl Eq for SendReport {}

impl SendReport {
    pub fn all_delivered(&self) -> bool {
        self.delivered == self.sent && self.failed == 0
    }
}

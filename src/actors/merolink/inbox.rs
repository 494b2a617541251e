//! MeroLink's inbox: the messages Motr processes sent that are not confirmed yet, per link,
//! in arrival order.
//!
//! Motr keeps a message in the process's outgoing queue until the HA confirms it, and the
//! process learns one contiguous "delivered" mark: on a new link it sends again everything
//! after the first unconfirmed message. So hax confirms each link's messages in order, each
//! once it is handled: a process event or a STOB error once it is durable in Consul, a
//! question once it is answered. A failure-vector request is answered only when it reaches the
//! head of its link (everything before it confirmed), and confirmed right before its answer
//! goes out: a request Motr could send again is one hax never answered.
use crate::fid::Fid;
use crate::motr::{LinkId, MsgRef};
use std::collections::{HashMap, VecDeque};

/// What a received message waits for before it can be confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Awaits {
    /// Nothing: confirm it once everything before it is.
    Nothing,
    /// Someone's `Ack` (the message became durable).
    Ack,
    /// Being at the head of its link: then the failure-vector request is confirmed and
    /// answered.
    Head { pool: Fid, cookie: (u64, u64) },
}

#[derive(Debug)]
struct Held {
    tag: u64,
    msg: MsgRef,
    awaits: Awaits,
}

/// A message whose turn has come, in confirmation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    pub tag: u64,
    pub msg: MsgRef,
    /// A failure-vector request to answer right after confirming it.
    pub answer: Option<(Fid, (u64, u64))>,
}

#[derive(Default)]
pub struct Inbox {
    links: HashMap<LinkId, VecDeque<Held>>,
    held: usize,
}

impl Inbox {
    /// A message arrived on `link` (after every message already held for it).
    pub fn push(&mut self, link: LinkId, tag: u64, msg: MsgRef, awaits: Awaits) {
        self.links
            .entry(link)
            .or_default()
            .push_back(Held { tag, msg, awaits });
        self.held += 1;
    }

    /// The message `tag` of `link` is durable. False when it is unknown (confirmed already,
    /// or its link went away).
    pub fn acked(&mut self, link: LinkId, tag: u64) -> bool {
        let Some(q) = self.links.get_mut(&link) else {
            return false;
        };
        match q
            .iter_mut()
            .find(|h| h.tag == tag && h.awaits == Awaits::Ack)
        {
            Some(h) => {
                h.awaits = Awaits::Nothing;
                true
            }
            None => false,
        }
    }

    /// Takes the messages of `link` that can be confirmed now, in order: the run at the head
    /// that awaits nothing more, and a failure-vector request that reached the head.
    pub fn due(&mut self, link: LinkId) -> Vec<Due> {
        let mut out = Vec::new();
        let Some(q) = self.links.get_mut(&link) else {
            return out;
        };
        while let Some(h) = q.front() {
            let answer = match h.awaits {
                Awaits::Ack => break,
                Awaits::Nothing => None,
                Awaits::Head { pool, cookie } => Some((pool, cookie)),
            };
            let h = q.pop_front().expect("front exists");
            out.push(Due {
                tag: h.tag,
                msg: h.msg,
                answer,
            });
        }
        if q.is_empty() {
            self.links.remove(&link);
        }
        self.held -= out.len();
        out
    }

    /// The link started disconnecting: its messages are never confirmed (Motr drops them with
    /// the link; the process sends them again on its next one). Answers how many.
    pub fn drop_link(&mut self, link: LinkId) -> usize {
        let n = self.links.remove(&link).map_or(0, |q| q.len());
        self.held -= n;
        n
    }

    /// Messages held over all links.
    pub fn held(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: LinkId = LinkId(7);

    fn tags(d: &[Due]) -> Vec<u64> {
        d.iter().map(|d| d.tag).collect()
    }

    #[test]
    fn messages_are_confirmed_in_order_each_once_it_is_handled() {
        let mut b = Inbox::default();
        b.push(L, 2, MsgRef(20), Awaits::Ack);
        b.push(L, 4, MsgRef(40), Awaits::Nothing);
        b.push(L, 6, MsgRef(60), Awaits::Ack);
        assert!(
            b.due(L).is_empty(),
            "2 is not durable yet: nothing after it goes"
        );
        assert!(b.acked(L, 6));
        assert!(b.due(L).is_empty(), "6 is durable, but 2 still is not");
        assert!(b.acked(L, 2));
        assert_eq!(tags(&b.due(L)), [2, 4, 6]);
        assert_eq!(b.held(), 0);
        assert!(!b.acked(L, 2), "confirmed already");
    }

    #[test]
    fn a_failure_vector_request_is_answered_when_it_reaches_the_head() {
        let mut b = Inbox::default();
        let pool = Fid::typed(b'o', 1, 4);
        b.push(L, 2, MsgRef(20), Awaits::Ack);
        b.push(
            L,
            4,
            MsgRef(40),
            Awaits::Head {
                pool,
                cookie: (1, 2),
            },
        );
        b.push(L, 6, MsgRef(60), Awaits::Nothing);
        assert!(
            b.due(L).is_empty(),
            "the request waits behind the unconfirmed event"
        );
        b.acked(L, 2);
        let due = b.due(L);
        assert_eq!(tags(&due), [2, 4, 6]);
        assert_eq!(due[1].answer, Some((pool, (1, 2))));
        assert_eq!(due[0].answer, None);
    }

    #[test]
    fn a_disconnecting_link_drops_what_it_held_and_others_are_untouched() {
        let mut b = Inbox::default();
        b.push(L, 2, MsgRef(20), Awaits::Ack);
        b.push(LinkId(8), 2, MsgRef(21), Awaits::Nothing);
        assert_eq!(b.drop_link(L), 1);
        assert!(!b.acked(L, 2));
        assert_eq!(b.held(), 1);
        assert_eq!(tags(&b.due(LinkId(8))), [2]);
    }
}

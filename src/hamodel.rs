//! The HA state model: one state per fid, from the last process event and the current
//! Consul health, as the behaviour page's table says. It answers NVEC GET from memory and
//! reports only changes against what was last broadcast.
use crate::fid::Fid;
use crate::messages::{ProcessEvent, ServiceHealth};
use crate::motr::{HaState, Note, ProcessEventKind, ProcessType};
use crate::view::ConfigTree;
use std::collections::{BTreeSet, HashMap};

#[derive(Clone, Debug, Default)]
struct Proc {
    event: Option<ProcessEventKind>,
    ptype: Option<ProcessType>,
    healthy: Option<bool>,
}

#[derive(Default)]
pub struct HaModel {
    procs: HashMap<Fid, Proc>,
    nodes_healthy: HashMap<String, bool>,
    sent: HashMap<Fid, HaState>,
    /// Processes whose STARTED means ONLINE at once: confd processes and hax itself.
    special: BTreeSet<Fid>,
}

impl HaModel {
    pub fn mark_special(&mut self, process: Fid) {
        self.special.insert(process);
    }

    pub fn on_event(&mut self, ev: &ProcessEvent) {
        let p = self.procs.entry(ev.process).or_default();
        p.event = Some(ev.event);
        p.ptype = Some(ev.process_type);
    }

    /// Records a service instance's health; answers whether its process's health changed
    /// (only then can its state change).
    pub fn on_health(&mut self, h: &ServiceHealth) -> bool {
        let p = self.procs.entry(h.process).or_default();
        let changed = p.healthy != Some(h.healthy);
        p.healthy = Some(h.healthy);
        match self.nodes_healthy.get_mut(&h.node) {
            Some(ok) => *ok = h.node_healthy,
            None => {
                self.nodes_healthy.insert(h.node.clone(), h.node_healthy);
            }
        }
        changed
    }

    /// Health as last known (None: Consul has not said).
    pub fn health(&self, process: Fid) -> Option<bool> {
        self.procs.get(&process).and_then(|p| p.healthy)
    }

    /// The state a process should have now; None when nothing is to be said yet.
    pub fn state_of(&self, process: Fid) -> Option<HaState> {
        let p = self.procs.get(&process)?;
        if p.event == Some(ProcessEventKind::Stopped) {
            return Some(HaState::Failed);
        }
        if p.healthy == Some(false) {
            return Some(HaState::Transient);
        }
        let online_at_start =
            self.special.contains(&process) || p.ptype == Some(ProcessType::M0mkfs);
        match p.event? {
            ProcessEventKind::Started if online_at_start => Some(HaState::Online),
            ProcessEventKind::Started => Some(HaState::DtmRecovering),
            ProcessEventKind::DtmRecovered => Some(HaState::Online),
            _ => None,
        }
    }

    /// Notes for processes whose state differs from what was last broadcast (each process
    /// note followed by its services' notes); records them as sent.
    pub fn changes(
        &mut self,
        dirty: impl IntoIterator<Item = Fid>,
        config: &ConfigTree,
    ) -> Vec<Note> {
        let mut out = Vec::new();
        for p in dirty {
            let Some(s) = self.state_of(p) else { continue };
            if self.sent.get(&p) == Some(&s) {
                continue;
            }
            self.sent.insert(p, s);
            out.push(Note { fid: p, state: s });
            out.extend(
                config
                    .services_of(p)
                    .into_iter()
                    .map(|fid| Note { fid, state: s }),
            );
        }
        out
    }

    /// Records a state broadcast by someone else (e.g. FAILED for a restarted process).
    pub fn record_sent(&mut self, process: Fid, state: HaState) {
        self.sent.insert(process, state);
    }

    /// One note per asked fid, from memory.
    pub fn answer(&self, fids: &[Fid], config: &ConfigTree) -> Vec<Note> {
        fids.iter()
            .map(|&fid| {
                let state = if fid.is_process() {
                    self.process_answer(fid)
                } else if fid.is_service() {
                    match config.process_of_service(fid) {
                        Some(p) => self.process_answer(p),
                        None => HaState::Online,
                    }
                } else if fid.is_node() {
                    match config
                        .node_name_of(fid)
                        .and_then(|n| self.nodes_healthy.get(n))
                    {
                        Some(false) => HaState::Transient,
                        _ => HaState::Online,
                    }
                } else {
                    HaState::Online
                };
                Note { fid, state }
            })
            .collect()
    }

    fn process_answer(&self, p: Fid) -> HaState {
        match self.procs.get(&p) {
            None => HaState::Transient,
            Some(_) => self.state_of(p).unwrap_or(HaState::Online),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(p: Fid, e: ProcessEventKind, t: ProcessType) -> ProcessEvent {
        ProcessEvent {
            process: p,
            event: e,
            process_type: t,
            pid: 1,
            link: None,
            ack: None,
        }
    }
    fn health(p: Fid, ok: bool) -> ServiceHealth {
        ServiceHealth {
            process: p,
            service_name: "ios".into(),
            node: "n1".into(),
            healthy: ok,
            node_healthy: true,
        }
    }

    #[test]
    fn m0d_states_follow_the_behaviour_table() {
        let mut m = HaModel::default();
        let p = Fid::typed(b'r', 1, 0xc);
        m.on_event(&ev(p, ProcessEventKind::Starting, ProcessType::M0d));
        assert_eq!(m.state_of(p), None, "STARTING is not broadcast");
        m.on_event(&ev(p, ProcessEventKind::Started, ProcessType::M0d));
        assert_eq!(m.state_of(p), Some(HaState::DtmRecovering));
        m.on_event(&ev(p, ProcessEventKind::DtmRecovered, ProcessType::M0d));
        assert_eq!(m.state_of(p), Some(HaState::Online));
        m.on_health(&health(p, false));
        assert_eq!(m.state_of(p), Some(HaState::Transient));
        m.on_health(&health(p, true));
        assert_eq!(m.state_of(p), Some(HaState::Online));
        m.on_event(&ev(p, ProcessEventKind::Stopped, ProcessType::M0d));
        assert_eq!(m.state_of(p), Some(HaState::Failed));
    }

    #[test]
    fn confd_and_mkfs_are_online_when_started() {
        let mut m = HaModel::default();
        let confd = Fid::typed(b'r', 1, 9);
        let mkfs = Fid::typed(b'r', 1, 20);
        m.mark_special(confd);
        m.on_event(&ev(confd, ProcessEventKind::Started, ProcessType::M0d));
        m.on_event(&ev(mkfs, ProcessEventKind::Started, ProcessType::M0mkfs));
        assert_eq!(m.state_of(confd), Some(HaState::Online));
        assert_eq!(m.state_of(mkfs), Some(HaState::Online));
    }

    #[test]
    fn a_burst_that_ends_where_it_started_broadcasts_nothing() {
        let mut m = HaModel::default();
        let p = Fid::typed(b'r', 1, 0xc);
        let cfg = ConfigTree::default();
        m.on_event(&ev(p, ProcessEventKind::DtmRecovered, ProcessType::M0d));
        assert_eq!(m.changes([p], &cfg).len(), 1);
        m.on_health(&health(p, false));
        m.on_health(&health(p, true));
        assert!(m.changes([p], &cfg).is_empty());
        m.on_health(&health(p, false));
        assert_eq!(
            m.changes([p], &cfg),
            vec![Note {
                fid: p,
                state: HaState::Transient
            }]
        );
    }

    #[test]
    fn nvec_get_answers_every_fid_from_memory() {
        let mut m = HaModel::default();
        let p = Fid::typed(b'r', 1, 0xc);
        m.on_event(&ev(p, ProcessEventKind::DtmRecovered, ProcessType::M0d));
        let unknown = Fid::typed(b'r', 1, 0x99);
        let pool = Fid::typed(b'o', 1, 4);
        let a = m.answer(
            &[p, unknown, pool, Fid::new(0xff00_0000_0000_0000, 1)],
            &ConfigTree::default(),
        );
        let states: Vec<HaState> = a.iter().map(|n| n.state).collect();
        assert_eq!(
            states,
            vec![
                HaState::Online,
                HaState::Transient,
                HaState::Online,
                HaState::Online
            ]
        );
    }
}

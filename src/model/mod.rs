//! The HA model: one state function for every object of the configuration tree.
//!
//! The HA state of a node, enclosure, controller, process, service, sdev or drive is a pure
//! function of what hax knows (docs/ha-states.md has the table):
//! - the process events known cluster-wide (this node's links, `bq/`, `processes/` at start);
//! - Consul health (`health`: snapshots and deltas merged by Consul index);
//! - the RC's decisions (`states/` and `bq/` object updates).
//!
//! What Motr hears are exactly the differences of that function: `changes` computes the
//! function for what the last inputs touched and returns the notes that differ from what was
//! last said; NVEC GET (`answer`) answers what was last said (a fid never said yet is said
//! now, and remembered as said). So what a GET answers and what the last broadcast said never
//! disagree. The model is plain data, tested without actors (`tests` here, and the property
//! test in tests/).
pub mod health;
pub mod topology;

use crate::fid::Fid;
use crate::motr::{HaState, Note, ProcessEventKind, ProcessType};
use crate::view::ConfigTree;
use health::{Changed, Health, HealthBook, Snapshot};
use std::collections::{BTreeSet, HashMap};
use topology::{Role, Topology};

/// The last event of a process that decides its state (STARTING and STOPPING decide
/// nothing: the state stays what the event before them made it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Started,
    DtmRecovered,
    Stopped,
}

#[derive(Default)]
pub struct HaModel {
    topo: Topology,
    events: HashMap<Fid, Life>,
    types: HashMap<Fid, ProcessType>,
    health: HealthBook,
    /// States the RC decided (`states/`, object updates in `bq/`).
    decided: HashMap<Fid, HaState>,
    /// What Motr was last told, per fid.
    said: HashMap<Fid, HaState>,
    /// Objects the last inputs may have changed.
    dirty: BTreeSet<Fid>,
    /// hax's own process: ONLINE while it runs, whatever its (lagging) Consul check says.
    own: Option<Fid>,
}

impl HaModel {
    /// Sets the configuration tree (the objects and how they hang together).
    pub fn set_config(&mut self, t: &ConfigTree) {
        self.topo = Topology::new(t);
        // The function may change for anything the tree names.
        let all: Vec<Fid> = self.topo.all().collect();
        self.dirty.extend(all);
        self.dirty.extend(self.said.keys().copied());
    }

    /// hax's own process.
    pub fn set_own(&mut self, p: Fid) {
        self.own = Some(p);
        self.touch_process(p);
    }

    /// A process event (from a link, from `bq/`, or `processes/` read at start).
    pub fn on_event(&mut self, p: Fid, kind: ProcessEventKind, ptype: ProcessType) {
        self.types.insert(p, ptype);
        let life = match kind {
            ProcessEventKind::Started => Life::Started,
            ProcessEventKind::DtmRecovered => Life::DtmRecovered,
            ProcessEventKind::Stopped => Life::Stopped,
            ProcessEventKind::Starting | ProcessEventKind::Stopping => return,
        };
        if self.events.insert(p, life) != Some(life) {
            self.touch_process(p);
        }
    }

    /// A health snapshot; false when it was stale (changed nothing). A snapshot that drops
    /// hax itself (or its node) is taken for what it lists only (`HealthBook::drops_the_living`).
    pub fn on_snapshot(&mut self, s: &Snapshot) -> bool {
        let own_node = self
            .own
            .and_then(|p| self.topo.node_of(p))
            .and_then(|n| self.topo.name_of_node(n))
            .map(str::to_string);
        let implausible = self
            .own
            .is_some_and(|own| self.health.drops_the_living(s, own, own_node.as_deref()));
        let applied = if implausible {
            log::warn!(
                "HA model: health from {} at index {} no longer lists this hax{}: what it lists is taken, what it leaves out is not taken as removed",
                s.source,
                s.index,
                if s.coverage == health::Coverage::All { " or its node" } else { "" }
            );
            let mut listed = s.clone();
            listed.coverage = health::Coverage::Listed;
            self.health.apply(&listed)
        } else {
            self.health.apply(s)
        };
        match applied {
            Some(c) => {
                self.touch_changed(c);
                true
            }
            None => false,
        }
    }

    /// One process's health as of a Consul index.
    pub fn on_process_health(&mut self, p: Fid, h: Health, index: u64) {
        if self.health.apply_process(p, h, index) {
            self.touch_process(p);
        }
    }

    /// One node's health as of a Consul index.
    pub fn on_node_health(&mut self, node: &str, h: Health, index: u64) {
        if self.health.apply_node(node, h, index) {
            self.touch_node_named(node);
        }
    }

    /// A state the RC decided for an object (`ONLINE` clears a sticky drive state).
    pub fn on_decision(&mut self, fid: Fid, state: HaState) {
        if self.decided.insert(fid, state) != Some(state) {
            self.touch(fid);
        }
    }

    /// Motr was told `state` for `fid` by someone else (MeroLink's restart handling).
    pub fn record_said(&mut self, fid: Fid, state: HaState) {
        self.said.insert(fid, state);
        self.dirty.insert(fid);
    }

    /// Health as last known (None: Consul has not said).
    pub fn health(&self, p: Fid) -> Option<Health> {
        self.health.process(p)
    }

    fn touch_changed(&mut self, c: Changed) {
        for p in c.processes {
            self.touch_process(p);
        }
        for n in c.nodes {
            self.touch_node_named(&n);
        }
    }

    fn touch(&mut self, f: Fid) {
        match self.topo.role(f) {
            Some(Role::Process) | None if f.is_process() => self.touch_process(f),
            Some(Role::Node) => self.touch_node(f),
            Some(Role::Sdev { .. }) => {
                self.dirty.insert(f);
                if let Some(k) = self.topo.drive_of(f) {
                    self.dirty.insert(k);
                }
            }
            _ => {
                self.dirty.insert(f);
            }
        }
    }

    /// A process's state may have changed: so may its services, sdevs and drives, and its
    /// node (a node fails once all its IO processes did), and the node's hardware.
    fn touch_process(&mut self, p: Fid) {
        self.dirty.insert(p);
        self.dirty.extend(self.topo.services_of(p).iter().copied());
        for &d in self.topo.sdevs_of(p) {
            self.dirty.insert(d);
            if let Some(k) = self.topo.drive_of(d) {
                self.dirty.insert(k);
            }
        }
        if let Some(n) = self.topo.node_of(p) {
            self.dirty.insert(n);
            self.dirty.extend(self.topo.hardware_of(n).iter().copied());
        }
    }

    fn touch_node_named(&mut self, name: &str) {
        if let Some(n) = self.topo.node_named(name) {
            self.touch_node(n);
        }
    }

    fn touch_node(&mut self, n: Fid) {
        self.dirty.insert(n);
        self.dirty.extend(self.topo.hardware_of(n).iter().copied());
        let processes: Vec<Fid> = self.topo.processes_on(n).to_vec();
        for p in processes {
            self.touch_process(p);
        }
    }

    // ------------------------------------------------------------------ the state function

    /// The HA state of any fid now (see docs/ha-states.md).
    pub fn state(&self, f: Fid) -> HaState {
        match self.topo.role(f) {
            Some(Role::Process) => self.process_state(f),
            Some(Role::Service { process }) => self.process_state(process),
            Some(Role::Sdev { process }) => self.sdev_state(f, process),
            Some(Role::Drive { sdev }) => match self.topo.role(sdev) {
                Some(Role::Sdev { process }) => self
                    .decided_sticky(f)
                    .unwrap_or(self.sdev_state(sdev, process)),
                _ => HaState::Online,
            },
            Some(Role::Node) => self.node_state(f),
            Some(Role::Enclosure { node }) | Some(Role::Controller { node }) => {
                match self.decided.get(&f) {
                    Some(s) if *s != HaState::Online => *s,
                    _ => self.node_state(node),
                }
            }
            None if f.is_process() => self.process_state(f),
            None => self.decided.get(&f).copied().unwrap_or(HaState::Online),
        }
    }

    fn node_health(&self, node: Fid) -> Option<Health> {
        self.topo
            .name_of_node(node)
            .and_then(|name| self.health.node(name))
    }

    fn process_state(&self, p: Fid) -> HaState {
        if let Some(HaState::Failed) = self.decided.get(&p) {
            return HaState::Failed;
        }
        let life = self.events.get(&p).copied();
        if self.own == Some(p) && life != Some(Life::Stopped) {
            // hax itself: ONLINE while it runs (its Consul check lags behind at start).
            return HaState::Online;
        }
        if life == Some(Life::Stopped) {
            return HaState::Failed;
        }
        let node = self.topo.node_of(p).and_then(|n| self.node_health(n));
        let health = self.health.process(p);
        if health == Some(Health::Gone) || node == Some(Health::Gone) {
            return HaState::Failed;
        }
        if health == Some(Health::Failing) || node == Some(Health::Failing) {
            return HaState::Transient;
        }
        match life {
            Some(Life::Started) if self.topo.has_dtm0(p) => HaState::DtmRecovering,
            Some(Life::Started) | Some(Life::DtmRecovered) => HaState::Online,
            Some(Life::Stopped) => HaState::Failed,
            // Known only from Consul (another node's process, or any after hax restarted).
            None if health == Some(Health::Passing) => HaState::Online,
            None => HaState::Transient,
        }
    }

    /// A drive state the RC decided that stays whatever the process does.
    fn decided_sticky(&self, f: Fid) -> Option<HaState> {
        match self.decided.get(&f) {
            Some(
                s @ (HaState::Failed | HaState::Repair | HaState::Repaired | HaState::Rebalance),
            ) => Some(*s),
            _ => None,
        }
    }

    fn sdev_state(&self, d: Fid, process: Fid) -> HaState {
        if let Some(s) = self.decided_sticky(d) {
            return s;
        }
        match self.process_state(process) {
            HaState::Online => HaState::Online,
            // A process that is not serving takes its drives offline (TRANSIENT to Motr).
            _ => HaState::Transient,
        }
    }

    fn node_state(&self, n: Fid) -> HaState {
        if let Some(s) = self.decided.get(&n) {
            if *s != HaState::Online {
                return *s;
            }
        }
        match self.node_health(n) {
            Some(Health::Gone) => return HaState::Failed,
            Some(Health::Failing) => return HaState::Transient,
            _ => {}
        }
        let ios: Vec<Fid> = self
            .topo
            .processes_on(n)
            .iter()
            .copied()
            .filter(|p| self.topo.is_ios(*p))
            .collect();
        if !ios.is_empty()
            && ios
                .iter()
                .all(|p| self.process_state(*p) == HaState::Failed)
        {
            return HaState::Failed;
        }
        HaState::Online
    }

    // ------------------------------------------------------------------ what Motr hears

    /// The notes to broadcast: every fid the last inputs touched whose state differs from
    /// what Motr was last told (a process's note first, then its services', sdevs', drives').
    /// Records them as said.
    pub fn changes(&mut self) -> Vec<Note> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut out = Vec::new();
        for f in dirty {
            let s = self.state(f);
            if self.said.get(&f) == Some(&s) {
                continue;
            }
            self.said.insert(f, s);
            out.push(Note { fid: f, state: s });
        }
        // Processes before their services and devices, nodes last: the order Motr's readers
        // of a broadcast find most natural (each fid appears once).
        out.sort_by_key(|n| order(self.topo.role(n.fid), n.fid));
        out
    }

    /// Whether inputs touched something not broadcast yet.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// One note per asked fid: what Motr was last told about it (a fid never told yet is told
    /// now: its state, remembered as said).
    pub fn answer(&mut self, fids: &[Fid]) -> Vec<Note> {
        fids.iter()
            .map(|&fid| {
                let state = match self.said.get(&fid) {
                    Some(s) => *s,
                    None => {
                        let s = self.state(fid);
                        self.said.insert(fid, s);
                        s
                    }
                };
                Note { fid, state }
            })
            .collect()
    }

    /// What Motr was last told of `f` (None: nothing yet), without saying anything.
    pub fn last_said(&self, f: Fid) -> Option<HaState> {
        self.said.get(&f).copied()
    }

    /// What was last said of every object of the tree (for a link that reconnected: the
    /// process did not hear what changed while it was away). Objects never said are said now.
    pub fn full_state(&mut self) -> Vec<Note> {
        let mut fids: Vec<Fid> = self.topo.all().collect();
        fids.sort_by_key(|f| order(self.topo.role(*f), *f));
        self.answer(&fids)
    }
}

fn order(role: Option<Role>, f: Fid) -> (u8, Fid) {
    let rank = match role {
        Some(Role::Process) => 0,
        Some(Role::Service { .. }) => 1,
        Some(Role::Sdev { .. }) => 2,
        Some(Role::Drive { .. }) => 3,
        Some(Role::Node) => 4,
        Some(Role::Enclosure { .. }) | Some(Role::Controller { .. }) => 5,
        None => 6,
    };
    (rank, f)
}

#[cfg(test)]
mod tests;

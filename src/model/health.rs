//! What Consul says about health, merged by Consul index.
//!
//! Every report is a *fact* true as of a Consul index (`X-Consul-Index`, a raft index: one
//! clock for the whole cluster). For each process and each node the model keeps the newest
//! fact from any source, so an older report never overrides a newer one, whichever way they
//! arrived. Snapshots (a watch delivery, an answer to hax's own query) are complete for what
//! they cover: a process or node listed in an earlier snapshot of the same source and absent
//! from a newer one is *gone* (deregistered, or its node removed from the catalog). A snapshot
//! no newer than the last one taken from its source is stale (Consul re-sends old bodies after
//! a leader change) and changes nothing.
use crate::fid::Fid;
use std::collections::{HashMap, HashSet};

/// One service instance's health in Consul.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceHealth {
    /// The Consul ServiceID: a process fid for Motr processes.
    pub process: Fid,
    pub service_name: String,
    pub node: String,
    /// Every check of the entry (serfHealth included) is passing.
    pub healthy: bool,
    /// The node's own checks (serfHealth) are passing.
    pub node_healthy: bool,
}

/// What a snapshot covers: what is absent from it is gone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Coverage {
    /// Every instance of one service name (a `service` watch, `/v1/health/service/<name>`).
    Service(String),
    /// Every service and check of one node (`/v1/health/node/<node>`).
    Node(String),
    /// Every check of the datacenter (a `checks` watch, `/v1/health/state/any`).
    All,
    /// Nothing can be said of what is absent (e.g. an empty body on an unnamed path).
    Listed,
    /// Every check of the datacenter that is not passing (`/v1/health/state/any` filtered):
    /// a process or node held failing as of an older index and absent from it passes now.
    NotPassing,
}

/// One health report.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Where it came from (a watch path, a query): indexes are compared per source.
    pub source: String,
    /// Consul's index for it; 0 when unknown (then it counts as the newest).
    pub index: u64,
    pub coverage: Coverage,
    pub entries: Vec<ServiceHealth>,
    /// Node checks (serfHealth, node maintenance): (node, all passing).
    pub nodes: Vec<(String, bool)>,
}

/// One health fact reported through the cluster's broadcast queue (`bq/`): a process's health
/// (published by the hax of its node) or a node's (published by the RC leader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthDelta {
    Process {
        fid: Fid,
        health: Health,
        index: u64,
    },
    Node {
        node: String,
        health: Health,
        index: u64,
    },
}

/// A process's or a node's health, as of some index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Passing,
    Failing,
    Gone,
}

impl Health {
    pub fn name(&self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Failing => "failing",
            Health::Gone => "gone",
        }
    }

    pub fn from_name(s: &str) -> Option<Health> {
        match s {
            "passing" => Some(Health::Passing),
            "failing" => Some(Health::Failing),
            "gone" => Some(Health::Gone),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fact {
    health: Health,
    index: u64,
}

#[derive(Default)]
struct Source {
    index: u64,
    processes: HashSet<Fid>,
    nodes: HashSet<String>,
}

/// What a report changed: processes and nodes (by name) whose health is not what it was.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub processes: Vec<Fid>,
    pub nodes: Vec<String>,
}

#[derive(Default)]
pub struct HealthBook {
    sources: HashMap<String, Source>,
    processes: HashMap<Fid, Fact>,
    nodes: HashMap<String, Fact>,
    /// The highest index seen: what an unindexed report counts as.
    newest: u64,
}

impl HealthBook {
    pub fn process(&self, p: Fid) -> Option<Health> {
        self.processes.get(&p).map(|f| f.health)
    }

    pub fn node(&self, name: &str) -> Option<Health> {
        self.nodes.get(name).map(|f| f.health)
    }

    /// The node a process's health was last reported on.
    pub fn known_processes(&self) -> impl Iterator<Item = Fid> + '_ {
        self.processes.keys().copied()
    }

    /// Whether `s` no longer lists what its source listed before and must still be there:
    /// hax's own process (hax runs, so it is registered) or, for a snapshot of every check,
    /// hax's node. Consul answers such snapshots for a while after a partition heals (a
    /// server catching up serves its node without services); taking their absences for
    /// removals would fail live processes.
    pub fn drops_the_living(&self, s: &Snapshot, own: Fid, own_node: Option<&str>) -> bool {
        let Some(src) = self.sources.get(&s.source) else {
            return false;
        };
        match s.coverage {
            Coverage::Listed | Coverage::NotPassing => return false,
            _ => {}
        }
        if src.processes.contains(&own) && !s.entries.iter().any(|e| e.process == own) {
            return true;
        }
        match (own_node, &s.coverage) {
            (Some(n), Coverage::All) => {
                src.nodes.contains(n)
                    && !s.nodes.iter().any(|(m, _)| m == n)
                    && !s.entries.iter().any(|e| e.node == n)
            }
            _ => false,
        }
    }

    /// Applies a snapshot. None when it is stale (no newer than the last from its source).
    pub fn apply(&mut self, s: &Snapshot) -> Option<Changed> {
        let index = if s.index == 0 { self.newest } else { s.index };
        let src = self.sources.entry(s.source.clone()).or_default();
        if s.index != 0 && s.index <= src.index {
            return None;
        }
        src.index = src.index.max(index);
        self.newest = self.newest.max(index);
        let listed: HashSet<Fid> = s.entries.iter().map(|e| e.process).collect();
        let listed_nodes: HashSet<String> = s
            .nodes
            .iter()
            .map(|(n, _)| n.clone())
            .chain(s.entries.iter().map(|e| e.node.clone()))
            .collect();
        let absent_processes: Vec<Fid> = match &s.coverage {
            Coverage::Listed | Coverage::NotPassing => Vec::new(),
            _ => src.processes.difference(&listed).copied().collect(),
        };
        let absent_nodes: Vec<String> = match &s.coverage {
            Coverage::All => src.nodes.difference(&listed_nodes).cloned().collect(),
            _ => Vec::new(),
        };
        if s.coverage == Coverage::Listed {
            // Says nothing of the rest: what the source listed before still counts.
            src.processes.extend(listed);
            src.nodes.extend(listed_nodes);
        } else {
            src.processes = listed;
            src.nodes = listed_nodes;
        }
        let mut changed = Changed::default();
        for e in &s.entries {
            let h = if e.healthy {
                Health::Passing
            } else {
                Health::Failing
            };
            if merge(&mut self.processes, e.process, h, index) {
                changed.processes.push(e.process);
            }
        }
        for p in absent_processes {
            if merge(&mut self.processes, p, Health::Gone, index) {
                changed.processes.push(p);
            }
        }
        let mut node_health: HashMap<&str, bool> = HashMap::new();
        for e in &s.entries {
            *node_health.entry(e.node.as_str()).or_insert(true) &= e.node_healthy;
        }
        for (n, ok) in &s.nodes {
            *node_health.entry(n.as_str()).or_insert(true) &= *ok;
        }
        for (n, ok) in node_health {
            let h = if ok { Health::Passing } else { Health::Failing };
            if merge(&mut self.nodes, n.to_string(), h, index) {
                changed.nodes.push(n.to_string());
            }
        }
        for n in absent_nodes {
            if merge(&mut self.nodes, n.clone(), Health::Gone, index) {
                changed.nodes.push(n);
            }
        }
        if s.coverage == Coverage::NotPassing {
            fn recovered<K: Clone>(m: &HashMap<K, Fact>, index: u64) -> Vec<K> {
                m.iter()
                    .filter(|(_, f)| f.health == Health::Failing && f.index < index)
                    .map(|(k, _)| k.clone())
                    .collect()
            }
            for p in recovered(&self.processes, index) {
                if !src.processes.contains(&p)
                    && merge(&mut self.processes, p, Health::Passing, index)
                {
                    changed.processes.push(p);
                }
            }
            for n in recovered(&self.nodes, index) {
                if !src.nodes.contains(&n)
                    && merge(&mut self.nodes, n.clone(), Health::Passing, index)
                {
                    changed.nodes.push(n);
                }
            }
        }
        Some(changed)
    }

    /// One process's health as of `index` (a delta reported through the cluster's queue).
    /// Answers whether it changed what the book holds.
    pub fn apply_process(&mut self, p: Fid, h: Health, index: u64) -> bool {
        let index = if index == 0 { self.newest } else { index };
        self.newest = self.newest.max(index);
        merge(&mut self.processes, p, h, index)
    }

    /// One node's health as of `index`.
    pub fn apply_node(&mut self, node: &str, h: Health, index: u64) -> bool {
        let index = if index == 0 { self.newest } else { index };
        self.newest = self.newest.max(index);
        merge(&mut self.nodes, node.to_string(), h, index)
    }
}

/// Keeps the newer fact (an equal index: the later report); answers whether the health
/// changed.
fn merge<K: std::hash::Hash + Eq>(m: &mut HashMap<K, Fact>, k: K, h: Health, index: u64) -> bool {
    match m.get_mut(&k) {
        Some(f) if f.index > index => false,
        Some(f) => {
            let changed = f.health != h;
            *f = Fact { health: h, index };
            changed
        }
        None => {
            m.insert(k, Fact { health: h, index });
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(p: u64, node: &str, ok: bool) -> ServiceHealth {
        ServiceHealth {
            process: Fid::typed(b'r', 1, p),
            service_name: "ios".into(),
            node: node.into(),
            healthy: ok,
            node_healthy: true,
        }
    }

    fn snap(source: &str, index: u64, cov: Coverage, entries: Vec<ServiceHealth>) -> Snapshot {
        Snapshot {
            source: source.into(),
            index,
            coverage: cov,
            entries,
            nodes: vec![],
        }
    }

    const IOS: fn() -> Coverage = || Coverage::Service("ios".into());

    #[test]
    fn an_older_snapshot_never_overrides_a_newer_fact_from_any_source() {
        let mut b = HealthBook::default();
        let p = Fid::typed(b'r', 1, 1);
        b.apply(&snap("w/ios", 10, IOS(), vec![sh(1, "n1", true)]));
        b.apply(&snap(
            "w/checks",
            20,
            Coverage::All,
            vec![sh(1, "n1", false)],
        ));
        assert_eq!(b.process(p), Some(Health::Failing));
        // The ios watch's later delivery carries an older index (it was delayed).
        let c = b.apply(&snap("w/ios", 15, IOS(), vec![sh(1, "n1", true)]));
        assert_eq!(c, Some(Changed::default()));
        assert_eq!(b.process(p), Some(Health::Failing));
    }

    #[test]
    fn a_re_sent_body_with_an_old_or_the_same_index_is_stale() {
        let mut b = HealthBook::default();
        assert!(b
            .apply(&snap("w/ios", 10, IOS(), vec![sh(1, "n1", true)]))
            .is_some());
        assert!(b
            .apply(&snap("w/ios", 10, IOS(), vec![sh(1, "n1", false)]))
            .is_none());
        assert!(b
            .apply(&snap("w/ios", 9, IOS(), vec![sh(1, "n1", false)]))
            .is_none());
        assert_eq!(b.process(Fid::typed(b'r', 1, 1)), Some(Health::Passing));
    }

    #[test]
    fn what_a_newer_snapshot_of_the_same_source_does_not_list_is_gone() {
        let mut b = HealthBook::default();
        b.apply(&snap(
            "w/ios",
            10,
            IOS(),
            vec![sh(1, "n1", true), sh(2, "n2", true)],
        ));
        let c = b
            .apply(&snap("w/ios", 11, IOS(), vec![sh(1, "n1", true)]))
            .unwrap();
        assert_eq!(c.processes, vec![Fid::typed(b'r', 1, 2)]);
        assert_eq!(b.process(Fid::typed(b'r', 1, 2)), Some(Health::Gone));
        // Back, registered again.
        b.apply(&snap("w/ios", 12, IOS(), vec![sh(2, "n2", true)]));
        assert_eq!(b.process(Fid::typed(b'r', 1, 2)), Some(Health::Passing));
        assert_eq!(b.process(Fid::typed(b'r', 1, 1)), Some(Health::Gone));
    }

    #[test]
    fn a_node_missing_from_a_newer_all_checks_snapshot_is_gone() {
        let mut b = HealthBook::default();
        let mut s = snap("q/all", 5, Coverage::All, vec![]);
        s.nodes = vec![("n1".into(), true), ("n2".into(), true)];
        b.apply(&s);
        s.index = 6;
        s.nodes = vec![("n1".into(), true)];
        b.apply(&s);
        assert_eq!(b.node("n2"), Some(Health::Gone));
        assert_eq!(b.node("n1"), Some(Health::Passing));
    }

    #[test]
    fn a_not_passing_snapshot_clears_only_older_failures_it_no_longer_lists() {
        let mut b = HealthBook::default();
        b.apply(&snap(
            "w/ios",
            10,
            IOS(),
            vec![sh(1, "n1", false), sh(2, "n1", false)],
        ));
        b.apply(&snap(
            "w/ios",
            30,
            IOS(),
            vec![sh(1, "n1", false), sh(2, "n1", false), sh(3, "n1", false)],
        ));
        // The safety net at index 20 lists only process 2: process 1 failed again since
        // (index 30), so the older query cannot clear it; process 3 likewise.
        let c = b
            .apply(&snap(
                "q/not-passing",
                20,
                Coverage::NotPassing,
                vec![sh(2, "n1", false)],
            ))
            .unwrap();
        assert!(c.processes.is_empty());
        // At index 40 it lists nothing: every failure older than it is over.
        let c = b
            .apply(&snap("q/not-passing", 40, Coverage::NotPassing, vec![]))
            .unwrap();
        assert_eq!(c.processes.len(), 3);
        assert_eq!(b.process(Fid::typed(b'r', 1, 1)), Some(Health::Passing));
    }
}

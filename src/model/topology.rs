//! The configuration tree as the HA model walks it: which process a service, sdev or drive
//! belongs to, which node a process, enclosure or controller belongs to, and back. Built once
//! per configuration tree, so that every step of the state function is a map lookup.
use crate::fid::Fid;
use crate::view::ConfigTree;
use std::collections::{HashMap, HashSet};

/// What an object of the tree is (by where it appears in the tree, not by its type byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Process,
    Service { process: Fid },
    Sdev { process: Fid },
    Drive { sdev: Fid },
    Node,
    Enclosure { node: Fid },
    Controller { node: Fid },
}

#[derive(Default)]
pub struct Topology {
    roles: HashMap<Fid, Role>,
    node_of_process: HashMap<Fid, Fid>,
    node_by_name: HashMap<String, Fid>,
    node_name: HashMap<Fid, String>,
    services: HashMap<Fid, Vec<Fid>>,
    sdevs_of_process: HashMap<Fid, Vec<Fid>>,
    drive_of_sdev: HashMap<Fid, Fid>,
    processes_of_node: HashMap<Fid, Vec<Fid>>,
    hardware_of_node: HashMap<Fid, Vec<Fid>>,
    ios: HashSet<Fid>,
    dtm0: HashSet<Fid>,
}

impl Topology {
    pub fn new(t: &ConfigTree) -> Topology {
        let mut topo = Topology::default();
        for (n, name) in &t.nodes {
            topo.roles.insert(*n, Role::Node);
            topo.node_by_name.insert(name.clone(), *n);
            topo.node_name.insert(*n, name.clone());
        }
        for (n, hw) in &t.hardware {
            for (f, role) in [
                (hw.enclosure, Role::Enclosure { node: *n }),
                (hw.controller, Role::Controller { node: *n }),
            ] {
                if let Some(f) = f {
                    topo.roles.insert(f, role);
                    topo.hardware_of_node.entry(*n).or_default().push(f);
                }
            }
        }
        let mut process_of_service = HashMap::new();
        for (p, pc) in &t.processes {
            topo.roles.insert(*p, Role::Process);
            topo.node_of_process.insert(*p, pc.node);
            topo.processes_of_node.entry(pc.node).or_default().push(*p);
            for (s, ty) in &pc.services {
                topo.roles.insert(*s, Role::Service { process: *p });
                process_of_service.insert(*s, *p);
                topo.services.entry(*p).or_default().push(*s);
                match ty.as_str() {
                    "ios" => {
                        topo.ios.insert(*p);
                    }
                    "dtm0" => {
                        topo.dtm0.insert(*p);
                    }
                    _ => {}
                }
            }
        }
        for (d, sc) in &t.sdevs {
            let Some(&p) = process_of_service.get(&sc.service) else {
                continue;
            };
            topo.roles.insert(*d, Role::Sdev { process: p });
            topo.sdevs_of_process.entry(p).or_default().push(*d);
            if let Some(k) = sc.drive {
                topo.roles.insert(k, Role::Drive { sdev: *d });
                topo.drive_of_sdev.insert(*d, k);
            }
        }
        topo
    }

    pub fn role(&self, f: Fid) -> Option<Role> {
        self.roles.get(&f).copied()
    }

    pub fn node_of(&self, process: Fid) -> Option<Fid> {
        self.node_of_process.get(&process).copied()
    }

    pub fn node_named(&self, name: &str) -> Option<Fid> {
        self.node_by_name.get(name).copied()
    }

    pub fn name_of_node(&self, node: Fid) -> Option<&str> {
        self.node_name.get(&node).map(String::as_str)
    }

    pub fn services_of(&self, process: Fid) -> &[Fid] {
        self.services.get(&process).map_or(&[], Vec::as_slice)
    }

    pub fn sdevs_of(&self, process: Fid) -> &[Fid] {
        self.sdevs_of_process
            .get(&process)
            .map_or(&[], Vec::as_slice)
    }

    pub fn drive_of(&self, sdev: Fid) -> Option<Fid> {
        self.drive_of_sdev.get(&sdev).copied()
    }

    pub fn processes_on(&self, node: Fid) -> &[Fid] {
        self.processes_of_node.get(&node).map_or(&[], Vec::as_slice)
    }

    pub fn hardware_of(&self, node: Fid) -> &[Fid] {
        self.hardware_of_node.get(&node).map_or(&[], Vec::as_slice)
    }

    /// The process runs an IO service.
    pub fn is_ios(&self, process: Fid) -> bool {
        self.ios.contains(&process)
    }

    /// The process has a DTM0 service: only then does it report DTM_RECOVERED after STARTED.
    pub fn has_dtm0(&self, process: Fid) -> bool {
        self.dtm0.contains(&process)
    }

    /// Every object of the tree.
    pub fn all(&self) -> impl Iterator<Item = Fid> + '_ {
        self.roles.keys().copied()
    }

    pub fn nodes(&self) -> impl Iterator<Item = Fid> + '_ {
        self.node_name.keys().copied()
    }
}

//! Module state of one OpenSIPS process.
//!
//! Modparams are collected in the main process before fork; `mod_init` validates them into a
//! [`ModuleState`] that every forked child inherits. The node list can change at run time
//! (MI `rtpproxy_reload`): the current list lives in shm as text with a generation number
//! ([`super::shared::SharedList`]), and each process rebuilds its own [`Topology`] when it sees
//! a newer generation. Node health lives in the shm slots of [`super::shared::SharedNodes`].

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::core::config::{
    ConfigError, ModParams, ModuleConfig, NodeSpec, SetId, SetSpec, SetsBuilder,
};
use crate::core::control::callmap;

use super::shared::{CallMap, NodeSlot, SharedList, SharedNodes};
use crate::error::LifecycleError;
use crate::host::bind::events::Events;

/// Modparams as the configuration file gives them (main process, before `mod_init`).
pub(crate) static PARAMS: Mutex<Option<ModParams>> = Mutex::new(None);

static STATE: OnceLock<ModuleState> = OnceLock::new();

/// One node as every process sees it.
pub(crate) struct NodeView {
    /// Global 0-based index (MI `index`, shm slot).
    pub(crate) index: usize,
    /// The node-list generation this view belongs to.
    pub(crate) generation: u64,
    /// The node's identity across reloads ([`callmap::node_key`] of its URL).
    pub(crate) key: u32,
    /// What the configuration says about it.
    pub(crate) spec: NodeSpec,
}

/// One set of nodes.
pub(crate) struct SetView {
    pub(crate) id: SetId,
    pub(crate) nodes: Vec<NodeView>,
}

/// The node list of one generation.
pub(crate) struct Topology {
    pub(crate) generation: u64,
    pub(crate) sets: Vec<SetView>,
}

impl Topology {
    /// Builds the views of `sets` (node indexes as the config grammar assigned them).
    pub(crate) fn new(generation: u64, sets: &[SetSpec]) -> Self {
        let sets = sets
            .iter()
            .map(|s| SetView {
                id: s.id,
                nodes: s
                    .nodes
                    .iter()
                    .map(|n| NodeView {
                        index: n.index,
                        generation,
                        key: callmap::node_key(&n.url),
                        spec: n.clone(),
                    })
                    .collect(),
            })
            .collect();
        Self { generation, sets }
    }
}

/// Everything `mod_init` established.
pub(crate) struct ModuleState {
    pub(crate) config: ModuleConfig,
    pub(crate) shared: SharedNodes,
    pub(crate) list: SharedList,
    pub(crate) calls: CallMap,
    pub(crate) events: Events,
    /// This process's topology. Superseded topologies are leaked on purpose: a reload is
    /// rare, and callers may still hold `&'static` views of the previous one.
    topology: AtomicPtr<Topology>,
    topology_generation: AtomicU64,
}

impl ModuleState {
    pub(crate) fn new(
        config: ModuleConfig,
        shared: SharedNodes,
        list: SharedList,
        calls: CallMap,
        events: Events,
        initial: Topology,
    ) -> Self {
        let generation = initial.generation;
        Self {
            config,
            shared,
            list,
            calls,
            events,
            topology: AtomicPtr::new(Box::into_raw(Box::new(initial))),
            topology_generation: AtomicU64::new(generation),
        }
    }

    /// The shm slot of a node.
    pub(crate) fn slot(&self, node: &NodeView) -> Option<&NodeSlot> {
        self.shared.get_owned(node.index, node.generation)
    }

    /// The current sets, rebuilt from shm after a reload by any process.
    pub(crate) fn sets(&self) -> &'static [SetView] {
        &self.topology().sets
    }

    /// The current topology of this process.
    pub(crate) fn topology(&self) -> &'static Topology {
        let shared_gen = self.list.generation();
        if shared_gen != self.topology_generation.load(Ordering::Acquire) {
            // the list and its generation are read together: a reload published meanwhile
            // is seen whole, with its own generation
            if let Some((generation, values)) = self.list.read_values() {
                match decode_list(&values, self.config.default_set) {
                    Ok(sets) => self.replace(Topology::new(generation, &sets)),
                    Err(e) => {
                        tracing::error!("reloaded node list does not parse: {e}");
                        self.topology_generation
                            .store(generation, Ordering::Release);
                    }
                }
            }
        }
        let p = self.topology.load(Ordering::Acquire);
        // SAFETY: the pointer always comes from `Box::into_raw` and is never freed.
        #[allow(unsafe_code)]
        unsafe {
            &*p
        }
    }

    /// Installs a new topology in this process.
    pub(crate) fn replace(&self, t: Topology) {
        self.topology_generation
            .store(t.generation, Ordering::Release);
        self.topology
            .store(Box::into_raw(Box::new(t)), Ordering::Release);
    }
}

/// Publishes the state; only `mod_init` calls this, once.
pub(crate) fn install(state: ModuleState) -> Result<(), LifecycleError> {
    STATE
        .set(state)
        .map_err(|_| LifecycleError::AlreadyInitialized)
}

/// The module state, once `mod_init` has run.
pub(crate) fn get() -> Option<&'static ModuleState> {
    STATE.get()
}

/// Runs `f` on the modparams being collected.
pub(crate) fn with_params<R>(f: impl FnOnce(&mut ModParams) -> R) -> R {
    let mut guard = PARAMS.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(ModParams::default))
}

/// First line of a published node list: the set ids kept from before the reload, in order
/// (sets are never deleted, spec §2.6; an emptied set stays, with no nodes).
const SETS_LINE: &str = "#sets ";

/// The text published in shm for a reload: the kept set ids, then one `rtpproxy_sock` value
/// per DB row.
pub(crate) fn encode_list(kept: &[SetId], values: &[String]) -> Vec<String> {
    let ids: Vec<String> = kept.iter().map(ToString::to_string).collect();
    std::iter::once(format!("{SETS_LINE}{}", ids.join(",")))
        .chain(values.iter().cloned())
        .collect()
}

/// The sets of a published node list (see [`encode_list`]).
pub(crate) fn decode_list(
    lines: &[String],
    default_set: SetId,
) -> Result<Vec<SetSpec>, ConfigError> {
    let mut rest = lines;
    let mut kept = Vec::new();
    if let Some(first) = lines.first().and_then(|l| l.strip_prefix(SETS_LINE)) {
        for id in first.split(',').filter(|s| !s.is_empty()) {
            let id: SetId = id
                .trim()
                .parse()
                .map_err(|_| ConfigError::InvalidSetId(id.into()))?;
            kept.push(SetSpec {
                id,
                nodes: Vec::new(),
            });
        }
        rest = &lines[1..];
    }
    let mut b = SetsBuilder::reloading(&kept);
    for v in rest {
        b.add_sock_value(v, default_set)?;
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_list_round_trips_with_kept_empty_sets() {
        let lines = encode_list(
            &[3, 1],
            &[
                "1 == udp:10.0.0.1:2222 udp:10.0.0.2:2222=2".into(),
                "9 == tcp:h:1".into(),
            ],
        );
        let sets = decode_list(&lines, 0).unwrap();
        let ids: Vec<SetId> = sets.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![3, 1, 9]);
        assert!(sets[0].nodes.is_empty());
        assert_eq!(sets[1].nodes.len(), 2);
        assert_eq!(sets[1].nodes[1].weight, 2);
        // indexes restart at 0 in definition order
        assert_eq!(sets[1].nodes[0].index, 0);
        assert_eq!(sets[2].nodes[0].index, 2);
    }

    #[test]
    fn a_bad_published_line_is_an_error() {
        assert!(decode_list(&encode_list(&[], &["1 == udp:h:99999".into()]), 0).is_err());
    }
}

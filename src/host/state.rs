//! Module state of one OpenSIPS process.
//!
//! Modparams are collected in the main process before fork; `mod_init` validates them into a
//! [`ModuleState`] that every forked child inherits unchanged. Run-time changes go through the
//! shm region in [`super::shared`].

use std::sync::{Mutex, OnceLock};

use crate::core::config::{ModParams, ModuleConfig, NodeSpec, SetId};

use super::events::Events;
use super::shared::{NodeSlot, SharedNodes};

/// Modparams as the configuration file gives them (main process, before `mod_init`).
pub(crate) static PARAMS: Mutex<Option<ModParams>> = Mutex::new(None);

static STATE: OnceLock<ModuleState> = OnceLock::new();

/// One node as every process sees it.
pub(crate) struct NodeView {
    /// Global 0-based index (MI `index`, shm slot).
    pub(crate) index: usize,
    /// What the configuration says about it.
    pub(crate) spec: NodeSpec,
}

/// One set of nodes.
pub(crate) struct SetView {
    pub(crate) id: SetId,
    pub(crate) nodes: Vec<NodeView>,
}

/// Everything `mod_init` established.
pub(crate) struct ModuleState {
    pub(crate) config: ModuleConfig,
    pub(crate) sets: Vec<SetView>,
    pub(crate) shared: SharedNodes,
    pub(crate) events: Events,
}

impl ModuleState {
    /// The shm slot of a node.
    pub(crate) fn slot(&self, node: &NodeView) -> Option<&NodeSlot> {
        self.shared.get(node.index)
    }
}

/// Publishes the state; only `mod_init` calls this, once.
pub(crate) fn install(state: ModuleState) -> Result<(), &'static str> {
    STATE
        .set(state)
        .map_err(|_| "module state initialised twice")
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

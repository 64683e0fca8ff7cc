//! The node that holds an engaged call's sessions, kept in the dialog (issue 14).
//!
//! `rtpproxy_engage` stores the URL of the node that took the call's offer in the dialog
//! value `rtpproxy_node`, and stores it again whenever a later command of the call used
//! another node. The dialog module keeps dialog values in its database and replicates them to
//! the other instances of its cluster, so an instance that restored the dialog (restart) or
//! received it (takeover) sends the call's later commands — re-INVITEs, their replies, the
//! teardown `D` — to the same relay, whatever its own node order or call map says.
//!
//! The value holds the URL, not an index: indexes change with `rtpproxy_reload` and differ
//! between instances configured differently. A URL no longer in the node list (or a node
//! disabled on this instance) gives the normal node choice, with a log line.
//!
//! The C module does not know this value; the values it reads (`rtpproxy_1/2/3`,
//! `late_negotiation`) are written as it writes them (see [`super::dialog`]).

use crate::core::config::SetId;

use crate::host::bind::dlg_api::{Dlg, DlgBinds, DlgValue};
use crate::host::runtime::control;
use crate::host::runtime::state::{ModuleState, NodeView, SetView};

/// Dialog value: URL of the node holding the call's sessions.
pub(crate) const VAL_NODE: &[u8] = b"rtpproxy_node";

/// The node URL stored in the dialog, if any.
pub(crate) fn call_node_from_dialog(d: &DlgBinds, dlg: &Dlg<'_>) -> Option<String> {
    match d.fetch(dlg, VAL_NODE)? {
        DlgValue::Str(v) if !v.is_empty() => Some(String::from_utf8_lossy(&v).into_owned()),
        other => {
            tracing::warn!("unusable {} dialog value {other:?}", show(VAL_NODE));
            None
        }
    }
}

/// Records `url` as the call's node. Writes only when it changed: every write of a
/// confirmed dialog's value is replicated to the cluster.
pub(crate) fn store_call_node(d: &DlgBinds, dlg: &Dlg<'_>, url: &str) -> bool {
    if call_node_from_dialog(d, dlg).as_deref() == Some(url) {
        return true;
    }
    let ok = d.store_str(dlg, VAL_NODE, url.as_bytes());
    if !ok {
        tracing::error!("cannot store the RTPProxy node {url} into the dialog");
    }
    ok
}

/// The node `url` of a call in `set` of this instance's current node list, when it can be
/// used: listed and enabled. Otherwise `None`, logged, and the caller chooses as usual.
pub(crate) fn resolve<'a>(
    st: &ModuleState,
    set: &'a SetView,
    url: &str,
    call_id: &[u8],
) -> Option<&'a NodeView> {
    let Some(node) = set.nodes.iter().find(|n| n.spec.url == url) else {
        tracing::warn!(
            "RTPProxy {url} of call {} is not in set {} any more: choosing a node as usual",
            String::from_utf8_lossy(call_id),
            set.id
        );
        return None;
    };
    if !st.slot(node).is_some_and(|s| s.health().is_enabled()) {
        tracing::warn!(
            "RTPProxy {url} of call {} is disabled on this instance: choosing a node as usual",
            String::from_utf8_lossy(call_id)
        );
        return None;
    }
    Some(node)
}

/// Tells this instance's call map where the dialog's call is (a dialog restored or
/// replicated here, or its node moved on another instance), so that script functions called
/// for the call without the dialog (`rtpproxy_unforce`, ...) find the same node.
pub(crate) fn note_call_node(st: &ModuleState, d: &DlgBinds, dlg: &Dlg<'_>, set: SetId) {
    let Some(url) = call_node_from_dialog(d, dlg) else {
        return;
    };
    let Some(set) = control::find_set(st, Some(set)) else {
        return;
    };
    if let Some(node) = set.nodes.iter().find(|n| n.spec.url == url) {
        control::remember_call(st, dlg.call_id(), node);
    }
}

fn show(name: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(name)
}

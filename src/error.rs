//! Crate-wide error type joining the per-layer errors, the host's typed errors, and the one
//! place where an error becomes an OpenSIPS return code ([`Error::return_code`],
//! [`LifecycleError::return_code`]).

use std::ffi::c_int;

use crate::core::config::{ConfigError, SetId};
use crate::core::control::NodeFault;
use crate::core::media::MediaError;
use crate::core::offer::{FlagsError, OfferError};
use crate::core::proto::ProtoError;
use crate::io::transport::TransportError;

/// Any error this module can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A modparam or configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A command could not be built, or a reply could not be understood.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// A relay did not answer.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A media function (play, record, copy, query) was refused or failed.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// An offer/answer cannot be planned, or the relay's reply cannot be used for it.
    #[error(transparent)]
    Offer(#[from] OfferError),
    /// A feature that belongs to a later milestone.
    #[error("{0} is not implemented yet")]
    NotImplemented(&'static str),
    /// A host-side condition (no module state, a message without what the function needs).
    #[error(transparent)]
    Host(#[from] HostError),
    /// A relay command found no node, or every node it tried failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// Start-up, reload or per-process set-up failed.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// What a script function (or an API caller) passed cannot be used.
    #[error(transparent)]
    Script(#[from] ScriptError),
}

impl Error {
    /// The code a script function returns for this error. Every failure is -1, as in the C
    /// module (0 would stop the script); the match makes each new kind of error a decision.
    pub(crate) fn return_code(&self) -> c_int {
        match self {
            Self::Config(_)
            | Self::Proto(_)
            | Self::Transport(_)
            | Self::Media(_)
            | Self::Offer(_)
            | Self::NotImplemented(_)
            | Self::Host(_)
            | Self::Control(_)
            | Self::Lifecycle(_)
            | Self::Script(_) => -1,
        }
    }
}

/// Host-side failures common to several script functions (the text is the log line).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A function ran before `mod_init` installed the module state.
    #[error("module not initialized")]
    NotInitialized,
    /// The SIP message has no Call-ID header.
    #[error("no Call-ID in the message")]
    NoCallId,
    /// The SIP message has no From-tag.
    #[error("no From-tag in the message")]
    NoFromTag,
    /// The SIP message has no body at all.
    #[error("the message has no body")]
    NoBody,
    /// The host's per-process allocator refused.
    #[error("out of pkg memory")]
    OutOfPkgMemory,
    /// The host's shared-memory allocator refused.
    #[error("out of shared memory for the {0}")]
    OutOfShm(&'static str),
    /// A symbol of the OpenSIPS core is missing (not running inside OpenSIPS, or another
    /// version).
    #[error("OpenSIPS core symbol {0} not found")]
    MissingSymbol(&'static str),
    /// A host string is not UTF-8.
    #[error(transparent)]
    NotUtf8(#[from] NotUtf8),
    /// The core refused to register a statistic.
    #[error("cannot register statistic rtpproxy:{0}")]
    Statistic(String),
    /// The core refused to create the statistics group.
    #[error("cannot create the statistics group rtpproxy")]
    StatisticsGroup,
    /// A state the code relies on does not hold (a bug, logged instead of a panic).
    #[error("internal: {0}")]
    Internal(&'static str),
    /// A set id that is not (or no longer) configured.
    #[error("could not find RTPProxy set {0}")]
    NoSuchSet(i32),
    /// An SDP edit outside the message buffer.
    #[error("edit {offset}+{len} outside the message ({total} bytes)")]
    EditOutside {
        offset: usize,
        len: usize,
        total: usize,
    },
    /// The core refused to create (`"create"`) or to fill (`"insert"`) a lump.
    #[error("cannot {0} a lump")]
    Lump(&'static str),

    // ---- the notification process ----
    /// The core's process table is not there.
    #[error("no process table")]
    NoProcessTable,
    /// This process's entry of the process table names another pid (a wrong layout).
    #[error("process table entry does not describe this process (pid {0})")]
    ProcessEntry(i32),
    /// The descriptor of the process table entry is not a pipe.
    #[error("descriptor {0} is not an IPC pipe")]
    NotAPipe(i32),
    /// The notification socket cannot be bound.
    #[error("cannot listen: {0}")]
    Listen(#[source] std::io::Error),
    /// The notification listener stopped on an error.
    #[error(transparent)]
    Listener(std::io::Error),
    /// A fault injected by a test build.
    #[error("injected {0}")]
    Injected(&'static str),
    /// The guard caught a panic.
    #[error("panic")]
    Panicked,

    // ---- rtpproxy_engage and engaged dialogs ----
    /// The dialog module is not loaded.
    #[error("rtpproxy_engage needs the dialog module, which is not loaded")]
    EngageWithoutDialog,
    /// The tm module is not loaded.
    #[error("rtpproxy_engage needs the tm module")]
    EngageWithoutTm,
    /// Engage on anything but an INVITE.
    #[error("this function can only be called from an INVITE")]
    NotInvite,
    /// Engage on an INVITE within a dialog.
    #[error("this function can only be called from the initial INVITE")]
    NotInitialInvite,
    /// `create_dlg` failed.
    #[error("error creating the dialog")]
    DialogCreate,
    /// No dialog for the message being processed.
    #[error("cannot get the dialog")]
    NoDialog,
    /// No dialog for a requested timeout notification.
    #[error("failed to get the dialog for the timeout notification")]
    NoNotifyDialog,
    /// A callback on a dialog without the dialog module.
    #[error("no dialog module")]
    NoDialogModule,
    /// `store_dlg_value` failed for this value (named as the log line says it).
    #[error("cannot store {0} into the dialog")]
    DialogStore(&'static str),
    /// `register_dlgcb` failed for this callback.
    #[error("cannot register the dialog {0}")]
    DialogCallback(&'static str),
    /// tm's `register_tmcb` failed.
    #[error("failed to install the TM callback")]
    TmCallback,
    /// tm's `$bavp` could not be parsed at start-up.
    #[error("branch AVPs are not available (tm's $bavp)")]
    NoBranchAvps,
    /// Writing a branch AVP failed for this value.
    #[error("cannot store {0} in a branch AVP")]
    BranchAvpStore(&'static str),
    /// The CSeq header is missing or does not parse.
    #[error("cannot parse the CSeq header")]
    BadCseq,
    /// An ACK with SDP outside a late negotiation.
    #[error("not a late negotiation: an ACK cannot carry an SDP body")]
    UnexpectedAckSdp,
    /// The ACK of a late negotiation without SDP.
    #[error("the ACK of a late negotiation does not carry an SDP body")]
    MissingAckSdp,

    // ---- the rtp_relay engine ----
    /// rtp_relay passed no session.
    #[error("no session")]
    NoSession,
    /// Neither the session nor its message has the From-tag.
    #[error("can't get the From-tag")]
    SessionNoFromTag,
    /// Neither the session nor its message has the Call-ID.
    #[error("can't get the Call-ID")]
    SessionNoCallId,
    /// The configured default set does not exist.
    #[error("no default set {0}")]
    NoDefaultSet(i32),
    /// The session's set is gone.
    #[error("RTPProxy set {0} not available")]
    SetUnavailable(i32),
    /// The session's node cannot be used for this operation (`"answer"`, `"delete"`).
    #[error("cannot use RTPProxy {node} for the {op}")]
    NodeUnusable { node: String, op: &'static str },
    /// The session has no node for this operation (`"use"`, `"delete on"`).
    #[error("no RTPProxy node to {0}")]
    NoSessionNode(&'static str),
    /// Message mode without a message.
    #[error("no message and no body to return the SDP in")]
    NoMessageNoBody,
    /// The session's body does not lie in its message.
    #[error("the session body is not part of the message")]
    BodyOutsideMessage,
    /// No SDP in the session nor in its message.
    #[error("no SDP to work on")]
    NoSdp,
    /// The relay did not answer this command.
    #[error("no reply to {0}")]
    NoReplyTo(&'static str),
    /// A copy callback without its context or body.
    #[error("no context or body to fill")]
    NoCopyContext,
    /// A copy answer without a body.
    #[error("no answer body")]
    NoAnswerBody,
    /// Every stream copy failed.
    #[error("no stream could be copied")]
    NothingCopied,
    /// Every copy stop failed.
    #[error("no copy could be stopped")]
    NothingStopped,

    // ---- autobridge and the async functions ----
    /// `msg_callback_add` refused a callback of the autobridge (`"callbacks"`: the first,
    /// `"pre-forward callback"`: the second).
    #[error("cannot register the autobridge {0}")]
    AutobridgeCallback(&'static str),
    /// An async command cannot be handed to tm's reactor.
    #[error("cannot wait for the relay: {0}")]
    AsyncWait(#[source] std::io::Error),
}

/// What a script function (or a caller of the `load_rtpproxy` API) gave cannot be used: the
/// message lacks what the function needs, or a parameter holds no usable value. The text is
/// the log line.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    // ---- the message ----
    /// No message (NULL, or the FAKED_REPLY marker) for a function that needs one.
    #[error("no SIP message (or a faked reply)")]
    NoMessage,
    /// Offer/answer without a message and without the ids given by the caller.
    #[error("no SIP message to take the Call-ID and tags from")]
    NoMessageForIds,
    /// Offer/answer in message mode without a message.
    #[error("no SIP message to rewrite")]
    NoMessageToRewrite,
    /// An async offer/answer resumed without a message to rewrite.
    #[error("no SIP message")]
    NoResumeMessage,
    /// A media function on a message without a Call-ID.
    #[error("can't get the Call-ID of the message")]
    MessageNoCallId,
    /// A media function on a message without a From-tag.
    #[error("can't get the From-tag of the message")]
    MessageNoFromTag,
    /// The message's SDP is no longer the one an async offer/answer sent.
    #[error("the message's SDP changed while the relay answered")]
    SdpChanged,

    // ---- the parameters ----
    /// The flags cannot be used.
    #[error("bad flags: {0}")]
    BadFlags(#[source] FlagsError),
    /// `body_var` holds no string.
    #[error("body_var does not hold a string")]
    BodyVarNotString,
    /// `body_var` cannot be written.
    #[error("cannot write body_var")]
    BodyVarWrite,
    /// `body_var` with autobridge on a request (the relay address depends on the next hop).
    #[error(
        "rtpproxy_autobridge: body_var cannot be used on a request (the relay address \
         depends on the next hop, only known when the request is forwarded)"
    )]
    BodyVarOnRequest,
    /// 4.0's `bind_local` holds neither a string nor an integer.
    #[error("bind_local has no usable value (string or integer)")]
    BindLocalUnusable,
    /// `rtpproxy_all_stats`' first parameter is not an AVP.
    #[error("the first parameter must be an AVP")]
    NotAnAvp,
    /// The AVP's name cannot be resolved.
    #[error("cannot resolve the AVP")]
    AvpUnresolved,
    /// A media function found nothing to do.
    #[error("nothing to do")]
    NothingToDo,

    // ---- the load_rtpproxy API ----
    /// `load_rtpproxy` called without its structure.
    #[error("load_rtpproxy called without a binds structure")]
    NoBinds,
    /// An API call without a Call-ID.
    #[error("no Call-ID")]
    ApiNoCallId,
    /// An API call without a From-tag.
    #[error("no From-tag")]
    ApiNoFromTag,
    /// An API call names a node that is in no set.
    #[error("no RTPProxy {0}")]
    NoSuchNode(String),
    /// An API call names a node that is disabled.
    #[error("RTPProxy {0} is disabled")]
    NodeDisabled(String),
}

/// A host string that is not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not UTF-8: {lossy:?}")]
pub struct NotUtf8 {
    /// The string with every invalid sequence replaced (for the log).
    pub lossy: String,
}

/// Why a control-plane command failed, as the host reports it.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The set does not exist.
    #[error("cannot find RTPProxy set {0}")]
    NoSet(SetId),
    /// No usable node in the set (all disabled, or the named node is disabled).
    #[error("no available proxies in set {0}")]
    NoNode(SetId),
    /// The named node is not in the set or is disabled.
    #[error("RTPProxy {0} is not available")]
    NodeUnavailable(String),
    /// A new call's offer failed on every node it tried: worded as the C module words it
    /// (`no available proxies`), so that log rules written for it still match.
    #[error("no available proxies left in set {set}: RTPProxy {url} {fault}")]
    NoneLeft {
        /// The set.
        set: SetId,
        /// The last node tried.
        url: String,
        /// What went wrong there.
        fault: NodeFault,
    },
    /// Every node tried failed.
    #[error("RTPProxy {url} {fault}")]
    Failed {
        /// The last node tried.
        url: String,
        /// What went wrong there.
        fault: NodeFault,
    },
}

/// Why start-up (`mod_init`, `child_init`, `preinit`) or `rtpproxy_reload` failed. The text is
/// the log line (and the MI error of a reload).
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The modparams do not make a valid configuration.
    #[error("bad configuration: {0}")]
    Config(#[source] ConfigError),
    /// A node's control socket cannot be completed (e.g. `rtp.io:auto` without rtp.io).
    #[error(transparent)]
    Sockets(ConfigError),
    /// The database could not be bound or read.
    #[error("cannot load RTPProxy nodes from the database: {0}")]
    Database(String),
    /// A row of the database is not a valid `rtpproxy_sock` value.
    #[error("bad RTPProxy node in the database: {0}")]
    DatabaseNode(#[source] ConfigError),
    /// `rtpp_notify_socket` needs the dialog module.
    #[error("rtpp_notify_socket is set, so the dialog module must be loaded")]
    NotifyNeedsDialog,
    /// A reload brings more nodes than the shm node table holds.
    #[error("{count} nodes, at most {capacity} supported")]
    TooManyNodes {
        /// Nodes in the new list.
        count: usize,
        /// Slots in the shm node table.
        capacity: usize,
    },
    /// The published node list does not fit its shm buffer.
    #[error("node list too large ({len} bytes, at most {capacity})")]
    ListTooLarge {
        /// Bytes of the list.
        len: usize,
        /// Bytes of the buffer.
        capacity: usize,
    },
    /// `mod_init` ran twice.
    #[error("module state initialised twice")]
    AlreadyInitialized,
    /// A part of the module that binds another OpenSIPS module (events, dialog, tm,
    /// rtp_relay) could not set itself up.
    #[error("{0}")]
    Binding(String),
    /// A host-side failure.
    #[error(transparent)]
    Host(#[from] HostError),
}

impl LifecycleError {
    /// The code `mod_init`, `child_init` and `preinit` return (and a modparam handler), for
    /// this error: OpenSIPS refuses to start on any negative value.
    pub(crate) fn return_code(&self) -> c_int {
        -1
    }

    /// A failure reported by a binding of another module, as text (those bindings keep their
    /// own error types).
    pub(crate) fn binding(e: impl std::fmt::Display) -> Self {
        Self::Binding(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_errors_keep_their_log_lines_and_fail_start_up() {
        let cases: [(LifecycleError, &str); 5] = [
            (
                HostError::OutOfShm("node table").into(),
                "out of shared memory for the node table",
            ),
            (
                LifecycleError::TooManyNodes {
                    count: 300,
                    capacity: 256,
                },
                "300 nodes, at most 256 supported",
            ),
            (
                LifecycleError::ListTooLarge {
                    len: 70000,
                    capacity: 65536,
                },
                "node list too large (70000 bytes, at most 65536)",
            ),
            (
                LifecycleError::Database("no such table".into()),
                "cannot load RTPProxy nodes from the database: no such table",
            ),
            (
                LifecycleError::binding("cannot bind the dialog API"),
                "cannot bind the dialog API",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
            assert_eq!(e.return_code(), -1);
        }
        assert_eq!(
            HostError::MissingSymbol("get_ticks").to_string(),
            "OpenSIPS core symbol get_ticks not found"
        );
    }

    #[test]
    fn every_script_error_is_minus_one_with_its_own_text() {
        let errors: [Error; 4] = [
            HostError::NoCallId.into(),
            ControlError::NoNode(3).into(),
            ControlError::Failed {
                url: "udp:127.0.0.1:7722".into(),
                fault: NodeFault::Timeout,
            }
            .into(),
            LifecycleError::AlreadyInitialized.into(),
        ];
        let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "no Call-ID in the message",
                "no available proxies in set 3",
                "RTPProxy udp:127.0.0.1:7722 no reply",
                "module state initialised twice",
            ]
        );
        assert!(errors.iter().all(|e| e.return_code() == -1));
    }

    #[test]
    fn script_and_offer_errors_keep_their_log_lines_and_return_minus_one() {
        let cases: [(Error, &str); 6] = [
            (
                ScriptError::NoMessage.into(),
                "no SIP message (or a faked reply)",
            ),
            (
                ScriptError::BadFlags(FlagsError::ForbiddenByte { byte: 1, offset: 2 }).into(),
                "bad flags: byte 0x01 at offset 2 is not allowed in flags",
            ),
            (
                ScriptError::NodeDisabled("udp:127.0.0.1:7722".into()).into(),
                "RTPProxy udp:127.0.0.1:7722 is disabled",
            ),
            (
                ScriptError::BodyVarOnRequest.into(),
                "rtpproxy_autobridge: body_var cannot be used on a request (the relay address \
                 depends on the next hop, only known when the request is forwarded)",
            ),
            (
                OfferError::MarkerPresent.into(),
                "sdp already carries the marker (use flag f to force)",
            ),
            (
                HostError::AutobridgeCallback("pre-forward callback").into(),
                "cannot register the autobridge pre-forward callback",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
            assert_eq!(e.return_code(), -1);
        }
    }
}

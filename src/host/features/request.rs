//! What an offer/answer is asked to do and what it did: shared by the script functions,
//! engage, autobridge and the rtp_relay engine (the driver is `functions::run_offer_answer`).

use crate::core::config::SetId;
use crate::core::offer::Direction;

/// One offer/answer request, however it was made (script function, dialog callback,
/// rtp_relay engine).
pub(crate) struct OfferRequest<'a> {
    /// The flags string as given (truncated to 63 bytes here, as the C module does).
    pub(crate) flags: &'a [u8],
    /// `ip_address`.
    pub(crate) ip: Option<&'a str>,
    /// The set; `None` = `default_set`.
    pub(crate) set: Option<SetId>,
    /// Offer (U) or answer (L).
    pub(crate) direction: Direction,
    /// Call-ID, From-tag and To-tag; `None` takes them from the message.
    pub(crate) ids: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    /// Dialog id for the `n` flag's `T<did>` notify tag.
    pub(crate) dialog_id: Option<Vec<u8>>,
    /// Autobridge `R<addr>`.
    pub(crate) bridge_address: Option<String>,
    /// A node to try first (URL), as rtp_relay asks for.
    pub(crate) node: Option<&'a str>,
    /// Cut `flags` and `ip` to 63 bytes, as the C script functions do (not rtp_relay).
    pub(crate) script_limits: bool,
    /// 4.0's `bind_local` (`l<value>` in each U/L command).
    pub(crate) bind_local: Option<&'a [u8]>,
}

impl<'a> OfferRequest<'a> {
    /// Whether a script function or `rtpproxy_engage` made this request (the Call-ID and
    /// tags come from the message and the flags are cut like script parameters), rather
    /// than the rtp_relay engine. Autobridge applies only to these, as in C, where the
    /// rtp_relay engine calls the offer/answer core directly.
    pub(crate) fn is_script_request(&self) -> bool {
        self.script_limits && self.ids.is_none()
    }

    /// A request with the script defaults.
    pub(crate) fn new(flags: &'a [u8], direction: Direction) -> Self {
        Self {
            flags,
            ip: None,
            set: None,
            direction,
            ids: None,
            dialog_id: None,
            bridge_address: None,
            node: None,
            script_limits: true,
            bind_local: None,
        }
    }
}

/// Where the SDP comes from and goes to.
pub(crate) enum SdpSource {
    /// Every SDP part of the message, rewritten in place with lumps.
    Message,
    /// A given body; the rewritten body is returned (`body_var`, rtp_relay).
    Body(Vec<u8>),
}

/// What one offer/answer did.
pub(crate) struct OfferResult {
    /// `<ip>:<port>` of the last stream (for `ret_var`).
    pub(crate) ret_var: Option<Vec<u8>>,
    /// The URL of the last node used (for `sock_var`, rtp_relay's node).
    pub(crate) node_url: Option<String>,
    /// The rewritten body, for [`SdpSource::Body`].
    pub(crate) body: Option<Vec<u8>>,
}

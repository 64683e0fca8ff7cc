//! WebRTC bridging (flags `xw` / `xp`), sans-IO: the commands with their `dtls_gw` /
//! `ice_lite` sub-commands, the reading of the relay's multi-result replies, and the SDP
//! both ways, on real offers (aiortc 1.16, a Chrome-shaped one) and a sipp body.
//!
//! The relay replies used here have the shape RTPProxy 3.2.0 with the modules loaded gives
//! (checked against the daemon; see tests/e2e_webrtc.rs for the real thing).

use rtpproxy::core::offer::*;
use rtpproxy::core::proto::Capabilities;

const CID: &[u8] = b"a84b4c76e66710@pc33";
const FT: &[u8] = b"1928301774";
const TT: &[u8] = b"a6c85cf";

fn fixture(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/tests/fixtures/webrtc/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn req() -> SipMessage<'static> {
    SipMessage::Request(PacketInfo {
        source_ip: "127.0.0.1",
        local_ip: "127.0.0.1",
    })
}

fn rep() -> SipMessage<'static> {
    SipMessage::Reply(PacketInfo {
        source_ip: "127.0.0.3",
        local_ip: "127.0.0.1",
    })
}

fn all_caps() -> Capabilities {
    Capabilities::from_bits_truncate(u32::MAX)
}

/// Runs one offer/answer with one reply per stream; returns the commands and the new body.
fn run(
    body: &[u8],
    flags: &str,
    msg: SipMessage<'_>,
    dir: Direction,
    caps: Capabilities,
    reply: &[u8],
) -> (Vec<String>, Result<Vec<u8>, OfferError>) {
    let flags = Flags::parse(flags.as_bytes()).unwrap();
    let tt = if dir == Direction::Answer { TT } else { b"" };
    let input = OfferAnswerInput::new(body, &flags, CID, FT, tt, msg, dir);
    let mut oa = match OfferAnswer::new(input) {
        Ok(o) => o,
        Err(e) => return (vec![], Err(e)),
    };
    let mut sent = Vec::new();
    while oa.current_stream().is_some() {
        let node = NodeInfo {
            caps,
            advertised: None,
        };
        let cmd = match oa.build_command(node) {
            Ok(c) => c,
            Err(e) => return (sent, Err(e)),
        };
        sent.push(String::from_utf8(cmd.as_bytes().to_vec()).unwrap());
        if let Err(e) = oa.handle_reply(Some(reply)) {
            return (sent, Err(e));
        }
    }
    let out = oa.finish().and_then(|o| Ok(o.apply(body)?));
    (sent, out)
}

fn lines(b: &[u8]) -> Vec<&[u8]> {
    b.split(|c| *c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect()
}

fn is_bridge_line(l: &[u8]) -> bool {
    [
        &b"a=ice-"[..],
        b"a=candidate:",
        b"a=end-of-candidates",
        b"a=fingerprint:",
        b"a=setup:",
        b"a=rtcp-mux",
        b"a=rtcp-rsize",
        b"a=rtcp-fb:",
        b"a=group:BUNDLE",
    ]
    .iter()
    .any(|p| l.starts_with(p))
}

/// The plain body is the WebRTC body minus the transport lines, with the m=/c=/a=rtcp lines
/// pointing at the relay, every other line byte-identical and in order, plus the marker.
fn assert_plain_from(webrtc: &[u8], plain: &[u8], port: &str, addr: &str) {
    let expect: Vec<Vec<u8>> = lines(webrtc)
        .into_iter()
        .filter(|l| !is_bridge_line(l))
        .map(|l| {
            if l.starts_with(b"m=audio ") {
                let w: Vec<&str> = std::str::from_utf8(l).unwrap().split(' ').collect();
                format!("m=audio {port} RTP/AVP {}", w[3..].join(" ")).into_bytes()
            } else if l.starts_with(b"c=IN IP4 ") {
                format!("c=IN IP4 {addr}").into_bytes()
            } else if l.starts_with(b"a=rtcp:") {
                format!("a=rtcp:{} IN IP4 {addr}", port.parse::<u16>().unwrap() + 1).into_bytes()
            } else {
                l.to_vec()
            }
        })
        .chain([b"a=nortpproxy:yes".to_vec()])
        .collect();
    let got: Vec<Vec<u8>> = lines(plain).into_iter().map(<[u8]>::to_vec).collect();
    assert_eq!(
        got.iter()
            .map(|l| l.escape_ascii().to_string())
            .collect::<Vec<_>>(),
        expect
            .iter()
            .map(|l| l.escape_ascii().to_string())
            .collect::<Vec<_>>()
    );
    assert!(plain.ends_with(b"\r\n"));
}

#[test]
fn webrtc_offer_to_plain_side() {
    let body = fixture("aiortc-offer.sdp");
    let (sent, out) = run(
        &body,
        "xw",
        req(),
        Direction::Offer,
        all_caps(),
        b"40224 127.0.0.2\n",
    );
    assert_eq!(
        sent,
        ["Uc96,9,0,8 a84b4c76e66710@pc33 127.0.0.1 34460 1928301774;1 \
          && M4:1 A sha-256 B0:B1:2B:CE:45:F6:28:F0:12:F1:72:2C:2F:46:CE:9E:42:F1:D5:A7:40:2B:F2:FC:DC:7E:B1:A9:0A:7F:09:78 \
          && M5:1 A kTBs 05uypb8qKt7vqgLvblQLJV \
          && M5:1 C f957a2332b1715da3b0ef8ba684454eb 1 udp 2130706431 127.0.0.1 34460 typ host \
          && M5:1 C d0bcf3d9c29a2bc887618212a1623bfa 1 udp 2130706431 ::1 38289 typ host"]
    );
    assert_plain_from(&body, &out.unwrap(), "40224", "127.0.0.2");
}

#[test]
fn chrome_offer_null_connection_and_odd_candidates() {
    // c=0.0.0.0 / port 9 (trickle ICE) is not a hold here; mDNS and TCP candidates are not
    // handed to the relay; rtcp-fb/rtcp-rsize/ice-options go away on the plain side.
    let body = fixture("chrome-offer.sdp");
    let (sent, out) = run(
        &body,
        "XW",
        req(),
        Direction::Offer,
        all_caps(),
        b"40300 127.0.0.2\n",
    );
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].matches(" && M5:1 C ").count(), 1);
    assert!(sent[0].contains(" && M5:1 C 1467250027 1 udp 2122260223 127.0.0.1 46243 typ host"));
    assert!(!sent[0].contains("generation"));
    assert_plain_from(&body, &out.unwrap(), "40300", "127.0.0.2");
}

const DTLS_S: &str = "passive SHA-256 07:32:21:A3:60:67:E7:03:AC:1C:13:4E:9A:F1:A5:94:44:89:68:21:1D:55:C3:6B:BC:64:AF:A8:8B:41:31:09";
const ICE_S: &str = "eBWk BgEzjkLyCd35ocJ/XebglSGL c:7f000002%201%20UDP%202113929471%20127.0.0.2%2040224%20typ%20host";

#[test]
fn plain_answer_to_webrtc_side() {
    let body = fixture("sipp-plain.sdp");
    let reply = format!("40224 127.0.0.2 && {DTLS_S} && {ICE_S}\n");
    let (sent, out) = run(
        &body,
        "xw",
        rep(),
        Direction::Answer,
        all_caps(),
        reply.as_bytes(),
    );
    assert_eq!(
        sent,
        ["Lc0 a84b4c76e66710@pc33 127.0.0.3 6000 1928301774;1 a6c85cf;1 && M4:1 S && M5:1 S"]
    );
    assert_eq!(
        String::from_utf8(out.unwrap()).unwrap(),
        "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
         a=ice-lite\r\na=group:BUNDLE 0\r\n\
         m=audio 40224 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n\
         a=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=ice-ufrag:eBWk\r\na=ice-pwd:BgEzjkLyCd35ocJ/XebglSGL\r\n\
         a=candidate:7f000002 1 UDP 2113929471 127.0.0.2 40224 typ host\r\na=end-of-candidates\r\n\
         a=fingerprint:sha-256 07:32:21:A3:60:67:E7:03:AC:1C:13:4E:9A:F1:A5:94:44:89:68:21:1D:55:C3:6B:BC:64:AF:A8:8B:41:31:09\r\n\
         a=setup:passive\r\na=nortpproxy:yes\r\n"
    );
}

#[test]
fn plain_offer_to_webrtc_and_webrtc_answer_back() {
    // xp: the plain offer asks for the relay's parameters (actpass on a fresh session)
    let body = fixture("sipp-plain.sdp");
    let dtls = DTLS_S.replacen("passive", "actpass", 1);
    let reply = format!("40500 127.0.0.2 && {dtls} && {ICE_S}\n");
    let (sent, out) = run(
        &body,
        "xp",
        req(),
        Direction::Offer,
        all_caps(),
        reply.as_bytes(),
    );
    assert_eq!(
        sent,
        ["Uc0 a84b4c76e66710@pc33 127.0.0.1 6000 1928301774;1 && M4:1 S && M5:1 S"]
    );
    let out = String::from_utf8(out.unwrap()).unwrap();
    assert!(out.contains("\r\nm=audio 40500 UDP/TLS/RTP/SAVPF 0\r\n"));
    assert!(out.contains("\r\na=setup:actpass\r\n"));

    // the browser answers active: its parameters go to the relay with `A` on the L
    let answer = String::from_utf8(fixture("aiortc-offer.sdp"))
        .unwrap()
        .replace("a=setup:actpass", "a=setup:active");
    let (sent, out) = run(
        answer.as_bytes(),
        "xp",
        rep(),
        Direction::Answer,
        all_caps(),
        b"40502 127.0.0.2\n",
    );
    assert_eq!(sent.len(), 1);
    assert!(sent[0].starts_with("Lc96,9,0,8 a84b4c76e66710@pc33 127.0.0.3 34460 1928301774;1 a6c85cf;1 && M4:1 A sha-256 B0:B1"));
    assert_plain_from(answer.as_bytes(), &out.unwrap(), "40502", "127.0.0.2");

    // passive peer → `P`
    let answer = answer.replace("a=setup:active", "a=setup:passive");
    let (sent, _) = run(
        answer.as_bytes(),
        "xp",
        rep(),
        Direction::Answer,
        all_caps(),
        b"40502 127.0.0.2\n",
    );
    assert!(sent[0].contains(" && M4:1 P sha-256 B0:B1"));
}

#[test]
fn unsupported_offers_are_refused_before_any_command() {
    for (name, flags, want) in [
        ("chrome-video-bundle.sdp", "xw", "one audio stream"),
        ("chrome-no-fingerprint.sdp", "xw", "no a=fingerprint"),
        (
            "sipp-plain.sdp",
            "xw",
            "protocol RTP/AVP on the WebRTC side",
        ),
        ("chrome-offer.sdp", "xp", "on the plain side"),
    ] {
        let (sent, out) = run(
            &fixture(name),
            flags,
            req(),
            Direction::Offer,
            all_caps(),
            b"1 1.1.1.1",
        );
        assert!(sent.is_empty(), "{name}");
        let e = out.unwrap_err().to_string();
        assert!(e.contains(want), "{name}: {e}");
    }
}

#[test]
fn relay_refusals_are_clear_errors() {
    let body = fixture("aiortc-offer.sdp");
    // no SUBCOMMAND capability: nothing is sent
    let (sent, out) = run(
        &body,
        "xw",
        req(),
        Direction::Offer,
        Capabilities::CODECS,
        b"1",
    );
    assert!(sent.is_empty());
    assert_eq!(out.unwrap_err(), OfferError::WebrtcNeedsSubcommand);
    // modules not loaded: RTPProxy 3.2 answers E3
    let (_, out) = run(&body, "xw", req(), Direction::Offer, all_caps(), b"E3\n");
    let e = out.unwrap_err();
    assert_eq!(e, OfferError::WebrtcModulesMissing { code: 3 });
    assert!(e.to_string().contains("--dso"));
    // a module refused its part (here the second sub-command, ice_lite `A`)
    let (_, out) = run(
        &body,
        "xw",
        req(),
        Direction::Offer,
        all_caps(),
        b"40224 127.0.0.2 && 0 && -1\n",
    );
    assert_eq!(
        out.unwrap_err(),
        OfferError::WebrtcSubcommandFailed {
            module: "ice_lite",
            code: -1
        }
    );
    // `S` that gives nothing back
    let (_, out) = run(
        &fixture("sipp-plain.sdp"),
        "xw",
        rep(),
        Direction::Answer,
        all_caps(),
        b"40224 127.0.0.2\n",
    );
    assert!(matches!(out, Err(OfferError::Webrtc(_))));
}

#[test]
fn flags() {
    assert_eq!(
        Flags::parse(b"xw").unwrap().bridge,
        Some(Bridge::OffererWebrtc)
    );
    assert_eq!(
        Flags::parse(b"cXP").unwrap().bridge,
        Some(Bridge::OffererPlain)
    );
    // a lone x is still an unknown flag forwarded to the relay, as in the C module
    let f = Flags::parse(b"cxq").unwrap();
    assert_eq!((f.bridge, f.modifiers()), (None, &b"xq"[..]));
    // a repeated group: the last one wins
    assert_eq!(
        Flags::parse(b"xwxp").unwrap().bridge,
        Some(Bridge::OffererPlain)
    );
    // without the flag nothing changes (no sub-command, normal rewrite)
    let body = fixture("aiortc-offer.sdp");
    let (sent, out) = run(
        &body,
        "",
        req(),
        Direction::Offer,
        all_caps(),
        b"40224 127.0.0.2\n",
    );
    assert!(!sent[0].contains("&&"));
    assert!(String::from_utf8(out.unwrap())
        .unwrap()
        .contains("UDP/TLS/RTP/SAVPF"));
}

#[test]
fn dtmf_and_bridge_share_the_command() {
    use rtpproxy::core::config::NotifySocket;
    let sock = NotifySocket::Tcp {
        ip: std::net::Ipv4Addr::new(127, 0, 0, 1),
        port: 9999,
    };
    let body = fixture("sipp-plain.sdp");
    let flags = Flags::parse(b"dxp").unwrap();
    let mut input = OfferAnswerInput::new(&body, &flags, CID, FT, b"", req(), Direction::Offer);
    input.notify_socket = Some(&sock);
    let mut oa = OfferAnswer::new(input).unwrap();
    let cmd = oa
        .build_command(NodeInfo {
            caps: all_caps(),
            advertised: None,
        })
        .unwrap();
    assert!(cmd
        .as_bytes()
        .ends_with(b" && M3:1 Dca84b4c76e66710@pc33 && M4:1 S && M5:1 S"));
    // results come after DTMF's (empty, so written as 0)
    let reply = format!("40500 127.0.0.2 && 0 && {DTLS_S} && {ICE_S}\n");
    oa.handle_reply(Some(reply.as_bytes())).unwrap();
    let out = oa.finish().unwrap();
    let new = String::from_utf8(out.apply(&body).unwrap()).unwrap();
    assert!(new.contains("a=ice-ufrag:eBWk\r\n"));
}

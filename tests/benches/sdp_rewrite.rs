//! Criterion benchmarks of the SDP work one `rtpproxy_offer` does, without any I/O:
//!
//! - `scan`: finding the spans of `o=`, `c=`, `m=` and `a=rtcp:` (`core::sdp::scan`);
//! - `rewrite`: scan, one [`MediaAnswer`] per proxied stream, marker, edits applied to a copy
//!   (what body-variable mode does; message mode hands the same edits to OpenSIPS as lumps);
//! - `offer`: the whole sans-IO offer — flags, tag placement, marker check, scan, one `U`
//!   command built per stream, a canned relay reply handled per stream, edits, new body.
//!
//! Two bodies: a one-stream SIP SDP (sipp's default offer) and a large WebRTC-style SDP (BUNDLE,
//! four `m=` sections of which one is a data channel, ICE candidates, fingerprints, extmaps,
//! simulcast/ssrc lines: about 300 lines).
//!
//! Run: `cargo bench --bench sdp_rewrite` (needs the `[[bench]]` entry and the `criterion`
//! dev-dependency in Cargo.toml).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rtpproxy::core::offer::{
    Direction, Flags, NodeInfo, OfferAnswer, OfferAnswerInput, PacketInfo, ReplyOutcome, SipMessage,
};
use rtpproxy::core::proto::Capabilities;
use rtpproxy::core::sdp::{self, Family, MediaAnswer, RewriteOptions, Rewriter};

/// sipp's built-in UAC offer.
const SIP_ONE_STREAM: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// A browser-like offer: audio, camera video, screen-share video, data channel.
fn webrtc_sdp() -> String {
    let mut s = String::from(
        "v=0\r\n\
         o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
         s=-\r\n\
         t=0 0\r\n\
         a=group:BUNDLE 0 1 2 3\r\n\
         a=extmap-allow-mixed\r\n\
         a=msid-semantic: WMS stream0 screen0\r\n",
    );
    let sections: [(&str, u16, &str); 4] = [
        ("audio", 50000, "UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126"),
        (
            "video",
            50002,
            "UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103 104 105 45 46",
        ),
        ("video", 50004, "UDP/TLS/RTP/SAVPF 96 97 102 103"),
        ("application", 50006, "UDP/DTLS/SCTP webrtc-datachannel"),
    ];
    for (mid, (kind, port, proto)) in sections.iter().enumerate() {
        s.push_str(&format!(
            "m={kind} {port} {proto}\r\nc=IN IP4 192.0.2.20\r\n"
        ));
        if *kind != "application" {
            s.push_str("a=rtcp:9 IN IP4 0.0.0.0\r\n");
        }
        for (i, (addr, typ)) in [
            ("192.0.2.20", "host"),
            ("10.10.0.20", "host"),
            ("2001:db8::20", "host"),
            ("fd00::20", "host"),
            ("203.0.113.7", "srflx raddr 192.0.2.20 rport 50000"),
            ("198.51.100.99", "relay raddr 203.0.113.7 rport 50020"),
        ]
        .iter()
        .enumerate()
        {
            for component in [1, 2] {
                s.push_str(&format!(
                    "a=candidate:{} {component} udp {} {addr} {} typ {typ} generation 0 \
                     network-id {}\r\n",
                    1467250027 + i,
                    2122260223 - i * 1000 - component,
                    port + component as u16 - 1 + 10 * i as u16,
                    i + 1
                ));
            }
        }
        s.push_str(
            "a=ice-ufrag:F7gI\r\n\
             a=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n\
             a=ice-options:trickle\r\n\
             a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:\
             1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
             a=setup:actpass\r\n",
        );
        s.push_str(&format!("a=mid:{mid}\r\n"));
        if *kind == "application" {
            s.push_str("a=sctp-port:5000\r\na=max-message-size:262144\r\n");
            continue;
        }
        for (id, uri) in [
            (1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
            (
                2,
                "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
            ),
            (
                3,
                "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
            ),
            (4, "urn:ietf:params:rtp-hdrext:sdes:mid"),
            (10, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
            (11, "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"),
        ] {
            s.push_str(&format!("a=extmap:{id} {uri}\r\n"));
        }
        s.push_str("a=sendrecv\r\na=msid:stream0 track0\r\na=rtcp-mux\r\na=rtcp-rsize\r\n");
        let payloads: Vec<&str> = proto.split(' ').skip(1).collect();
        for pt in &payloads {
            s.push_str(&format!("a=rtpmap:{pt} codec{pt}/90000\r\n"));
            for fb in ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"] {
                s.push_str(&format!("a=rtcp-fb:{pt} {fb}\r\n"));
            }
            s.push_str(&format!(
                "a=fmtp:{pt} level-asymmetry-allowed=1;packetization-mode=1;\
                 profile-level-id=42001f\r\n"
            ));
        }
        let ssrc = 1000 + 10 * mid as u32;
        s.push_str(&format!("a=ssrc-group:FID {ssrc} {}\r\n", ssrc + 1));
        for x in [ssrc, ssrc + 1] {
            s.push_str(&format!(
                "a=ssrc:{x} cname:Ymr1Hz6r2yMSwKkJ\r\na=ssrc:{x} msid:stream0 track0\r\n"
            ));
        }
    }
    s
}

/// scan + answers + marker + apply: the rewritten body.
fn rewrite(body: &[u8]) -> Vec<u8> {
    let sdp = sdp::scan(body).expect("scan");
    let mut r = Rewriter::new(&sdp, RewriteOptions::default());
    let mut port = 35000u16;
    for (i, m) in sdp.media().iter().enumerate() {
        if m.is_proxied(body) {
            r.add_media(&MediaAnswer {
                media: i,
                port,
                address: b"10.0.0.2".to_vec(),
                family: Family::Ipv4,
            })
            .expect("add_media");
            port += 2;
        }
    }
    r.insert_marker(b"a=nortpproxy:yes");
    let edits = r.finish().expect("edits");
    sdp::apply_edits(body, &edits).expect("apply")
}

/// The sans-IO offer of one body, as the host drives it; returns the new body and the number
/// of commands.
fn offer(body: &[u8], flags: &Flags) -> (Vec<u8>, usize) {
    let input = OfferAnswerInput::new(
        body,
        flags,
        b"a84b4c76e66710@pc33",
        b"1928301774",
        b"",
        SipMessage::Request(PacketInfo {
            source_ip: "198.51.100.20",
            local_ip: "10.0.0.1",
        }),
        Direction::Offer,
    );
    let mut oa = OfferAnswer::new(input).expect("offer");
    let node = NodeInfo {
        caps: Capabilities::CODECS,
        advertised: None,
    };
    let mut commands = 0;
    while oa.current_stream().is_some() {
        let cmd = oa.build_command(node).expect("command");
        black_box(cmd.as_bytes());
        commands += 1;
        match oa.handle_reply(Some(b"35004 10.0.0.2\n")).expect("reply") {
            ReplyOutcome::Done(_) => {}
            ReplyOutcome::Retry(_) => unreachable!(),
        }
    }
    let out = oa.finish().expect("finish");
    (out.apply(body).expect("apply"), commands)
}

fn benches(c: &mut Criterion) {
    let webrtc = webrtc_sdp();
    let bodies: [(&str, &[u8]); 2] = [
        ("sip_one_stream", SIP_ONE_STREAM.as_bytes()),
        ("webrtc_large", webrtc.as_bytes()),
    ];
    let flags = Flags::parse(b"co").expect("flags");

    // What is measured is also checked once.
    let one = rewrite(SIP_ONE_STREAM.as_bytes());
    let one = String::from_utf8(one).unwrap();
    assert!(one.contains("m=audio 35000 RTP/AVP 0\r\n") && one.contains("c=IN IP4 10.0.0.2\r\n"));
    assert!(one.ends_with("a=nortpproxy:yes\r\n"));
    let (big, commands) = offer(webrtc.as_bytes(), &flags);
    assert_eq!(
        commands, 3,
        "three proxied streams (the data channel is not)"
    );
    let big = String::from_utf8(big).unwrap();
    let (old_lines, new_lines): (Vec<&str>, Vec<&str>) =
        (webrtc.lines().collect(), big.lines().collect());
    assert_eq!(
        new_lines.len(),
        old_lines.len() + 1,
        "one line added: the marker"
    );
    let changed = old_lines
        .iter()
        .zip(&new_lines)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        changed, 10,
        "o=, and m=, c=, a=rtcp: of three streams; nothing else"
    );

    for (name, body) in bodies {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("scan", |b| b.iter(|| sdp::scan(black_box(body)).unwrap()));
        g.bench_function("rewrite", |b| b.iter(|| rewrite(black_box(body))));
        g.bench_function("offer", |b| {
            b.iter_batched(
                || flags.clone(),
                |f| offer(black_box(body), &f),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

criterion_group!(sdp_rewrite, benches);
criterion_main!(sdp_rewrite);

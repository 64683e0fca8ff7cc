//! A whole offer over fuzzed SDP bytes, with replies derived from the input: the edits must
//! apply, and rewriting the result again with the same replies (forced past the marker) must
//! not change it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtpproxy::core::offer::{
    Direction, Flags, NodeInfo, OfferAnswer, OfferAnswerInput, OfferAnswerOutcome, PacketInfo,
    SipMessage,
};
use rtpproxy::core::proto::Capabilities;

const FLAG_SETS: [&str; 8] = ["", "c", "o", "co", "r", "cor", "k", "ie"];
const ADDRS: [&str; 5] = ["", " 10.0.0.2", " 2001:db8::2 6", " 0.0.0.0", " :: 6"];

fn run(body: &[u8], flags: &str, seed: &[u8]) -> Option<OfferAnswerOutcome> {
    let flags = Flags::parse(flags.as_bytes()).ok()?;
    let input = OfferAnswerInput::new(
        body,
        &flags,
        b"cid@host",
        b"ftag",
        b"",
        SipMessage::Request(PacketInfo {
            source_ip: "192.0.2.10",
            local_ip: "10.0.0.1",
        }),
        Direction::Offer,
    );
    let mut oa = OfferAnswer::new(input).ok()?;
    let mut i = 0usize;
    while oa.current_stream().is_some() {
        oa.build_command(NodeInfo {
            caps: Capabilities::from_bits_truncate(u32::MAX),
            advertised: None,
        })
        .ok()?;
        let b = seed.get(i % seed.len().max(1)).copied().unwrap_or(0);
        let reply = format!(
            "{}{}\n",
            1 + u16::from(b) * 7,
            ADDRS[usize::from(b) % ADDRS.len()]
        );
        i += 1;
        oa.handle_reply(Some(reply.as_bytes())).ok()?;
    }
    oa.finish().ok()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let flags = FLAG_SETS[usize::from(data[0]) % FLAG_SETS.len()];
    let seed = &data[1..3];
    let body = &data[3..];
    if let Some(out) = run(body, flags, seed) {
        let once = out.apply(body).expect("edits apply");
        let again = run(&once, &format!("{flags}f"), seed).expect("second pass succeeds");
        assert_eq!(
            again.apply(&once).expect("edits apply"),
            once,
            "not idempotent"
        );
    }
});

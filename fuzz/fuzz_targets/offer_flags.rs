//! Any flags bytes: the parser returns Ok or a typed error, and a command built from the flags
//! never contains a line break or a NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtpproxy::core::offer::{
    Direction, Flags, NodeInfo, OfferAnswer, OfferAnswerInput, PacketInfo, SipMessage,
};
use rtpproxy::core::proto::Capabilities;

const BODY: &[u8] = b"v=0\r\no=- 1 1 IN IP4 10.1.1.5\r\ns=-\r\nc=IN IP4 10.1.1.5\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\nm=video 51372 RTP/AVP 31\r\n";

fuzz_target!(|data: &[u8]| {
    let _ = Flags::parse_script_param(data);
    let Ok(flags) = Flags::parse(data) else {
        return;
    };
    for message in [
        SipMessage::None,
        SipMessage::Request(PacketInfo {
            source_ip: "2001:DB8:0:0:0:0:0:1",
            local_ip: "10.0.0.1",
        }),
    ] {
        for direction in [Direction::Offer, Direction::Answer] {
            let input = OfferAnswerInput::new(
                BODY,
                &flags,
                b"cid@host",
                b"ftag",
                b"ttag",
                message,
                direction,
            );
            let Ok(mut oa) = OfferAnswer::new(input) else {
                continue;
            };
            let _ = oa.set_dialog_id(b"2a1.c");
            for caps in [
                Capabilities::NONE,
                Capabilities::from_bits_truncate(u32::MAX),
            ] {
                if let Ok(cmd) = oa.build_command(NodeInfo {
                    caps,
                    advertised: None,
                }) {
                    assert!(!cmd
                        .as_bytes()
                        .iter()
                        .any(|&b| b == b'\r' || b == b'\n' || b == 0));
                }
            }
        }
    }
});

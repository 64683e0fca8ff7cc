//! Any bytes: the scanner returns Ok or a typed error, and every span it reports lies inside
//! the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtpproxy::core::sdp::{has_marker, scan};

fuzz_target!(|data: &[u8]| {
    let _ = has_marker(data, b"a=nortpproxy:yes");
    if let Ok(sdp) = scan(data) {
        for s in sdp.sessions() {
            assert!(s.span.end() <= data.len());
            assert!(s.media.end <= sdp.media().len());
        }
        for m in sdp.media() {
            for span in [
                m.line,
                m.block,
                m.port,
                m.proto,
                m.payloads,
                m.effective.addr,
            ] {
                assert!(span.end() <= data.len());
            }
            let _ = m.codec_list(data);
        }
    }
});

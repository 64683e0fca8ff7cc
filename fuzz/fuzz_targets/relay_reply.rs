//! Any bytes as a relay's reply body: `Reply::parse` and every reading of it (error code,
//! number, version, capability, the `U`/`L` media answer) and the `Q` readers return a value or
//! a typed error, never panic; a parsed media reply's port and address are what the text says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtpproxy::core::media::{parse_counters, parse_stats};
use rtpproxy::core::proto::reply::{Reply, MAX_REPLY_LEN};

fuzz_target!(|data: &[u8]| {
    let parsed = Reply::parse(data);
    if data.len() > MAX_REPLY_LEN {
        assert!(parsed.is_err());
    }
    if let Ok(r) = parsed {
        let _ = r.error_code();
        let _ = r.text();
        let _ = r.tokens().count();
        let _ = r.number();
        let _ = r.version();
        let _ = r.feature_supported();
        if let Ok(m) = r.media() {
            let text = r.text().expect("a media reply is a data reply");
            // sub-command results (`&&`) are cut off before the reply is split
            let main = text.split("&&").next().unwrap_or_default();
            let first = main.split_ascii_whitespace().next().unwrap_or_default();
            assert_eq!(first.parse::<u16>().ok(), Some(m.port), "{text:?}");
        }
    }
    let _ = parse_stats(Some(data));
    let expected = data.first().map_or(0, |b| usize::from(b % 8));
    if let Ok(v) = parse_counters(Some(data), expected) {
        assert_eq!(v.len(), expected);
    }
});

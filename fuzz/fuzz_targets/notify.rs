//! Any byte stream, cut into reads anywhere: the line buffer never holds more than its limit,
//! every line it delivers is within the limit, parsing never panics, and a parsed dialog id
//! prints back to text that parses to the same id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtpproxy::core::notify::{parse_line, DialogId, Frame, LineBuffer, Notification};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let max = 64;
    let step = usize::from(cut).max(1);
    let mut lines = LineBuffer::new(max);
    for chunk in stream.chunks(step) {
        lines.feed(chunk, |frame| match frame {
            Frame::Line(l) => {
                assert!(l.len() <= max);
                assert!(!l.contains(&b'\n'));
                if let Ok(Notification::Timeout(d)) = parse_line(l) {
                    let text = d.to_string();
                    assert_eq!(DialogId::parse(text.as_bytes()), Ok(d));
                }
            }
            Frame::TooLong { len } => assert!(len > max),
        });
        assert!(lines.partial().len() <= max);
    }
});

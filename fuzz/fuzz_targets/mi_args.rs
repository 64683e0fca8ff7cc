//! Any MI `rtpproxy_enable` arguments (url bytes, enable value, optional set id) against the
//! sets of a fixed configuration: the url matches a node only when it equals that node's url
//! byte for byte, and applying the enable value to a node's health always leaves a state
//! that selection and the probe gate accept (never panics; enable 0 disables for good, 2 until a
//! recheck, anything else enables).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

use rtpproxy::core::config::{build_sets, SetSpec};
use rtpproxy::core::select::{MiEnable, NodeHealth};

fuzz_target!(|data: &[u8]| {
    if data.len() < 14 {
        return;
    }
    let (head, url) = data.split_at(14);
    let enable = i64::from_le_bytes(head[0..8].try_into().unwrap());
    let setid = i32::from_le_bytes(head[8..12].try_into().unwrap());
    let now = u32::from(u16::from_le_bytes(head[12..14].try_into().unwrap()));
    static SETS: OnceLock<Vec<SetSpec>> = OnceLock::new();
    let sets = SETS.get_or_init(|| {
        build_sets(
            &[
                "udp:127.0.0.1:22222 udp:127.0.0.1:22223=3".to_owned(),
                "1 == unix:/run/rtpp.sock udp6:::1:7000|192.0.2.1".to_owned(),
            ],
            0,
        )
        .expect("fixed sets parse")
    });
    let what = MiEnable::from_value(enable);
    for set in sets.iter().filter(|s| head[12] & 1 == 0 || s.id == setid) {
        for node in set.nodes.iter().filter(|n| n.url.as_bytes() == url) {
            assert_eq!(node.url.as_bytes(), url);
            for start in [NodeHealth::ENABLED, NodeHealth { disabled: true, recheck_at: now }] {
                let mut h = start;
                let _ = h.apply_mi_enable(what, now, i32::from(head[13]) - 64);
                match what {
                    MiEnable::Enable => assert_eq!(h, NodeHealth::ENABLED),
                    MiEnable::DisableForever => assert!(h.is_disabled_forever()),
                    MiEnable::DisableAndRecheck => {
                        assert!(h.disabled && !h.is_disabled_forever(), "{h:?}")
                    }
                }
                let _ = h.probe_gate(now, head[13] & 1 == 1);
                let _ = h.is_due_for_recheck(now.wrapping_add(1));
            }
        }
    }
});

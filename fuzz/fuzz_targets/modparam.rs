//! Any sequence of `modparam` lines (name index, value bytes; integers from the value's digits):
//! `ModParams::set_str` / `set_int` and `finish` accept or refuse with a typed error, never
//! panic, and every node of the config they finish with prints back to a token
//! (`URL[|ADV]=WEIGHT`) that parses to the same node.
//! Also the per-value parsers directly (`rtpproxy_sock`, `rtpproxy_timeout`,
//! `rtpp_notify_socket`, `nortpproxy_str`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtpproxy::core::config::{
    normalize_marker, parse_node_list, parse_notify_socket, parse_sock_value, parse_timeout_ms,
    ModParams,
};

const STR: &[&str] = &[
    "rtpproxy_sock",
    "rtpproxy_timeout",
    "nortpproxy_str",
    "db_url",
    "db_table",
    "rtpp_socket_col",
    "set_id_col",
    "rtpp_notify_socket",
    "generated_sdp_media_ip",
    "no_such_param",
];
const INT: &[&str] = &[
    "rtpproxy_disable_tout",
    "rtpproxy_retr",
    "rtpproxy_autobridge",
    "default_set",
    "generated_sdp_port_min",
    "generated_sdp_port_max",
    "rtpproxy_sock",
];

fuzz_target!(|data: &[u8]| {
    let mut params = ModParams::default();
    // Lines separated by 0xff: first byte picks the parameter, the rest is the value.
    for line in data.split(|&b| b == 0xff) {
        let Some((&pick, value)) = line.split_first() else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        let _ = parse_sock_value(text, i32::from(pick % 4) - 1);
        let _ = parse_node_list(text);
        let _ = parse_timeout_ms(text);
        let _ = parse_notify_socket(text);
        let _ = normalize_marker(text);
        if pick & 0x80 == 0 {
            let _ = params.set_str(STR[usize::from(pick) % STR.len()], text);
        } else {
            let n = text.trim().parse::<i64>().unwrap_or(i64::from(pick) - 200);
            let _ = params.set_int(INT[usize::from(pick) % INT.len()], n);
        }
    }
    if let Ok(cfg) = params.finish() {
        assert!(cfg.retr >= 1);
        for set in &cfg.sets {
            for node in &set.nodes {
                let adv = node.adv_address.as_deref().map(|a| format!("|{a}"));
                let token = format!("{}{}={}", node.url, adv.unwrap_or_default(), node.weight);
                let again = parse_node_list(&token).unwrap_or_else(|e| panic!("{token:?}: {e}"));
                assert_eq!(again.len(), 1, "{token:?}");
                let n = &again[0];
                assert_eq!(
                    (&n.url, n.transport, &n.address, &n.adv_address, n.weight),
                    (&node.url, node.transport, &node.address, &node.adv_address, node.weight),
                    "{token:?}"
                );
            }
        }
    }
});

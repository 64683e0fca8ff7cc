//! Any table of DB rows (set id, socket column): `SetsBuilder::add_db_row` accepts or refuses
//! each with a typed error and never panics; the nodes it keeps are numbered 0, 1, 2, ... in
//! row order across sets, and each set holds only nodes of rows for that set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtpproxy::core::config::SetsBuilder;

fuzz_target!(|data: &[u8]| {
    let Some((&default_set, rest)) = data.split_first() else {
        return;
    };
    let default_set = i32::from(default_set % 8);
    let mut builder = SetsBuilder::new();
    // Rows separated by 0xff: a set-id byte (signed: negative = the modparam grammar), then
    // the socket column.
    for row in rest.split(|&b| b == 0xff) {
        let Some((&id, socket)) = row.split_first() else {
            continue;
        };
        let Ok(socket) = std::str::from_utf8(socket) else {
            continue;
        };
        let before = builder.node_count();
        if builder.add_db_row(socket, i32::from(id as i8), default_set).is_err() {
            assert_eq!(builder.node_count(), before, "a refused row added nodes");
        }
    }
    let total = builder.node_count();
    let sets = builder.finish();
    let mut seen: Vec<usize> = sets.iter().flat_map(|s| s.nodes.iter().map(|n| n.index)).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..total).collect::<Vec<_>>());
    let mut ids: Vec<i32> = sets.iter().map(|s| s.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), sets.len(), "a set id appears twice");
});

//! Golden tests of the media commands, their reply parsers and the copy context
//! (`core::media`), through the public API only.
//!
//! - `tests/fixtures/media/commands.golden`: one line per command case, `name | body` or
//!   `name | ERROR: message`.
//! - `tests/fixtures/media/replies.golden`: one line per reply case, `name | outcome`.
//! - `tests/fixtures/media/copy/<case>/`: `case.txt` (`key: value`: `flags`, `mask`,
//!   `media-ip`, `ts`), `caller.sdp`, `callee.sdp`, `answer.sdp` (optional, may repeat as
//!   `answer2.sdp`), and the expected `offer.sdp` and `commands.txt` (the `C`/`N` commands the
//!   answers and the final delete produce, and the stream map).
//!
//! `UPDATE_GOLDEN=1 cargo test --test media_cases` rewrites the expected files; review the diff.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rtpproxy::core::media::{
    self, copy_flags, CopyAction, CopyContext, CopyReader, CopyWriter, MediaError, Operation,
    PromptTarget, RelayError, Tags,
};
use rtpproxy::core::proto::Command;

const CID: &[u8] = b"a84b4c76e66710@pc33";
const FT: &[u8] = b"1928301774";
const TT: &[u8] = b"a6c85cf";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/media")
}

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

/// Compares `actual` with the golden file (or rewrites it with `UPDATE_GOLDEN`).
fn golden(path: &Path, actual: &str) {
    if update() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        panic!(
            "{} differs ({} vs {} lines):\n{}\n--- actual:\n{actual}",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

fn line(out: &mut String, name: &str, r: Result<Command, MediaError>) {
    match r {
        Ok(c) => writeln!(out, "{name} | {}", String::from_utf8_lossy(c.as_bytes())).unwrap(),
        Err(e) => writeln!(out, "{name} | ERROR: {e}").unwrap(),
    }
}

#[test]
fn command_strings() {
    let both = Tags::new(FT, TT);
    let from_only = Tags::new(FT, b"");
    let mut out = String::new();
    out.push_str("# name | command body (spec §3.4) or ERROR: why it is refused\n");

    // P / S (spec §7.2, §7.3)
    let prompt = b"/var/lib/rtpproxy/prompts/welcome";
    let uac = PromptTarget::Uac.tags(FT, TT).unwrap();
    line(
        &mut out,
        "play_uac_loop",
        media::play(CID, prompt, -1, &uac),
    );
    line(
        &mut out,
        "play_uac_three_times",
        media::play(CID, prompt, 3, &uac),
    );
    let uac_no_to = PromptTarget::Uac.tags(FT, b"").unwrap();
    line(
        &mut out,
        "play_uac_no_to_tag",
        media::play(CID, prompt, 1, &uac_no_to),
    );
    let uas = PromptTarget::Uas.tags(FT, TT).unwrap();
    line(&mut out, "play_uas", media::play(CID, prompt, -1, &uas));
    match PromptTarget::Uas.tags(FT, b"") {
        Ok(t) => line(
            &mut out,
            "play_uas_no_to_tag",
            media::play(CID, prompt, 1, &t),
        ),
        Err(e) => line(&mut out, "play_uas_no_to_tag", Err(e)),
    }
    line(
        &mut out,
        "play_prompt_with_space",
        media::play(CID, b"/prompts/my file", 1, &uac),
    );
    line(
        &mut out,
        "play_empty_prompt",
        media::play(CID, b"", 1, &uac),
    );
    line(&mut out, "stop_play_uac", media::stop_play(CID, &uac));
    line(
        &mut out,
        "stop_play_uac_no_to_tag",
        media::stop_play(CID, &uac_no_to),
    );
    line(&mut out, "stop_play_uas", media::stop_play(CID, &uas));

    // R / C (spec §7.4)
    line(&mut out, "record", media::record(b"", CID, &both));
    line(
        &mut out,
        "record_single_file",
        media::record(b"s", CID, &both),
    );
    line(
        &mut out,
        "record_no_to_tag",
        media::record(b"", CID, &from_only),
    );
    let reply = media::message_tags(true, FT, TT, "recording from a reply").unwrap();
    line(
        &mut out,
        "record_from_reply",
        media::record(b"", CID, &reply),
    );
    match media::message_tags(true, FT, b"", "recording from a reply") {
        Ok(t) => line(
            &mut out,
            "record_from_reply_no_to_tag",
            media::record(b"", CID, &t),
        ),
        Err(e) => line(&mut out, "record_from_reply_no_to_tag", Err(e)),
    }
    line(
        &mut out,
        "record_bad_flags",
        media::record(b"s x", CID, &both),
    );
    line(
        &mut out,
        "copy_udp",
        media::copy(b"", CID, b"udp:192.0.2.50:40000", &both, 1),
    );
    line(
        &mut out,
        "copy_udp_stream_2",
        media::copy(b"", CID, b"udp:192.0.2.50:40000", &both, 2),
    );
    line(
        &mut out,
        "copy_file_flags",
        media::copy(b"p", CID, b"call-1234", &both, 1),
    );
    line(
        &mut out,
        "copy_no_to_tag",
        media::copy(b"", CID, b"udp:192.0.2.50:40000", &from_only, 1),
    );
    line(
        &mut out,
        "copy_destination_with_space",
        media::copy(b"", CID, b"udp:192.0.2.50 40000", &both, 1),
    );

    // N (spec §7.7; feature 20200226)
    line(&mut out, "stop_copy", media::stop_copy(CID, &both, 1));
    line(
        &mut out,
        "stop_copy_stream_3",
        media::stop_copy(CID, &both, 3),
    );
    line(
        &mut out,
        "stop_copy_no_to_tag",
        media::stop_copy(CID, &from_only, 1),
    );
    let callee = media::Leg::Callee.tags(FT, TT);
    line(
        &mut out,
        "stop_copy_callee_leg",
        media::stop_copy(CID, &callee, 2),
    );

    // Q (spec §7.5, §7.6)
    line(&mut out, "query", media::query(CID, &both, &[]));
    let reply_q = media::message_tags(true, FT, TT, "statistics of a reply").unwrap();
    line(
        &mut out,
        "query_from_reply",
        media::query(CID, &reply_q, &[]),
    );
    line(
        &mut out,
        "query_no_to_tag",
        media::query(CID, &from_only, &[]),
    );
    for (i, q) in media::all_stats_queries(CID, &both)
        .unwrap()
        .into_iter()
        .enumerate()
    {
        line(&mut out, &format!("query_all_stats_{}", i + 1), Ok(q));
    }
    match media::all_stats_queries(CID, &from_only) {
        Ok(_) => out.push_str("query_all_stats_no_to_tag | unexpectedly built\n"),
        Err(e) => line(&mut out, "query_all_stats_no_to_tag", Err(e)),
    }

    // words that would inject
    line(
        &mut out,
        "call_id_with_space",
        media::stop_play(b"a b", &uac),
    );
    line(
        &mut out,
        "tag_with_semicolon",
        media::stop_play(CID, &Tags::new(b"a;2", TT)),
    );
    golden(&dir().join("commands.golden"), &out);
}

fn show<T: std::fmt::Debug>(r: Result<T, MediaError>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("ERROR: {e}"),
    }
}

#[test]
fn reply_parsers() {
    let mut out = String::new();
    out.push_str("# name | reply as received (\\n escaped) | outcome\n");
    let mut case = |name: &str, body: Option<&[u8]>, outcome: String| {
        let shown = body
            .map(|b| b.escape_ascii().to_string())
            .unwrap_or_else(|| "<no reply>".into());
        writeln!(out, "{name} | {shown} | {outcome}").unwrap();
    };
    let acks: [(&str, Operation, Option<&[u8]>); 16] = [
        ("play_ok", Operation::Play, Some(b"0\n")),
        ("play_no_prompt_file", Operation::Play, Some(b"E60\n")),
        ("play_no_saved_codecs", Operation::Play, Some(b"E35\n")),
        ("play_bad_count", Operation::Play, Some(b"E17\n")),
        ("play_no_session", Operation::Play, Some(b"E50\n")),
        ("play_no_reply", Operation::Play, None),
        ("stop_play_ok", Operation::StopPlay, Some(b"0\n")),
        ("record_ok", Operation::Record, Some(b"0\n")),
        ("record_bad_modifier", Operation::Record, Some(b"E7\n")),
        ("record_no_session", Operation::Record, Some(b"E50\n")),
        ("copy_failed", Operation::Copy, Some(b"E65\n")),
        ("stop_copy_ok", Operation::StopCopy, Some(b"0\n")),
        (
            "stop_copy_nothing_recorded",
            Operation::StopCopy,
            Some(b"E50\n"),
        ),
        ("unknown_command", Operation::StopCopy, Some(b"E0\n")),
        ("overloaded", Operation::Copy, Some(b"E98\n")),
        ("malformed_error", Operation::Record, Some(b"E\n")),
    ];
    for (name, op, body) in acks {
        case(name, body, show(media::check_reply(op, body)));
    }
    let stats: [(&str, Option<&[u8]>); 10] = [
        ("stats", Some(b"60 51 51 102 0\n")),
        ("stats_extra_tokens", Some(b"60 1 2 3 4 5 6\n")),
        ("stats_big_counters", Some(b"59 4294967296 1 2 3\n")),
        ("stats_legacy_not_found", Some(b"E8\n")),
        ("stats_not_found", Some(b"E50\n")),
        ("stats_too_short", Some(b"60 1 2\n")),
        ("stats_not_a_number", Some(b"60 1 x 3 4\n")),
        ("stats_negative_counter", Some(b"60 -1 2 3 4\n")),
        ("stats_malformed_error", Some(b"Ex\n")),
        ("stats_no_reply", None),
    ];
    for (name, body) in stats {
        case(name, body, show(media::parse_stats(body)));
    }
    let counters: [(&str, Option<&[u8]>); 7] = [
        ("counters", Some(b"60 151 151 302 0\n")),
        ("counters_rtpa", Some(b"151 151 0 0 0\n")),
        ("counters_negative", Some(b"-1 0 0 0 0\n")),
        ("counters_wrong_count", Some(b"1 2 3 4\n")),
        ("counters_unknown_name", Some(b"E62\n")),
        ("counters_bad_modifier", Some(b"E19\n")),
        ("counters_garbage", Some(b"1 2 three 4 5\n")),
    ];
    for (name, body) in counters {
        case(name, body, show(media::parse_counters(body, 5)));
    }
    golden(&dir().join("replies.golden"), &out);
}

#[test]
fn every_relay_code_is_typed() {
    for op in [
        Operation::Play,
        Operation::StopPlay,
        Operation::Record,
        Operation::Copy,
        Operation::StopCopy,
        Operation::Query,
    ] {
        for code in 0..=200u32 {
            let e = RelayError::from_code(op, code);
            assert_eq!(e.code(), code, "{op:?} E{code}");
            assert!(!e.to_string().is_empty());
        }
    }
    assert_eq!(
        RelayError::from_code(Operation::Play, 60),
        RelayError::PlayFailed
    );
    assert_eq!(
        RelayError::from_code(Operation::StopCopy, 50),
        RelayError::NotRecording
    );
    assert_eq!(
        RelayError::from_code(Operation::Query, 50),
        RelayError::SessionNotFound { code: 50 }
    );
}

#[test]
fn copy_streams_of_a_message() {
    let two = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                m=audio 4000 RTP/AVP 0\r\nm=message 5000 TCP/MSRP *\r\nm=video 0 RTP/AVP 31\r\n\
                m=video 4002 RTP/AVP 31\r\n";
    // audio is 1, MSRP has no index, the disabled video is 2, the live video is 3
    assert_eq!(media::copy_streams(&[two.as_slice()]), vec![1, 3]);
    assert_eq!(media::copy_streams(&[]), vec![1]);
    assert_eq!(media::copy_streams(&[b"garbage".as_slice()]), vec![1]);
}

// ---------------------------------------------------------------------------------------------
// Copy context cases
// ---------------------------------------------------------------------------------------------

fn kv(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == key))
        .map(|(_, v)| v.trim().to_owned())
}

fn parse_flags(s: &str) -> u32 {
    s.split(',')
        .map(str::trim)
        .map(|f| match f {
            "siprec" => copy_flags::SIPREC,
            "disable" => copy_flags::DISABLE,
            "caller" => copy_flags::LEG_CALLER,
            "callee" => copy_flags::LEG_CALLEE,
            "" => 0,
            other => panic!("unknown copy flag {other}"),
        })
        .fold(0, |a, b| a | b)
}

/// The commands the host sends for `actions` (as `host::rtp_relay` builds them).
fn commands(ctx: &CopyContext, actions: &[CopyAction], out: &mut String) {
    for a in actions {
        let s = ctx.streams[a.stream()];
        let tags = s.leg.tags(FT, TT);
        let cmd = match a {
            CopyAction::Start { destination, .. } => {
                media::copy(b"", CID, destination, &tags, s.medianum + 1)
            }
            CopyAction::Stop { .. } => media::stop_copy(CID, &tags, s.medianum + 1),
        };
        let what = match a {
            CopyAction::Start { .. } => "start",
            CopyAction::Stop {
                deactivate: true, ..
            } => "stop (left the mask)",
            CopyAction::Stop { .. } => "stop",
        };
        match cmd {
            Ok(c) => writeln!(out, "{what}: {}", String::from_utf8_lossy(c.as_bytes())).unwrap(),
            Err(e) => writeln!(out, "{what}: ERROR {e}").unwrap(),
        }
    }
}

fn run_copy_case(case: &Path) {
    let text = fs::read_to_string(case.join("case.txt")).unwrap();
    let flags = parse_flags(&kv(&text, "flags").unwrap_or_default());
    let mask = kv(&text, "mask").map_or(u32::MAX, |m| {
        u32::from_str_radix(m.trim_start_matches("0x"), 16).unwrap()
    });
    let ip = kv(&text, "media-ip").unwrap_or_else(|| "127.0.0.1".into());
    let ts: i64 = kv(&text, "ts").map_or(1_700_000_000, |t| t.parse().unwrap());
    let read = |n: &str| fs::read(case.join(n)).ok();
    let (caller, callee) = (read("caller.sdp"), read("callee.sdp"));

    let mut ctx = CopyContext::new(ts, ip.as_bytes(), flags);
    let mut port = 35000u16;
    let mut alloc = || {
        port = media::next_generated_port(port, 35000, 35010);
        port
    };
    let mut log = String::new();
    let offer = ctx.offer(
        flags,
        mask,
        caller.as_deref(),
        callee.as_deref(),
        &mut alloc,
    );
    match &offer {
        Ok(body) => golden(&case.join("offer.sdp"), &String::from_utf8_lossy(body)),
        Err(e) => writeln!(log, "offer: ERROR {e}").unwrap(),
    }
    writeln!(log, "stream map: {:?}", ctx.stream_map()).unwrap();
    for name in ["answer.sdp", "answer2.sdp"] {
        let Some(answer) = read(name) else { continue };
        if let Some(next) = kv(&text, &format!("mask-before-{name}")) {
            // a later offer with another mask (streams leaving the copy)
            let m = u32::from_str_radix(next.trim_start_matches("0x"), 16).unwrap();
            let again = ctx.offer(flags, m, caller.as_deref(), callee.as_deref(), &mut alloc);
            writeln!(log, "re-offer with mask {m:#x}: {}", again.is_ok()).unwrap();
        }
        match ctx.answer(&answer) {
            Ok(plan) => {
                writeln!(log, "{name}: {} unchanged", plan.unchanged).unwrap();
                commands(&ctx, &plan.actions, &mut log);
                for a in &plan.actions {
                    ctx.record_result(a, true);
                }
            }
            Err(e) => writeln!(log, "{name}: ERROR {e}").unwrap(),
        }
    }
    let (actions, idle) = ctx.delete();
    writeln!(log, "delete: {idle} idle").unwrap();
    commands(&ctx, &actions, &mut log);
    // the stored form and the replicated form both give the same context back
    assert_eq!(CopyContext::from_bytes(&ctx.to_bytes()).unwrap(), ctx);
    let mut bin = Bin::default();
    ctx.serialize(&mut bin).unwrap();
    assert_eq!(CopyContext::deserialize(&mut bin).unwrap(), ctx);
    golden(&case.join("commands.txt"), &log);
}

#[test]
fn copy_context_cases() {
    let root = dir().join("copy");
    let mut cases: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("case.txt").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 4, "copy cases missing in {}", root.display());
    for case in cases {
        run_copy_case(&case);
    }
}

/// OpenSIPS' `bin_packet_t` as seen through push/pop: a FIFO of strings and integers.
#[derive(Default)]
struct Bin {
    items: std::collections::VecDeque<Item>,
}

enum Item {
    Str(Vec<u8>),
    Int(u32),
}

impl CopyWriter for Bin {
    fn push_str(&mut self, s: &[u8]) -> bool {
        self.items.push_back(Item::Str(s.to_vec()));
        true
    }
    fn push_int(&mut self, v: u32) -> bool {
        self.items.push_back(Item::Int(v));
        true
    }
}

impl CopyReader for Bin {
    fn pop_str(&mut self) -> Option<Vec<u8>> {
        match self.items.pop_front()? {
            Item::Str(s) => Some(s),
            Item::Int(_) => None,
        }
    }
    fn pop_int(&mut self) -> Option<u32> {
        match self.items.pop_front()? {
            Item::Int(v) => Some(v),
            Item::Str(_) => None,
        }
    }
}

proptest! {
    #[test]
    fn reply_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = media::parse_stats(Some(&body));
        let _ = media::parse_counters(Some(&body), 5);
        let _ = media::check_reply(Operation::Copy, Some(&body));
    }

    #[test]
    fn stored_contexts_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = CopyContext::from_bytes(&bytes);
    }

    #[test]
    fn copy_answers_never_panic(body in "[vomcsta=0-9 .\r\nINPRTAVlbe:/]{0,200}") {
        let caller = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                       m=audio 4000 RTP/AVP 0\r\n";
        let mut ctx = CopyContext::new(1, b"127.0.0.1", copy_flags::LEG_CALLER | copy_flags::SIPREC);
        let mut p = 0u16;
        let _ = ctx.offer(ctx.flags, u32::MAX, Some(caller), None, &mut || { p += 1; p });
        let _ = ctx.answer(body.as_bytes());
        let _ = ctx.offer(ctx.flags, u32::MAX, Some(body.as_bytes()), None, &mut || { p += 1; p });
    }
}

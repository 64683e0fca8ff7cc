//! Media operations through a real OpenSIPS 3.6.8 with our module, a real RTPProxy and sipp:
//! prompts (`rtpproxy_stream2uac/uas`), recording and copying (`rtpproxy_start_recording`,
//! `rtpproxy_stop_recording`), statistics (`rtpproxy_stats`, `rtpproxy_all_stats`), and the
//! rtp_relay engine (`rtp_relay_engage("rtpproxy")`, SIPREC through the copy API).
//!
//! Each call is a sipp UAC -> OpenSIPS -> sipp UAS call. The UAC sends in-dialog INFO
//! requests carrying `X-Step: <name>`; OpenSIPS answers them itself after running the step's
//! function and logging `STEP <name> ok|failed`. RTP sent by the relay (prompts, copies) goes
//! to UDP ports this test listens on; RTP through the relay comes from sipp's pcap play.
//!
//! The figures of each run are printed (run with `--nocapture` to see them).

mod e2e;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e::{cfg, scratch, Env, Impl, OpenSips, Relay};

/// sipp's sample RTP stream (PCMA, 7 s).
fn pcap() -> Option<PathBuf> {
    [
        "/usr/share/sip-tester/g711a.pcap",
        "/usr/share/sipp/pcap/g711a.pcap",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A loopback port for sipp, which uses the media port and the next ones (RTCP, video).
fn port() -> u16 {
    e2e::free_port("127.0.0.1", 4)
}

/// Counts the UDP packets arriving on a port (RTP from the relay).
struct Listener {
    port: u16,
    packets: Arc<Mutex<Vec<(Instant, u8, usize)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn bind() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let packets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p2, s2) = (packets.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s2.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let pt = if n >= 2 { buf[1] & 0x7f } else { 255 };
                    p2.lock().unwrap().push((Instant::now(), pt, n));
                }
            }
        });
        Self {
            port,
            packets,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.packets.lock().unwrap().len()
    }

    /// Distinct packet sizes and the time between the first and the last packet.
    fn shape(&self) -> (Vec<usize>, Duration) {
        let p = self.packets.lock().unwrap();
        let mut sizes: Vec<usize> = p.iter().map(|x| x.2).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let span = match (p.first(), p.last()) {
            (Some(a), Some(b)) => b.0 - a.0,
            _ => Duration::ZERO,
        };
        (sizes, span)
    }

    fn payload_types(&self) -> Vec<u8> {
        let mut pts: Vec<u8> = self.packets.lock().unwrap().iter().map(|p| p.1).collect();
        pts.sort_unstable();
        pts.dedup();
        pts
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SDP media line port: a fixed number (a listener of this test) or sipp's `[media_port]`.
fn sdp(port: &str) -> String {
    format!(
        "v=0\r\no=sipp 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
    .replace("\r\n", "\n      ")
}

/// A UAC scenario: INVITE, ACK, then for each step a pause and an INFO `X-Step`, then BYE.
fn uac_xml(sdp_port: &str, pcap: Option<&Path>, steps: &[(u32, &str)], tail_ms: u32) -> String {
    let mut x = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="media uac">
  <send retrans="500">
    <![CDATA[

      INVITE sip:uas@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:uac@[local_ip]:[local_port]>;tag=uac-[pid]-[call_number]
      To: <sip:uas@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:uac@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      {sdp}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[

      ACK sip:uas@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:uac@[local_ip]:[local_port]>;tag=uac-[pid]-[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"#,
        sdp = sdp(sdp_port)
    );
    if let Some(p) = pcap {
        x.push_str(&format!(
            "  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n",
            p.display()
        ));
    }
    for (i, (pause, step)) in steps.iter().enumerate() {
        x.push_str(&format!(
            r#"  <pause milliseconds="{pause}"/>
  <send retrans="500">
    <![CDATA[

      INFO sip:uas@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:uac@[local_ip]:[local_port]>;tag=uac-[pid]-[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Max-Forwards: 70
      X-Step: {step}
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
"#,
            cseq = i + 2
        ));
    }
    x.push_str(&format!(
        r#"  <pause milliseconds="{tail_ms}"/>
  <send retrans="500">
    <![CDATA[

      BYE sip:uas@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:uac@[local_ip]:[local_port]>;tag=uac-[pid]-[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {cseq} BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"#,
        cseq = steps.len() + 2
    ));
    x
}

/// The UAS scenario: answers the INVITE (media on `sdp_port`), optionally plays the pcap after
/// the ACK, sends its own INFO steps (callee's tag as From-tag), answers the BYE.
fn uas_xml(sdp_port: &str, pcap: Option<&Path>, steps: &[(u32, &str)]) -> String {
    let mut after_ack = pcap
        .map(|p| {
            format!(
                "  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n",
                p.display()
            )
        })
        .unwrap_or_default();
    for (i, (pause, step)) in steps.iter().enumerate() {
        after_ack.push_str(&format!(
            r#"  <pause milliseconds="{pause}"/>
  <send retrans="500">
    <![CDATA[

      INFO sip:uac@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:uas@[local_ip]:[local_port]>;tag=uas-[pid]-[call_number]
      To: <sip:uac@[remote_ip]:[remote_port]>;tag=[$caller_tag]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Max-Forwards: 70
      X-Step: {step}
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
"#,
            cseq = i + 1
        ));
    }
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="media uas">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="tag=([^;> \r\n]*)" search_in="hdr" header="From:" assign_to="junk,caller_tag"/>
    </action>
  </recv>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=uas-[pid]-[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:uas@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      {sdp}
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
{after_ack}  <recv request="BYE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <Reference variables="junk,caller_tag"/>
</scenario>
"#,
        sdp = sdp(sdp_port)
    )
}

/// OpenSIPS routes: offer/answer with flags `co`, unforce on BYE, INFO steps run locally.
fn routes(uas: u16, steps: &str) -> String {
    format!(
        r#"route {{
    if (is_method("INFO")) {{
        $var(step) = $hdr(X-Step);
        route(step);
        sl_send_reply(200, "OK");
        exit;
    }}
    if (is_method("INVITE") && has_body("application/sdp")) {{
        if (!rtpproxy_offer("co")) {{ sl_send_reply(500, "offer failed"); exit; }}
    }}
    if (is_method("BYE")) rtpproxy_unforce();
    $du = "sip:127.0.0.1:{uas}";
    t_on_reply("r");
    t_relay();
}}
onreply_route[r] {{
    if (has_body("application/sdp")) rtpproxy_answer("co");
}}
route[step] {{
{steps}
}}
"#
    )
}

/// One script line per step: `if ($var(step) == "name") { if (CALL) ok else failed }`.
fn step(name: &str, call: &str) -> String {
    format!(
        "    if ($var(step) == \"{name}\") {{\n        if ({call}) xlog(\"STEP {name} ok\\n\");\n        \
         else xlog(\"STEP {name} failed\\n\");\n    }}\n"
    )
}

const MODULES: &str = "loadmodule \"sl.so\"\nloadmodule \"sipmsgops.so\"";

/// A running call: OpenSIPS, the UAS and the UAC (the UAC is waited for by `finish`).
struct Call {
    os: OpenSips,
    uac: Child,
    _uas: e2e::Sipp,
}

impl Call {
    fn start(
        env: &Env,
        dir: &Path,
        modparams: &str,
        modules: &str,
        routes: &dyn Fn(u16) -> String,
        uac: &str,
        uas: &str,
    ) -> Self {
        std::fs::write(dir.join("uac.xml"), uac).unwrap();
        std::fs::write(dir.join("uas.xml"), uas).unwrap();
        let uas_port = port();
        // MEDIA_E2E_IMPL=C runs the same call through the C module, for comparison.
        let which = match std::env::var("MEDIA_E2E_IMPL").as_deref() {
            Ok("C") if env.c_module.is_some() => Impl::C,
            _ => Impl::Ours,
        };
        let c = cfg(env, which, dir, modparams, modules, &routes(uas_port));
        let sip_port = c
            .text
            .lines()
            .find_map(|l| l.strip_prefix("socket=udp:127.0.0.1:"))
            .unwrap()
            .to_string();
        let os = OpenSips::start(env, &c).unwrap_or_else(|e| panic!("{e}"));
        let uas_media = port();
        let uas = e2e::Sipp::spawn(
            dir,
            &[
                "-sf",
                "uas.xml",
                "-i",
                "127.0.0.1",
                "-p",
                &uas_port.to_string(),
                "-mp",
                &uas_media.to_string(),
                "-m",
                "1",
                "-nostdin",
                "-trace_err",
            ]
            .map(String::from),
        )
        .expect("sipp uas");
        assert!(
            e2e::wait_for(Duration::from_secs(10), || e2e::udp_bound(uas_port)),
            "sipp uas did not bind {uas_port}"
        );
        let uac_media = port();
        let uac = Command::new("sipp")
            .current_dir(dir)
            .args([
                "-sf",
                "uac.xml",
                &format!("127.0.0.1:{sip_port}"),
                "-i",
                "127.0.0.1",
                "-p",
                &port().to_string(),
                "-mp",
                &uac_media.to_string(),
                "-m",
                "1",
                "-timeout",
                "60s",
                "-nostdin",
                "-trace_err",
                "-trace_msg",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp uac");
        Self { os, uac, _uas: uas }
    }

    /// Waits until the OpenSIPS log contains `text` (panics after `secs`).
    fn wait_log(&mut self, text: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let log = self.os.log_text();
            if log.contains(text) {
                return log;
            }
            if Instant::now() > deadline {
                panic!("`{text}` not logged in {secs}s:\n{}", tail(&log));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the UAC to finish, stops OpenSIPS; returns (call ok, log).
    fn finish(mut self) -> (bool, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let ok = loop {
            if let Some(st) = self.uac.try_wait().unwrap() {
                break st.success();
            }
            if Instant::now() > deadline {
                let _ = self.uac.kill();
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(300));
        let (_, log) = self.os.stop();
        (ok, log)
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn steps_logged(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split("STEP ").nth(1))
        .map(str::to_string)
        .collect()
}

/// Makes a 2 s 440 Hz prompt with `makeann` (one file per codec: `prompt.0`, `prompt.8`).
fn make_prompt(dir: &Path) -> Option<PathBuf> {
    let makeann = e2e::makeann()?;
    let wav = dir.join("tone.wav");
    let rate = 8000u32;
    let samples: Vec<i16> = (0..rate * 2)
        .map(|i| {
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 8000.0).sin()) as i16
        })
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        w.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(&wav, w).ok()?;
    let prompt = dir.join("prompt");
    let ok = Command::new(makeann)
        .arg(&wav)
        .arg(&prompt)
        .output()
        .ok()?
        .status
        .success();
    (ok && dir.join("prompt.0").exists()).then_some(prompt)
}

fn relay_params(ctl: &str) -> String {
    format!("modparam(\"rtpproxy\", \"rtpproxy_sock\", \"udp:{ctl}\")")
}

fn needs(test: &str) -> Option<Env> {
    let env = Env::get(test)?;
    if !e2e::have_sipp(test) {
        return None;
    }
    Some(env)
}

#[test]
fn prompts_stream_loop_and_stop() {
    const T: &str = "prompts_stream_loop_and_stop";
    let Some(env) = needs(T) else { return };
    let dir = scratch("prompts");
    let Some(prompt) = make_prompt(&dir) else {
        e2e::skip(T, "needs RTPPROXY_BIN with makeann beside it");
        return;
    };
    let ctl = format!("127.0.0.1:{}", port());
    let Some(_relay) = Relay::start_daemon(&[format!("udp:{ctl}")], &[]) else {
        e2e::skip(T, "needs RTPPROXY_BIN");
        return;
    };
    let to_uac = Listener::bind();
    let to_uas = Listener::bind();
    let prompt = prompt.display().to_string();
    let steps = [
        step("play", &format!("rtpproxy_stream2uac(\"{prompt}\", -1)")),
        step("stop", "rtpproxy_stop_stream2uac()"),
        step("playuas", &format!("rtpproxy_stream2uas(\"{prompt}\", 1)")),
        step("stopuas", "rtpproxy_stop_stream2uas()"),
        step("missing", "rtpproxy_stream2uac(\"/nonexistent/prompt\", 1)"),
    ]
    .concat();
    let uac = uac_xml(
        &to_uac.port.to_string(),
        None,
        &[
            (300, "play"),
            (5000, "stop"),
            (300, "missing"),
            (200, "playuas"),
            (3000, "stopuas"),
        ],
        3000,
    );
    let uas = uas_xml(&to_uas.port.to_string(), None, &[]);
    let mut call = Call::start(
        &env,
        &dir,
        &relay_params(&ctl),
        MODULES,
        &|p| routes(p, &steps),
        &uac,
        &uas,
    );
    // After each stop, wait until packets in flight have arrived (the count stays put).
    let quiet = Duration::from_millis(300);
    call.wait_log("STEP stop ok", 30);
    let at_stop = e2e::settle(Duration::from_secs(3), quiet, || to_uac.count());
    call.wait_log("STEP stopuas ok", 30);
    let uas_at_stop = e2e::settle(Duration::from_secs(3), quiet, || to_uas.count());
    let (ok, log) = call.finish();
    let after = to_uac.count();
    let uas_after = to_uas.count();
    let steps = steps_logged(&log);
    println!(
        "{T}: packets to UAC while playing with count -1 (the 2 s prompt is 200 packets of \
         10 ms): {at_stop}, after stop until BYE: {}; to UAS with count 1 (3 s before the \
         stop): {uas_at_stop}, after its stop: {}; \
         payload types to UAC {:?}, (packet sizes, span) to UAC {:?}, to UAS {:?}; \
         steps {steps:?}",
        after - at_stop,
        uas_after - uas_at_stop,
        to_uac.payload_types(),
        to_uac.shape(),
        to_uas.shape()
    );
    assert!(ok, "sipp call failed:\n{}", tail(&log));
    assert!(steps.contains(&"play ok".to_string()), "{steps:?}");
    assert!(steps.contains(&"stop ok".to_string()), "{steps:?}");
    assert!(steps.contains(&"playuas ok".to_string()), "{steps:?}");
    assert!(steps.contains(&"stopuas ok".to_string()), "{steps:?}");
    assert!(
        steps.contains(&"missing failed".to_string()),
        "a missing prompt file must fail: {steps:?}"
    );
    assert!(
        log.contains("E60"),
        "the relay's E60 is reported:\n{}",
        tail(&log)
    );
    // makeann wrote 2 s of PCMU; the relay sends it as 200 packets of 10 ms per playthrough.
    assert!(
        at_stop > 200,
        "the prompt (200 packets) should have looped: {at_stop} packets"
    );
    assert_eq!(to_uac.payload_types(), vec![0], "PCMU, the first codec");
    assert_eq!(
        after, at_stop,
        "packets arrived after rtpproxy_stop_stream2uac"
    );
    assert!(uas_at_stop > 0, "no prompt packets reached the UAS");
    assert!(
        uas_at_stop <= 201,
        "count 1 played more than once: {uas_at_stop}"
    );
    assert_eq!(
        uas_after, uas_at_stop,
        "packets after rtpproxy_stop_stream2uas"
    );
}

/// Sizes of the files in `dir` (name, bytes).
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().map(|m| m.len()).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn recording_copy_and_stop() {
    const T: &str = "recording_copy_and_stop";
    let Some(env) = needs(T) else { return };
    let Some(pcap) = pcap() else {
        e2e::skip(T, "sipp's g711a.pcap not found");
        return;
    };
    let dir = scratch("recording");
    let (rec, spool) = (dir.join("rec"), dir.join("spool"));
    std::fs::create_dir_all(&rec).unwrap();
    std::fs::create_dir_all(&spool).unwrap();
    let ctl = format!("127.0.0.1:{}", port());
    let extra = [
        "-r".to_string(),
        rec.display().to_string(),
        "-S".to_string(),
        spool.display().to_string(),
    ];
    let Some(_relay) = Relay::start_daemon(&[format!("udp:{ctl}")], &extra) else {
        e2e::skip(T, "needs RTPPROXY_BIN (recording directories)");
        return;
    };
    let copy = Listener::bind();
    // RTPProxy records or copies one direction per command (the one the first tag names) and
    // keeps one recorder per direction: the UAC's INFO copies one direction to the network,
    // the UAS's INFO (tags the other way round) records the other one into a file.
    let steps = [
        step(
            "copy",
            &format!(
                "rtpproxy_start_recording(, , , \"udp:127.0.0.1:{}\")",
                copy.port
            ),
        ),
        step("record", "rtpproxy_start_recording(, , \"s\")"),
        step("stoprec", "rtpproxy_stop_recording()"),
    ]
    .concat();
    let uac = uac_xml(
        "[media_port]",
        Some(&pcap),
        &[(300, "copy"), (3000, "stoprec")],
        2500,
    );
    let uas = uas_xml("[media_port]", Some(&pcap), &[(500, "record")]);
    let mut call = Call::start(
        &env,
        &dir,
        &relay_params(&ctl),
        MODULES,
        &|p| routes(p, &steps),
        &uac,
        &uas,
    );
    let quiet = Duration::from_millis(300);
    call.wait_log("STEP stoprec", 30);
    let at_stop = e2e::settle(Duration::from_secs(3), quiet, || copy.count());
    let (ok, log) = call.finish();
    let after = e2e::settle(Duration::from_secs(3), quiet, || copy.count());
    let recorded = files(&rec);
    let steps = steps_logged(&log);
    println!(
        "{T}: copied packets at udp:127.0.0.1:{} before stop: {at_stop}, after stop: {}; \
         recording dir: {recorded:?}; spool: {:?}; steps {steps:?}",
        copy.port,
        after - at_stop,
        files(&spool)
    );
    assert!(ok, "sipp call failed:\n{}", tail(&log));
    for s in ["record ok", "copy ok", "stoprec ok"] {
        assert!(steps.contains(&s.to_string()), "{s}: {steps:?}");
    }
    assert!(at_stop > 0, "no copied RTP arrived");
    assert_eq!(
        after, at_stop,
        "copied RTP kept arriving after rtpproxy_stop_recording"
    );
    assert!(
        recorded
            .iter()
            .any(|(n, len)| n.ends_with(".rtp") && *len > 0),
        "no non-empty recording: {recorded:?}"
    );
}

/// Values of a logged `KEY a=1 b=2 ...` line.
fn logged_values(log: &str, key: &str) -> Vec<Vec<i64>> {
    log.lines()
        .filter_map(|l| l.split(key).nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|kv| kv.split('=').nth(1))
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .collect()
}

#[test]
fn stats_grow_while_rtp_flows() {
    const T: &str = "stats_grow_while_rtp_flows";
    let Some(env) = needs(T) else { return };
    let Some(pcap) = pcap() else {
        e2e::skip(T, "sipp's g711a.pcap not found");
        return;
    };
    let dir = scratch("stats");
    let ctl = format!("127.0.0.1:{}", port());
    let Some(_relay) = Relay::start_daemon(&[format!("udp:{ctl}")], &[])
        .or_else(|| Relay::start(&[format!("udp:{ctl}")]))
    else {
        e2e::skip(T, "no RTPProxy engine");
        return;
    };
    let stats = r#"    if ($var(step) == "stats") {
        $var(rc) = rtpproxy_stats($var(up), $var(down), $var(sent), $var(fail));
        xlog("QSTATS rc=$var(rc) up=$var(up) down=$var(down) sent=$var(sent) fail=$var(fail)\n");
        $var(rc) = rtpproxy_all_stats($avp(st));
        xlog("ALLSTATS rc=$var(rc) ttl=$(avp(st)[0]) ina=$(avp(st)[1]) ino=$(avp(st)[2]) relayed=$(avp(st)[3]) dropped=$(avp(st)[4]) nsent=$(avp(st)[5]) nrcvd=$(avp(st)[6]) ndups=$(avp(st)[7]) nlost=$(avp(st)[8]) perrs=$(avp(st)[9])\n");
    }
"#;
    let uac = uac_xml(
        "[media_port]",
        Some(&pcap),
        &[(1500, "stats"), (3000, "stats")],
        3000,
    );
    let uas = uas_xml("[media_port]", Some(&pcap), &[]);
    let call = Call::start(
        &env,
        &dir,
        &relay_params(&ctl),
        MODULES,
        &|p| routes(p, stats),
        &uac,
        &uas,
    );
    let (ok, log) = call.finish();
    let short = logged_values(&log, "QSTATS ");
    let all = logged_values(&log, "ALLSTATS ");
    println!("{T}: rtpproxy_stats [rc, up, down, sent, fail]: {short:?}");
    println!("{T}: rtpproxy_all_stats [rc, ttl, ina, ino, relayed, dropped, rtpa_*]: {all:?}");
    assert!(ok, "sipp call failed:\n{}", tail(&log));
    assert_eq!(short.len(), 2, "{}", tail(&log));
    assert_eq!(all.len(), 2, "{}", tail(&log));
    let (a, b) = (&short[0], &short[1]);
    assert_eq!((a.len(), b.len()), (5, 5), "{short:?}");
    assert_eq!((a[0], b[0]), (1, 1), "return codes {short:?}");
    for i in 1..=3 {
        assert!(b[i] > a[i], "counter {i} did not grow: {short:?}");
    }
    let (a, b) = (&all[0], &all[1]);
    assert_eq!((a.len(), b.len()), (11, 11), "{all:?}");
    assert_eq!((a[0], b[0]), (1, 1), "return codes {all:?}");
    for i in 2..=4 {
        assert!(b[i] > a[i], "AVP index {} did not grow: {all:?}", i - 1);
    }
}

/// rtp_relay routes: engage on the initial INVITE, dialog matching for the rest.
fn relay_routes(uas: u16, extra: &str) -> String {
    format!(
        r#"route {{
    if (has_totag()) {{
        match_dialog();
        $du = "sip:127.0.0.1:{uas}";
        t_relay();
        exit;
    }}
    if (is_method("INVITE")) {{
        create_dialog();
        $rtp_relay = "co";
        $rtp_relay_peer = "co";
        if (!rtp_relay_engage("rtpproxy")) {{ sl_send_reply(500, "engage failed"); exit; }}
        xlog("ENGAGED\n");
{extra}
    }}
    $du = "sip:127.0.0.1:{uas}";
    t_relay();
}}
"#
    )
}

const RELAY_MODULES: &str = "loadmodule \"sl.so\"\nloadmodule \"sipmsgops.so\"\n\
loadmodule \"dialog.so\"\nloadmodule \"rtp_relay.so\"";

#[test]
fn rtp_relay_engage_call_and_delete() {
    const T: &str = "rtp_relay_engage_call_and_delete";
    let Some(env) = needs(T) else { return };
    if !env.mpath.join("rtp_relay.so").exists() {
        e2e::skip(T, "rtp_relay.so not in the modules directory");
        return;
    }
    let Some(pcap) = pcap() else {
        e2e::skip(T, "sipp's g711a.pcap not found");
        return;
    };
    let dir = scratch("rtp_relay");
    let ctl = format!("127.0.0.1:{}", port());
    let Some(_relay) = Relay::start_daemon(&[format!("udp:{ctl}")], &[])
        .or_else(|| Relay::start(&[format!("udp:{ctl}")]))
    else {
        e2e::skip(T, "no RTPProxy engine");
        return;
    };
    let to_uas = Listener::bind();
    let uac = uac_xml("[media_port]", Some(&pcap), &[], 4000);
    let uas = uas_xml(&to_uas.port.to_string(), None, &[]);
    let mut call = Call::start(
        &env,
        &dir,
        &relay_params(&ctl),
        RELAY_MODULES,
        &|p| relay_routes(p, ""),
        &uac,
        &uas,
    );
    call.wait_log("ENGAGED", 20);
    let deadline = Instant::now() + Duration::from_secs(10);
    while to_uas.count() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = e2e::relay_active_sessions(&ctl);
    let (ok, log) = call.finish();
    let after = e2e::poll_until(Duration::from_secs(10), || {
        e2e::relay_active_sessions(&ctl).filter(|&n| n == 0)
    })
    .or_else(|| e2e::relay_active_sessions(&ctl));
    let trace = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    println!(
        "{T}: RTP relayed to the UAS: {} packets; relay sessions during the call: {during:?}, \
         after BYE: {after:?}",
        to_uas.count()
    );
    assert!(ok, "sipp call failed:\n{}", tail(&log));
    assert!(
        to_uas.count() > 0,
        "no RTP through the relay:\n{}",
        tail(&log)
    );
    assert!(
        during.unwrap_or(0) >= 1,
        "no session on the relay during the call"
    );
    assert_eq!(
        after,
        Some(0),
        "session not deleted at BYE:\n{}",
        tail(&log)
    );
    // The 200 OK the UAC got was rewritten: media on the relay, not on the UAS's port.
    let ok_200 = trace.split("SIP/2.0 200 OK").nth(1).unwrap_or_default();
    assert!(
        !ok_200.contains(&format!("m=audio {} ", to_uas.port)),
        "answer not rewritten:\n{ok_200}"
    );
}

/// The SRS: answers the recording INVITE with two receive-only streams on `ports`, labels 0
/// and 1, and the BYE at the end.
fn srs_xml(ports: (u16, u16)) -> String {
    let sdp = format!(
        "v=0\r\no=srs 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0 8\r\na=label:0\r\na=recvonly\r\n\
         m=audio {} RTP/AVP 0 8\r\na=label:1\r\na=recvonly\r\n",
        ports.0, ports.1
    )
    .replace("\r\n", "\n      ");
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="srs">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=srs-[pid]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:srs@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      {sdp}
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#
    )
}

/// How many SIP worker processes OpenSIPS stopped (its shutdown lines, one per process).
fn sip_workers(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("Asking process") && l.contains("[SIP receiver "))
        .count()
}

#[test]
fn siprec_copies_both_legs_to_the_srs() {
    const T: &str = "siprec_copies_both_legs_to_the_srs";
    let Some(env) = needs(T) else { return };
    for m in ["rtp_relay.so", "siprec.so", "b2b_entities.so", "dialog.so"] {
        if !env.mpath.join(m).exists() {
            e2e::skip(T, &format!("{m} not in the modules directory"));
            return;
        }
    }
    let Some(pcap) = pcap() else {
        e2e::skip(T, "sipp's g711a.pcap not found");
        return;
    };
    let dir = scratch("siprec");
    let ctl = format!("127.0.0.1:{}", port());
    let Some(_relay) = Relay::start_daemon(&[format!("udp:{ctl}")], &[])
        .or_else(|| Relay::start(&[format!("udp:{ctl}")]))
    else {
        e2e::skip(T, "no RTPProxy engine");
        return;
    };
    let (leg_a, leg_b) = (Listener::bind(), Listener::bind());
    let srs_port = port();
    std::fs::write(dir.join("srs.xml"), srs_xml((leg_a.port, leg_b.port))).unwrap();
    let _srs = e2e::Sipp::spawn(
        &dir,
        &[
            "-sf",
            "srs.xml",
            "-i",
            "127.0.0.1",
            "-p",
            &srs_port.to_string(),
            "-m",
            "1",
            "-nostdin",
            "-trace_err",
            "-trace_msg",
        ]
        .map(String::from),
    )
    .expect("sipp srs");
    let uac = uac_xml("[media_port]", Some(&pcap), &[], 4000);
    let uas = uas_xml("[media_port]", Some(&pcap), &[]);
    // One SIP worker. siprec 3.6.8 sends the INVITE to the SRS (b2b `client_new`, from the
    // TMCB_RESPONSE_OUT callback of the callee's 200 OK) and only then marks the session
    // started (`srs_send_invite` sets SIPREC_STARTED after `client_new` returns); its reply
    // handler (`srec_b2b_notify`) takes no lock and drops a 200 OK that finds the session not
    // started yet ("sess=... no longer active"): no ACK, no `copy_answer`, no copy. With two
    // workers the other one can read the SRS's immediate answer inside that window (a loaded
    // machine preempts the sender there). With one worker the answer is read only after the
    // callee's 200 OK has been handled, flag set.
    let modules = format!(
        "{RELAY_MODULES}\nloadmodule \"b2b_entities.so\"\nloadmodule \"siprec.so\"\nudp_workers=1"
    );
    let params = format!(
        "{}\nmodparam(\"rtpproxy\", \"generated_sdp_media_ip\", \"127.0.0.9\")\n\
         modparam(\"rtpproxy\", \"generated_sdp_port_min\", 41000)\n\
         modparam(\"rtpproxy\", \"generated_sdp_port_max\", 41010)",
        relay_params(&ctl)
    );
    let extra = format!(
        "        if (!siprec_start_recording(\"sip:srs@127.0.0.1:{srs_port}\")) xlog(\"SIPREC failed\\n\");"
    );
    let call = Call::start(
        &env,
        &dir,
        &params,
        &modules,
        &|p| relay_routes(p, &extra),
        &uac,
        &uas,
    );
    let (ok, log) = call.finish();
    // The relay's session is deleted at the BYE; wait for the count to drop (or give up).
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let n = e2e::relay_active_sessions(&ctl);
        if n == Some(0) || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let srs_trace = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("srs_") && n.ends_with("_messages.log")
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    let offer = srs_trace
        .split("INVITE sip:")
        .nth(1)
        .and_then(|t| t.split("SIP/2.0 200").next())
        .unwrap_or_default()
        .to_string();
    let commands: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("sending to ").nth(1))
        .filter_map(|l| l.split(": ").nth(1))
        .collect();
    println!(
        "{T}: copied packets at the SRS: caller leg {} (PT {:?}), callee leg {} (PT {:?}); \
         relay sessions after BYE: {after:?}",
        leg_a.count(),
        leg_a.payload_types(),
        leg_b.count(),
        leg_b.payload_types()
    );
    println!(
        "{T}: SDP offered to the SRS:\n{}",
        offer
            .lines()
            .filter(|l| l.trim_start().len() > 1 && l.trim_start().as_bytes()[1] == b'=')
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("{T}: media commands: {commands:?}");
    assert!(ok, "sipp call failed:\n{}", tail(&log));
    assert!(!log.contains("SIPREC failed"), "{}", tail(&log));
    assert!(
        offer.contains("a=label:0") && offer.contains("a=label:1"),
        "{offer}"
    );
    // generated_sdp_media_ip, neither the relay's nor an endpoint's address
    assert!(offer.contains("c=IN IP4 127.0.0.9"), "{offer}");
    assert_eq!(sip_workers(&log), 1, "udp_workers=1 not in effect");
    assert!(
        log.contains("received b2b reply with code 200 for INVITE")
            && !log.contains("no longer active"),
        "siprec did not take the SRS's 200 OK:\n{}",
        tail(&log)
    );
    assert!(
        leg_a.count() > 0,
        "no copy of the caller's RTP:\n{}",
        tail(&log)
    );
    assert!(
        leg_b.count() > 0,
        "no copy of the callee's RTP:\n{}",
        tail(&log)
    );
    assert_eq!(after, Some(0), "session not deleted at BYE");
}

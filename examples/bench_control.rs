//! Benchmark (not a test): round trips of one worker's control client against a real
//! RTPProxy on loopback, beside a bare UDP echo round trip measured in the same run (the
//! floor any client can reach).
//!
//! ```sh
//! cargo run --release --example bench_control -- udp:127.0.0.1:22222 [count]
//! ```
//! Without an address it starts the engine of PyPI rtp.io (or `$RTPPROXY_BIN`) itself.

use std::net::UdpSocket;
use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use rtpproxy::core::config::parse_sock_value;
use rtpproxy::core::proto::command::Command;
use rtpproxy::core::proto::cookie::CookieGen;
use rtpproxy::io::transport::{ClientOptions, ControlClient};

fn stats(label: &str, mut rtts: Vec<Duration>, total: Duration) {
    rtts.sort();
    let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    println!(
        "{label:<28} {:>9.0} ops/s   p50 {:>7.1} us   p99 {:>7.1} us   max {:>8.1} us",
        rtts.len() as f64 / total.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        rtts.last().unwrap().as_secs_f64() * 1e6
    );
}

fn start_engine(port: u16) -> Option<Child> {
    let sock = format!("udp:127.0.0.1:{port}");
    let child = if let Some(bin) = std::env::var_os("RTPPROXY_BIN") {
        Proc::new(bin)
            .current_dir(std::env::temp_dir())
            .args([
                "-f",
                "-F",
                "-s",
                &sock,
                "-l",
                "127.0.0.1",
                "-p",
                "/tmp/bench_control.pid",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?
    } else {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/rtpio_engine.py");
        Proc::new("python3")
            .args([script, &sock])
            .env("RTPIO_ENGINE_FOREVER", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?
    };
    std::thread::sleep(Duration::from_millis(800));
    Some(child)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let arg = args.next();
    let count: usize = args.next().and_then(|c| c.parse().ok()).unwrap_or(20_000);
    let mut engine = None;
    let sock = match arg {
        Some(s) => s,
        None => {
            let port = 39_000 + (std::process::id() % 1000) as u16;
            engine = start_engine(port);
            format!("udp:127.0.0.1:{port}")
        }
    };
    let Ok(Some((_, nodes))) = parse_sock_value(&sock, 0) else {
        eprintln!("bad rtpproxy_sock value {sock:?}");
        return;
    };
    let node = &nodes[0];
    let mut client = ControlClient::new(node, ClientOptions::default());
    let mut cookies = CookieGen::new(std::process::id(), 1);

    // bare UDP echo, same process, same loopback
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(echo_addr).unwrap();
    let mut buf = [0u8; 512];
    let payload = b"12345_6789_1 V";
    let mut rtts = Vec::with_capacity(count);
    let t0 = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        s.send(payload).unwrap();
        s.recv(&mut buf).unwrap();
        rtts.push(t.elapsed());
    }
    stats("bare UDP echo", rtts, t0.elapsed());

    // our client against a fake relay that answers at once: the client's own cost
    let fake = UdpSocket::bind("127.0.0.1:0").unwrap();
    let fake_addr = fake.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = fake.recv_from(&mut buf) {
            let cookie = buf[..n]
                .split(|&b| b == b' ')
                .next()
                .unwrap_or_default()
                .to_vec();
            let _ = fake.send_to(&[&cookie[..], b" 20040107\n"].concat(), from);
        }
    });
    let fake_sock = format!("udp:{fake_addr}");
    let (_, fake_nodes) = parse_sock_value(&fake_sock, 0).unwrap().unwrap();
    let mut fake_client = ControlClient::new(&fake_nodes[0], ClientOptions::default());
    let v = Command::version();
    let mut rtts = Vec::with_capacity(count);
    let t0 = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        fake_client
            .send(&mut cookies, &v)
            .expect("V to the fake relay");
        rtts.push(t.elapsed());
    }
    stats("V via client, instant relay", rtts, t0.elapsed());

    let mut rtts = Vec::with_capacity(count);
    let t0 = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        client.send(&mut cookies, &v).expect("V");
        rtts.push(t.elapsed());
    }
    stats(&format!("V via {}", node.url), rtts, t0.elapsed());

    let sessions = count / 4;
    let mut rtts = Vec::with_capacity(sessions * 2);
    let t0 = Instant::now();
    for i in 0..sessions {
        let cid = format!("bench-{i}@example");
        let mut u = Command::builder(b"Uc0,8").unwrap();
        u.call_id(cid.as_bytes())
            .unwrap()
            .arg(b"192.0.2.1")
            .unwrap()
            .arg(b"4000")
            .unwrap();
        u.indexed_tag(b"ft", 1).unwrap();
        let d = Command::delete(cid.as_bytes(), b"ft", None).unwrap();
        for cmd in [u.finish(), d] {
            let t = Instant::now();
            client.send(&mut cookies, &cmd).expect("U/D");
            rtts.push(t.elapsed());
        }
    }
    stats("U + D (session create/delete)", rtts, t0.elapsed());
    if let Some(mut e) = engine.take() {
        let _ = e.kill();
        let _ = e.wait();
    }
}

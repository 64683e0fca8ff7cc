//! Talks to an RTPProxy the way the module does, without OpenSIPS: capability probe, then a
//! media session created (`U`), answered (`L`) and deleted (`D`).
//!
//! ```sh
//! cargo run --example control_demo -- "udp:127.0.0.1:22222"
//! ```
//! The argument is an `rtpproxy_sock` value (any transport prefix).

use std::time::Duration;

use rtpproxy::core::config::parse_sock_value;
use rtpproxy::core::proto::command::Command;
use rtpproxy::core::proto::cookie::CookieGen;
use rtpproxy::io::transport::{ClientOptions, ControlClient};

fn main() {
    let sock = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "udp:127.0.0.1:22222".into());
    let (set, nodes) = match parse_sock_value(&sock, 0) {
        Ok(Some(v)) => v,
        Ok(None) => return eprintln!("no node in {sock:?}"),
        Err(e) => return eprintln!("bad rtpproxy_sock {sock:?}: {e}"),
    };
    let node = &nodes[0];
    println!(
        "set {set}, node {} ({:?}, weight {})",
        node.url, node.transport, node.weight
    );
    let opts = ClientOptions {
        timeout: Duration::from_millis(500),
        retr: 3,
    };
    let mut client = ControlClient::new(node, opts);
    let mut cookies = CookieGen::new(std::process::id(), 4242);

    let (outcome, _) = client.probe(&mut cookies);
    println!("probe: {outcome:?}");

    let call_id = format!("demo-{}@example.org", std::process::id());
    let mut offer = Command::builder(b"Uc0,8,101").expect("head");
    offer.call_id(call_id.as_bytes()).unwrap();
    offer.arg(b"192.0.2.10").unwrap().arg(b"4000").unwrap();
    offer.indexed_tag(b"caller-tag", 1).unwrap();
    let mut answer = Command::builder(b"Lc0,8,101").expect("head");
    answer.call_id(call_id.as_bytes()).unwrap();
    answer.arg(b"192.0.2.20").unwrap().arg(b"5000").unwrap();
    answer
        .indexed_tag(b"caller-tag", 1)
        .unwrap()
        .indexed_tag(b"callee-tag", 1)
        .unwrap();
    let delete = Command::delete(call_id.as_bytes(), b"caller-tag", Some(b"callee-tag")).unwrap();

    for cmd in [offer.finish(), answer.finish(), delete] {
        match client.send(&mut cookies, &cmd) {
            Ok(reply) => println!("> {cmd}\n< {reply:?}"),
            Err(e) => println!("> {cmd}\n! {e}"),
        }
    }
    // A hostile Call-ID never reaches the wire.
    match Command::delete(b"abc D other", b"t", None) {
        Ok(c) => println!("unexpected: built {c}"),
        Err(e) => println!("refused injected Call-ID: {e}"),
    }
}

//! One request/reply exchange, sans-IO (spec §3.1), in quinn-proto's `poll_*`/`handle_*` shape.
//!
//! The driver (in `io::transport`) owns the socket and the clock. It loops:
//!
//! 1. `poll_transmit(now)`: if it returns bytes, write them;
//! 2. `poll_outcome()`: if it returns a result, the exchange is over;
//! 3. wait until the socket is readable or `poll_timeout()` passes, then call
//!    `handle_datagram`/`handle_data`/`handle_eof` or `handle_timeout` and go to 1.
//!
//! Nothing here sleeps or reads a clock, so the logic is tested with a virtual `now`.

use std::time::{Duration, Instant};

use super::framing::{encode_datagram, encode_one_shot, encode_stream};
use super::reply::MAX_REPLY_LEN;
use super::{Command, Cookie};

/// How many foreign datagrams may restart the reply wait within one exchange. The C module
/// restarts a full timeout for each one without limit; a peer flooding junk could then hold a
/// worker forever. After this many restarts the deadline stays where it is.
pub const MAX_WAIT_RESTARTS: u32 = 32;

/// Why an exchange ended without a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// Every attempt ran out of time.
    #[error("no reply after {attempts} attempt(s)")]
    Timeout {
        /// Requests sent (0 when `retr` was 0, quirk of the C module).
        attempts: u32,
    },
    /// The reply is longer than [`MAX_REPLY_LEN`] (or has no newline within that length).
    #[error("reply longer than {MAX_REPLY_LEN} bytes")]
    ReplyTooLong,
    /// A stream reply had bytes after its newline.
    #[error("garbage after the reply's newline")]
    TrailingData,
    /// The peer closed the stream before a complete reply.
    #[error("connection closed by the relay before a complete reply")]
    Closed,
}

/// Removes one trailing `\n` (the relay terminates replies with it).
fn strip_lf(body: &[u8]) -> Vec<u8> {
    body.strip_suffix(b"\n").unwrap_or(body).to_vec()
}

/// One UDP command: the same datagram (same cookie) up to `retr` times, each attempt waiting
/// `timeout` for a datagram that carries the cookie.
///
/// Mirrors the UDP branch of `send_rtpp_command` in rtpproxy.c: datagrams with another cookie
/// are dropped and restart the wait with a full timeout (bounded by [`MAX_WAIT_RESTARTS`]);
/// the cookie is matched as a whole token.
#[derive(Debug)]
pub struct DatagramExchange {
    cookie: Cookie,
    datagram: Vec<u8>,
    retr: u32,
    timeout: Duration,
    attempts: u32,
    restarts: u32,
    transmit_due: bool,
    deadline: Option<Instant>,
    outcome: Option<Result<Vec<u8>, ExchangeError>>,
    done: bool,
}

impl DatagramExchange {
    /// Prepares `cmd` under `cookie`. With `retr == 0` the exchange fails at once with a
    /// timeout, as the C module does for `rtpproxy_retr <= 0`.
    pub fn new(cookie: Cookie, cmd: &Command, retr: u32, timeout: Duration) -> Self {
        let datagram = encode_datagram(&cookie, cmd);
        let outcome = (retr == 0).then_some(Err(ExchangeError::Timeout { attempts: 0 }));
        Self {
            cookie,
            datagram,
            retr,
            timeout,
            attempts: 0,
            restarts: 0,
            transmit_due: retr > 0,
            deadline: None,
            outcome,
            done: retr == 0,
        }
    }

    /// The cookie of this command.
    pub fn cookie(&self) -> &Cookie {
        &self.cookie
    }

    /// The request datagram (cookie + command).
    pub fn datagram(&self) -> &[u8] {
        &self.datagram
    }

    /// Attempts sent so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Bytes to send now, if an attempt is due; starts that attempt's timer at `now`.
    ///
    /// Call first, and again after every `handle_*` call.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        if self.done || !self.transmit_due {
            return None;
        }
        self.transmit_due = false;
        self.attempts += 1;
        self.deadline = Some(now + self.timeout);
        Some(&self.datagram)
    }

    /// When [`DatagramExchange::handle_timeout`] must be called if nothing arrives before.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            None
        } else {
            self.deadline
        }
    }

    /// Feeds one received datagram. Returns `true` if it was this command's reply.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> bool {
        if self.done {
            return false;
        }
        match self.cookie.strip_from(datagram) {
            Some(body) => {
                self.done = true;
                self.outcome = Some(if body.len() > MAX_REPLY_LEN {
                    Err(ExchangeError::ReplyTooLong)
                } else {
                    Ok(strip_lf(body))
                });
                true
            }
            None => {
                if self.restarts < MAX_WAIT_RESTARTS && self.deadline.is_some() {
                    self.restarts += 1;
                    self.deadline = Some(now + self.timeout);
                }
                false
            }
        }
    }

    /// Call when `now` reached [`DatagramExchange::poll_timeout`]: schedules the next attempt
    /// or ends the exchange with [`ExchangeError::Timeout`]. Early calls are ignored.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(d) if !self.done && now >= d => {
                self.deadline = None;
                if self.attempts < self.retr {
                    self.transmit_due = true;
                } else {
                    self.done = true;
                    self.outcome = Some(Err(ExchangeError::Timeout {
                        attempts: self.attempts,
                    }));
                }
            }
            _ => {}
        }
    }

    /// The reply body (cookie and trailing newline removed) or the failure, once; `None`
    /// while the exchange is still running.
    pub fn poll_outcome(&mut self) -> Option<Result<Vec<u8>, ExchangeError>> {
        self.outcome.take()
    }

    /// Whether the exchange has ended (its outcome may already have been taken).
    pub fn is_finished(&self) -> bool {
        self.done
    }
}

/// One command on a stream (persistent or one-shot connection): one write, then bytes are
/// accumulated until a newline, all within one `timeout` from the write.
///
/// Mirrors the stream branch of `send_rtpp_command`: a single attempt; a reply longer than
/// [`MAX_REPLY_LEN`] or with bytes after its newline is a failure. Unlike the C module, the
/// timeout covers the whole reply rather than each partial read.
#[derive(Debug)]
pub struct StreamExchange {
    request: Vec<u8>,
    one_shot: bool,
    timeout: Duration,
    sent: bool,
    deadline: Option<Instant>,
    buf: Vec<u8>,
    outcome: Option<Result<Vec<u8>, ExchangeError>>,
    done: bool,
}

impl StreamExchange {
    /// `cmd` on a persistent stream (`<cmd>\n`).
    pub fn stream(cmd: &Command, timeout: Duration) -> Self {
        Self::with_request(encode_stream(cmd), false, timeout)
    }

    /// `cmd` on a legacy one-shot UNIX connection (`<cmd>`, reply may end at EOF).
    pub fn one_shot(cmd: &Command, timeout: Duration) -> Self {
        Self::with_request(encode_one_shot(cmd), true, timeout)
    }

    fn with_request(request: Vec<u8>, one_shot: bool, timeout: Duration) -> Self {
        Self {
            request,
            one_shot,
            timeout,
            sent: false,
            deadline: None,
            buf: Vec::new(),
            outcome: None,
            done: false,
        }
    }

    /// The request bytes.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// The request bytes the first time it is called (starting the timer), `None` after.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        if self.sent || self.done {
            return None;
        }
        self.sent = true;
        self.deadline = Some(now + self.timeout);
        Some(&self.request)
    }

    /// When [`StreamExchange::handle_timeout`] must be called if the reply is not complete.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            None
        } else {
            self.deadline
        }
    }

    /// Feeds bytes read from the stream (any split).
    pub fn handle_data(&mut self, _now: Instant, data: &[u8]) {
        if self.done {
            return;
        }
        self.buf.extend_from_slice(data);
        if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            self.done = true;
            self.outcome = Some(if pos + 1 != self.buf.len() {
                Err(ExchangeError::TrailingData)
            } else if self.buf.len() > MAX_REPLY_LEN {
                Err(ExchangeError::ReplyTooLong)
            } else {
                Ok(strip_lf(&self.buf))
            });
        } else if self.buf.len() >= MAX_REPLY_LEN {
            self.done = true;
            self.outcome = Some(Err(ExchangeError::ReplyTooLong));
        }
    }

    /// The peer closed its side. For a one-shot connection the bytes read so far are the reply
    /// (if any); for a persistent stream this is [`ExchangeError::Closed`].
    pub fn handle_eof(&mut self, _now: Instant) {
        if self.done {
            return;
        }
        self.done = true;
        self.outcome = Some(if self.one_shot && !self.buf.is_empty() {
            Ok(std::mem::take(&mut self.buf))
        } else {
            Err(ExchangeError::Closed)
        });
    }

    /// Call when `now` reached [`StreamExchange::poll_timeout`]; early calls are ignored.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(d) = self.deadline {
            if !self.done && now >= d {
                self.done = true;
                self.outcome = Some(Err(ExchangeError::Timeout { attempts: 1 }));
            }
        }
    }

    /// The reply line without its newline, or the failure, once.
    pub fn poll_outcome(&mut self) -> Option<Result<Vec<u8>, ExchangeError>> {
        self.outcome.take()
    }

    /// Whether the exchange has ended.
    pub fn is_finished(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::proto::CookieGen;

    const T: Duration = Duration::from_millis(100);

    fn udp(retr: u32) -> DatagramExchange {
        let cookie = CookieGen::with_seq(7, 42, 3).next_cookie();
        DatagramExchange::new(cookie, &Command::version(), retr, T)
    }

    #[test]
    fn reply_on_first_attempt() {
        let t0 = Instant::now();
        let mut ex = udp(5);
        assert_eq!(ex.poll_transmit(t0), Some(&b"7_42_3 V"[..]));
        assert_eq!(ex.poll_transmit(t0), None);
        assert_eq!(ex.poll_timeout(), Some(t0 + T));
        assert!(ex.handle_datagram(t0, b"7_42_3 20040107\n"));
        assert_eq!(ex.poll_outcome(), Some(Ok(b"20040107".to_vec())));
        assert!(ex.is_finished());
        assert_eq!(ex.poll_timeout(), None);
    }

    #[test]
    fn retransmits_same_cookie_then_times_out() {
        let t0 = Instant::now();
        let mut ex = udp(3);
        let mut sent = Vec::new();
        let mut now = t0;
        loop {
            if let Some(b) = ex.poll_transmit(now) {
                sent.push(b.to_vec());
            }
            if let Some(o) = ex.poll_outcome() {
                assert_eq!(o, Err(ExchangeError::Timeout { attempts: 3 }));
                break;
            }
            // an early timeout call is ignored
            ex.handle_timeout(now);
            now = ex.poll_timeout().unwrap();
            ex.handle_timeout(now);
        }
        assert_eq!(sent, vec![b"7_42_3 V".to_vec(); 3]);
        assert_eq!(now, t0 + 3 * T);
    }

    #[test]
    fn foreign_datagrams_are_dropped_and_restart_the_wait() {
        let t0 = Instant::now();
        let mut ex = udp(1);
        ex.poll_transmit(t0);
        let t1 = t0 + T / 2;
        assert!(!ex.handle_datagram(t1, b"7_42_2 stale\n"));
        assert!(!ex.handle_datagram(t1, b"7_42_33 prefix-only\n"));
        assert!(!ex.handle_datagram(t1, b"garbage"));
        assert_eq!(ex.poll_timeout(), Some(t1 + T));
        assert_eq!(ex.poll_outcome(), None);
        assert!(ex.handle_datagram(t1, b"7_42_3 0\n"));
        assert_eq!(ex.poll_outcome(), Some(Ok(b"0".to_vec())));
        // after the end, nothing more is accepted
        assert!(!ex.handle_datagram(t1, b"7_42_3 1\n"));
    }

    #[test]
    fn restarts_are_bounded() {
        let t0 = Instant::now();
        let mut ex = udp(1);
        ex.poll_transmit(t0);
        for _ in 0..(MAX_WAIT_RESTARTS + 10) {
            ex.handle_datagram(t0 + T / 2, b"junk");
        }
        assert_eq!(ex.poll_timeout(), Some(t0 + T / 2 + T));
    }

    #[test]
    fn retr_zero_fails_at_once() {
        let mut ex = udp(0);
        assert_eq!(ex.poll_transmit(Instant::now()), None);
        assert_eq!(
            ex.poll_outcome(),
            Some(Err(ExchangeError::Timeout { attempts: 0 }))
        );
    }

    #[test]
    fn late_reply_to_first_attempt_is_accepted_during_second() {
        let t0 = Instant::now();
        let mut ex = udp(2);
        ex.poll_transmit(t0);
        ex.handle_timeout(t0 + T);
        assert!(ex.poll_transmit(t0 + T).is_some());
        assert!(ex.handle_datagram(t0 + T + T / 4, b"7_42_3 20040107\n"));
        assert_eq!(ex.poll_outcome(), Some(Ok(b"20040107".to_vec())));
        assert_eq!(ex.attempts(), 2);
    }

    #[test]
    fn oversized_datagram_reply() {
        let t0 = Instant::now();
        let mut ex = udp(1);
        ex.poll_transmit(t0);
        let mut d = b"7_42_3 ".to_vec();
        d.extend(std::iter::repeat_n(b'1', MAX_REPLY_LEN + 1));
        assert!(ex.handle_datagram(t0, &d));
        assert_eq!(ex.poll_outcome(), Some(Err(ExchangeError::ReplyTooLong)));
    }

    #[test]
    fn stream_accumulates_partial_reads() {
        let t0 = Instant::now();
        let mut ex = StreamExchange::stream(&Command::version(), T);
        assert_eq!(ex.poll_transmit(t0), Some(&b"V\n"[..]));
        assert_eq!(ex.poll_transmit(t0), None);
        ex.handle_data(t0, b"2004");
        assert_eq!(ex.poll_outcome(), None);
        ex.handle_data(t0, b"0107\n");
        assert_eq!(ex.poll_outcome(), Some(Ok(b"20040107".to_vec())));
    }

    #[test]
    fn stream_failures() {
        let t0 = Instant::now();
        let mut ex = StreamExchange::stream(&Command::version(), T);
        ex.poll_transmit(t0);
        ex.handle_data(t0, b"1\n2");
        assert_eq!(ex.poll_outcome(), Some(Err(ExchangeError::TrailingData)));

        let mut ex = StreamExchange::stream(&Command::version(), T);
        ex.poll_transmit(t0);
        ex.handle_data(t0, &vec![b'1'; MAX_REPLY_LEN]);
        assert_eq!(ex.poll_outcome(), Some(Err(ExchangeError::ReplyTooLong)));

        let mut ex = StreamExchange::stream(&Command::version(), T);
        ex.poll_transmit(t0);
        ex.handle_data(t0, b"200");
        ex.handle_eof(t0);
        assert_eq!(ex.poll_outcome(), Some(Err(ExchangeError::Closed)));

        let mut ex = StreamExchange::stream(&Command::version(), T);
        ex.poll_transmit(t0);
        ex.handle_timeout(t0 + T / 2);
        assert_eq!(ex.poll_outcome(), None);
        ex.handle_timeout(t0 + T);
        assert_eq!(
            ex.poll_outcome(),
            Some(Err(ExchangeError::Timeout { attempts: 1 }))
        );
    }

    #[test]
    fn one_shot_reply_may_end_at_eof() {
        let t0 = Instant::now();
        let mut ex = StreamExchange::one_shot(&Command::version(), T);
        assert_eq!(ex.poll_transmit(t0), Some(&b"V"[..]));
        ex.handle_data(t0, b"20040107");
        ex.handle_eof(t0);
        assert_eq!(ex.poll_outcome(), Some(Ok(b"20040107".to_vec())));

        let mut ex = StreamExchange::one_shot(&Command::version(), T);
        ex.poll_transmit(t0);
        ex.handle_eof(t0);
        assert_eq!(ex.poll_outcome(), Some(Err(ExchangeError::Closed)));
    }
}

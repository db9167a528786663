//! One tracker connection: its requests (client → tracker) and responses (tracker → client),
//! paired in order, with resynchronisation after loss.

use std::collections::VecDeque;

use super::framing::{
    parse_request, parse_response_head, request_start, Codings, Framer, Framing, HeadBuf, Push,
};
use super::{HttpTracker, Reject};
use crate::bt::stream::StreamChunk;
use crate::predict::PredictedPeer;

/// What a request outstanding on a connection needs of its response.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    pub(super) announce: bool,
    /// HEAD: the response has no body whatever its headers say.
    pub(super) head: bool,
}

/// The body of a response being read.
#[derive(Debug)]
pub(super) struct Body {
    pub(super) framer: Framer,
    /// Raw content of an announce response (`None`: skipped).
    pub(super) keep: Option<Vec<u8>>,
    pub(super) over_cap: bool,
    pub(super) codings: Codings,
}

#[derive(Debug)]
pub(super) enum Tx {
    Head(HeadBuf),
    /// A request body, skipped.
    Body(Framer),
    /// Waiting for a chunk that starts with a request line.
    Desync,
}

#[derive(Debug)]
pub(super) enum Rx {
    Head(HeadBuf),
    Body(Box<Body>),
    /// Waiting for a chunk that starts with `HTTP/`.
    Desync,
}

#[derive(Debug)]
pub(super) struct Session {
    /// The client opened with a request line; otherwise the connection is ignored.
    pub(super) http: bool,
    pub(super) tx: Tx,
    pub(super) rx: Rx,
    pub(super) pending: VecDeque<Pending>,
    /// The connection carried an announce: a response with nothing outstanding is read as one.
    pub(super) announce_seen: bool,
}

impl Session {
    pub(super) fn new(http: bool) -> Self {
        Self {
            http,
            tx: Tx::Head(HeadBuf::default()),
            rx: Rx::Head(HeadBuf::default()),
            pending: VecDeque::new(),
            announce_seen: false,
        }
    }
}

impl HttpTracker {
    pub(super) fn record(&mut self, result: Result<(), Reject>) {
        self.stats.counts.seen += 1;
        self.stats.counts.record(result.map_err(Reject::as_str));
    }

    /// The request a response answers: the oldest outstanding one or, with none, an announce
    /// if the connection carried one.
    fn answered(&mut self, s: &mut Session) -> Pending {
        s.pending.pop_front().unwrap_or_else(|| {
            self.stats.unmatched_responses += 1;
            Pending {
                announce: s.announce_seen,
                head: false,
            }
        })
    }

    /// A response whose head could not be read: it still answered a request.
    pub(super) fn abandon_head(&mut self, s: &mut Session, why: Reject) {
        if self.answered(s).announce {
            self.record(Err(why));
        }
    }

    pub(super) fn client_bytes(&mut self, s: &mut Session, chunk: &StreamChunk<'_>) {
        if chunk.gap {
            self.stats.gaps += 1;
            s.tx = Tx::Desync;
        }
        let mut rest = chunk.data;
        while !rest.is_empty() {
            match &mut s.tx {
                Tx::Desync => {
                    if rest.len() == chunk.data.len() && request_start(rest) {
                        s.tx = Tx::Head(HeadBuf::default());
                        continue;
                    }
                    self.stats.desync_bytes += rest.len() as u64;
                    return;
                }
                Tx::Head(h) => match h.push(rest, self.config.max_head) {
                    Push::More => return,
                    Push::TooLarge => {
                        self.bad_request(s);
                        return;
                    }
                    Push::Done(n) => {
                        rest = rest.get(n..).unwrap_or_default();
                        let parsed = match parse_request(&h.buf) {
                            Ok(Some(r)) => Some((r.announce, r.method == "HEAD", r.framing)),
                            Ok(None) | Err(_) => None,
                        };
                        let Some((announce, head, framing)) = parsed else {
                            self.bad_request(s);
                            self.stats.desync_bytes += rest.len() as u64;
                            return;
                        };
                        self.stats.requests += 1;
                        if announce {
                            self.stats.announce_requests += 1;
                            s.announce_seen = true;
                        } else {
                            self.stats.non_announce_requests += 1;
                        }
                        self.await_response(s, Pending { announce, head });
                        s.tx = match Framer::new(framing) {
                            Some(f) => Tx::Body(f),
                            None => Tx::Head(HeadBuf::default()),
                        };
                    }
                },
                Tx::Body(f) => match f.feed(rest, |_| {}) {
                    Ok((n, done)) => {
                        rest = rest.get(n..).unwrap_or_default();
                        if done {
                            s.tx = Tx::Head(HeadBuf::default());
                        }
                    }
                    Err(_) => {
                        s.tx = Tx::Desync;
                        self.stats.desync_bytes += rest.len() as u64;
                        return;
                    }
                },
            }
        }
    }

    /// An unreadable request: the server still answers it (with an error, usually), so it is
    /// awaited as a non-announce; its framing is unknown, so requests resume at a new chunk.
    fn bad_request(&mut self, s: &mut Session) {
        self.stats.bad_requests += 1;
        self.await_response(
            s,
            Pending {
                announce: false,
                head: false,
            },
        );
        s.tx = Tx::Desync;
    }

    fn await_response(&mut self, s: &mut Session, p: Pending) {
        if s.pending.len() >= self.config.max_pending {
            self.stats.pending_overflow += 1;
        } else {
            s.pending.push_back(p);
        }
    }

    pub(super) fn server_bytes(
        &mut self,
        s: &mut Session,
        chunk: &StreamChunk<'_>,
        out: &mut Vec<PredictedPeer>,
    ) {
        let learner = chunk.conn.client.ip();
        if chunk.gap {
            self.stats.gaps += 1;
            match std::mem::replace(&mut s.rx, Rx::Desync) {
                Rx::Body(b) => {
                    if b.keep.is_some() {
                        self.record(Err(Reject::Gap));
                    }
                }
                Rx::Head(h) if h.in_progress() => self.abandon_head(s, Reject::Gap),
                Rx::Head(_) | Rx::Desync => {}
            }
            // The lost bytes may have answered any of them.
            s.pending.clear();
        }
        let mut rest = chunk.data;
        while !rest.is_empty() {
            match &mut s.rx {
                Rx::Desync => {
                    if rest.len() == chunk.data.len() && rest.starts_with(b"HTTP/") {
                        s.rx = Rx::Head(HeadBuf::default());
                        continue;
                    }
                    self.stats.desync_bytes += rest.len() as u64;
                    return;
                }
                Rx::Head(h) => match h.push(rest, self.config.max_head) {
                    Push::More => return,
                    Push::TooLarge => {
                        s.rx = Rx::Desync;
                        self.abandon_head(s, Reject::HeadTooLarge);
                        return;
                    }
                    Push::Done(n) => {
                        rest = rest.get(n..).unwrap_or_default();
                        let head = parse_response_head(&h.buf)
                            .and_then(|r| r.ok_or(Reject::NotHttp))
                            .map(|r| (r.status, r.codings, r.body_framing(false)));
                        let (status, codings, framing) = match head {
                            Ok(h) => h,
                            Err(why) => {
                                s.rx = Rx::Desync;
                                self.abandon_head(s, why);
                                self.stats.desync_bytes += rest.len() as u64;
                                return;
                            }
                        };
                        if status < 200 {
                            // Interim response: the final one follows. 101 switches protocol.
                            s.rx = if status == 101 {
                                Rx::Desync
                            } else {
                                Rx::Head(HeadBuf::default())
                            };
                            continue;
                        }
                        self.stats.responses += 1;
                        let p = self.answered(s);
                        let framing = if p.head { Framing::Empty } else { framing };
                        let mut keep = p.announce;
                        if !p.announce {
                            self.stats.non_announce_responses += 1;
                        } else if !(200..300).contains(&status) {
                            self.record(Err(Reject::HttpStatus));
                            keep = false;
                        }
                        let body = Body {
                            framer: Framer::Length(0),
                            keep: keep.then(Vec::new),
                            over_cap: false,
                            codings,
                        };
                        match Framer::new(framing) {
                            Some(framer) => s.rx = Rx::Body(Box::new(Body { framer, ..body })),
                            None => {
                                s.rx = Rx::Head(HeadBuf::default());
                                self.finish(body, learner, chunk.ts, out);
                            }
                        }
                    }
                },
                Rx::Body(b) => {
                    let max_body = self.config.max_body;
                    let Body {
                        framer,
                        keep,
                        over_cap,
                        ..
                    } = &mut **b;
                    let mut dropped = 0u64;
                    let fed = framer.feed(rest, |part| match keep {
                        Some(buf) if !*over_cap => {
                            if buf.len().saturating_add(part.len()) > max_body {
                                *over_cap = true;
                                dropped += part.len() as u64;
                            } else {
                                buf.extend_from_slice(part);
                            }
                        }
                        Some(_) => dropped += part.len() as u64,
                        None => {}
                    });
                    self.stats.over_cap_bytes += dropped;
                    match fed {
                        Ok((n, done)) => {
                            rest = rest.get(n..).unwrap_or_default();
                            if done {
                                let old =
                                    std::mem::replace(&mut s.rx, Rx::Head(HeadBuf::default()));
                                if let Rx::Body(b) = old {
                                    self.finish(*b, learner, chunk.ts, out);
                                }
                            }
                        }
                        Err(why) => {
                            if keep.is_some() {
                                self.record(Err(why));
                            }
                            s.rx = Rx::Desync;
                            self.stats.desync_bytes += rest.len() as u64;
                            return;
                        }
                    }
                }
            }
        }
    }

}

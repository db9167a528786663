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

/// Where the client's side of an exchange stands.
#[derive(Debug)]
pub(super) enum Tx {
    Head(HeadBuf),
    /// A request body, skipped.
    Body(Framer),
    /// Waiting for a chunk that starts with a request line.
    Desync,
}

/// Where the tracker's side of an exchange stands.
#[derive(Debug)]
pub(super) enum Rx {
    Head(HeadBuf),
    Body(Box<Body>),
    /// Waiting for a chunk that starts with `HTTP/`.
    Desync,
}

/// A connection classed as HTTP tracker traffic.
#[derive(Debug)]
pub(super) enum Session {
    /// The client did not open with a request line: the connection is ignored.
    NotHttp,
    Http(Exchange),
}

/// The requests and responses of an HTTP connection.
#[derive(Debug)]
pub(super) struct Exchange {
    tx: Tx,
    pub(super) rx: Rx,
    pub(super) pending: VecDeque<Pending>,
    /// The connection carried an announce: a response with nothing outstanding is read as one.
    announce_seen: bool,
    /// The tracker sent bytes: the session was answered (fair shares, `bt::bounded`).
    pub(super) answered: bool,
}

impl Session {
    /// A connection whose client's first bytes are `first`.
    pub(super) fn new(first: &[u8]) -> Self {
        if request_start(first) {
            Session::Http(Exchange {
                tx: Tx::Head(HeadBuf::default()),
                rx: Rx::Head(HeadBuf::default()),
                pending: VecDeque::new(),
                announce_seen: false,
                answered: false,
            })
        } else {
            Session::NotHttp
        }
    }
}

/// A response head as far as its body needs it.
#[derive(Clone, Copy, Debug)]
struct Head {
    status: u16,
    codings: Codings,
    framing: Framing,
}

impl Body {
    /// Frames body bytes of `data`, keeping an announce response's content up to `max_body`:
    /// what the framer says, and the content bytes dropped past the cap.
    fn feed(&mut self, data: &[u8], max_body: usize) -> (Result<(usize, bool), Reject>, u64) {
        let Body {
            framer,
            keep,
            over_cap,
            ..
        } = self;
        let mut dropped = 0u64;
        let fed = framer.feed(data, |part| match keep {
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
        (fed, dropped)
    }
}

impl HttpTracker {
    pub(super) fn record(&mut self, result: Result<(), Reject>) {
        self.stats.counts.seen += 1;
        self.stats.counts.record(result.map_err(Reject::as_str));
    }

    /// The request a response answers: the oldest outstanding one or, with none, an announce
    /// if the connection carried one.
    fn answered(&mut self, s: &mut Exchange) -> Pending {
        s.pending.pop_front().unwrap_or_else(|| {
            self.stats.unmatched_responses += 1;
            Pending {
                announce: s.announce_seen,
                head: false,
            }
        })
    }

    /// A response whose head could not be read: it still answered a request.
    pub(super) fn abandon_head(&mut self, s: &mut Exchange, why: Reject) {
        if self.answered(s).announce {
            self.record(Err(why));
        }
    }

    /// Bytes from the client: requests, framed so that responses pair with them.
    pub(super) fn client_bytes(&mut self, s: &mut Exchange, chunk: &StreamChunk<'_>) {
        if chunk.gap {
            self.stats.gaps += 1;
            s.tx = Tx::Desync;
        }
        let mut rest = chunk.data;
        while !rest.is_empty() {
            let next = match &mut s.tx {
                Tx::Desync if rest.len() == chunk.data.len() && request_start(rest) => {
                    s.tx = Tx::Head(HeadBuf::default());
                    Some(rest)
                }
                Tx::Desync => {
                    self.stats.desync_bytes += rest.len() as u64;
                    None
                }
                Tx::Head(_) => self.request_head(s, rest),
                Tx::Body(f) => {
                    if let Ok((n, done)) = f.feed(rest, |_| {}) {
                        if done {
                            s.tx = Tx::Head(HeadBuf::default());
                        }
                        Some(rest.get(n..).unwrap_or_default())
                    } else {
                        s.tx = Tx::Desync;
                        self.stats.desync_bytes += rest.len() as u64;
                        None
                    }
                }
            };
            let Some(next) = next else { return };
            rest = next;
        }
    }

    /// Reads request head bytes from `data`; a whole head is counted and awaits its response.
    /// Returns the bytes after the head, or `None` when the chunk is used up or unreadable.
    fn request_head<'a>(&mut self, s: &mut Exchange, data: &'a [u8]) -> Option<&'a [u8]> {
        let Tx::Head(h) = &mut s.tx else {
            return Some(data);
        };
        let n = match h.push(data, self.config.max_head) {
            Push::More => return None,
            Push::TooLarge => {
                self.bad_request(s);
                return None;
            }
            Push::Done(n) => n,
        };
        let rest = data.get(n..).unwrap_or_default();
        let parsed = match parse_request(&h.buf) {
            Ok(Some(r)) => Some((r.announce, r.method == "HEAD", r.framing)),
            Ok(None) | Err(_) => None,
        };
        let Some((announce, head, framing)) = parsed else {
            self.bad_request(s);
            self.stats.desync_bytes += rest.len() as u64;
            return None;
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
        Some(rest)
    }

    /// An unreadable request: the server still answers it (with an error, usually), so it is
    /// awaited as a non-announce; its framing is unknown, so requests resume at a new chunk.
    fn bad_request(&mut self, s: &mut Exchange) {
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

    fn await_response(&mut self, s: &mut Exchange, p: Pending) {
        if s.pending.len() >= self.config.max_pending {
            self.stats.pending_overflow += 1;
        } else {
            s.pending.push_back(p);
        }
    }

    /// Bytes from the tracker: responses, each paired with the request it answers; the bodies
    /// of announce responses are kept and read once complete.
    pub(super) fn server_bytes(
        &mut self,
        s: &mut Exchange,
        chunk: &StreamChunk<'_>,
        out: &mut Vec<PredictedPeer>,
    ) {
        if chunk.gap {
            self.server_gap(s);
        }
        s.answered |= !chunk.data.is_empty();
        let mut rest = chunk.data;
        while !rest.is_empty() {
            let next = match &s.rx {
                Rx::Desync if rest.len() == chunk.data.len() && rest.starts_with(b"HTTP/") => {
                    s.rx = Rx::Head(HeadBuf::default());
                    Some(rest)
                }
                Rx::Desync => {
                    self.stats.desync_bytes += rest.len() as u64;
                    None
                }
                Rx::Head(_) => self.response_head(s, rest, chunk, out),
                Rx::Body(_) => self.response_body(s, rest, chunk, out),
            };
            let Some(next) = next else { return };
            rest = next;
        }
    }

    /// Bytes from the tracker were lost: the response in progress is dropped and, since the
    /// lost bytes may have answered any of them, the outstanding requests are forgotten.
    fn server_gap(&mut self, s: &mut Exchange) {
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
        s.pending.clear();
    }

    /// Reads response head bytes from `data`. Returns the bytes after the head, or `None` when
    /// the chunk is used up or the head is unreadable.
    fn response_head<'a>(
        &mut self,
        s: &mut Exchange,
        data: &'a [u8],
        chunk: &StreamChunk<'_>,
        out: &mut Vec<PredictedPeer>,
    ) -> Option<&'a [u8]> {
        let Rx::Head(h) = &mut s.rx else {
            return Some(data);
        };
        let n = match h.push(data, self.config.max_head) {
            Push::More => return None,
            Push::TooLarge => {
                s.rx = Rx::Desync;
                self.abandon_head(s, Reject::HeadTooLarge);
                return None;
            }
            Push::Done(n) => n,
        };
        let rest = data.get(n..).unwrap_or_default();
        let head = parse_response_head(&h.buf)
            .and_then(|r| r.ok_or(Reject::NotHttp))
            .map(|r| Head {
                status: r.status,
                codings: r.codings,
                framing: r.body_framing(false),
            });
        match head {
            Err(why) => {
                s.rx = Rx::Desync;
                self.abandon_head(s, why);
                self.stats.desync_bytes += rest.len() as u64;
                None
            }
            // Interim response: the final one follows. 101 switches protocol.
            Ok(Head { status: 101, .. }) => {
                s.rx = Rx::Desync;
                Some(rest)
            }
            Ok(Head { status: ..200, .. }) => {
                s.rx = Rx::Head(HeadBuf::default());
                Some(rest)
            }
            Ok(head) => {
                self.start_body(s, head, chunk, out);
                Some(rest)
            }
        }
    }

    /// A final response head was read: its body is kept if it answers an announce with a 2xx
    /// status, skipped otherwise; a response without a body is complete at once.
    fn start_body(
        &mut self,
        s: &mut Exchange,
        head: Head,
        chunk: &StreamChunk<'_>,
        out: &mut Vec<PredictedPeer>,
    ) {
        self.stats.responses += 1;
        let p = self.answered(s);
        let framing = if p.head { Framing::Empty } else { head.framing };
        let mut keep = p.announce;
        if !p.announce {
            self.stats.non_announce_responses += 1;
        } else if !(200..300).contains(&head.status) {
            self.record(Err(Reject::HttpStatus));
            keep = false;
        }
        let body = Body {
            framer: Framer::Length(0),
            keep: keep.then(Vec::new),
            over_cap: false,
            codings: head.codings,
        };
        if let Some(framer) = Framer::new(framing) {
            s.rx = Rx::Body(Box::new(Body { framer, ..body }));
        } else {
            s.rx = Rx::Head(HeadBuf::default());
            self.finish(&body, chunk.conn.client.ip(), chunk.ts, out);
        }
    }

    /// Reads body bytes from `data`; a complete body is read for peers. Returns the bytes after
    /// the body, or `None` when the chunk is used up or the framing broke.
    fn response_body<'a>(
        &mut self,
        s: &mut Exchange,
        data: &'a [u8],
        chunk: &StreamChunk<'_>,
        out: &mut Vec<PredictedPeer>,
    ) -> Option<&'a [u8]> {
        let Rx::Body(b) = &mut s.rx else {
            return Some(data);
        };
        let (fed, dropped) = b.feed(data, self.config.max_body);
        self.stats.over_cap_bytes += dropped;
        match fed {
            Ok((n, done)) => {
                if done {
                    let old = std::mem::replace(&mut s.rx, Rx::Head(HeadBuf::default()));
                    if let Rx::Body(b) = old {
                        self.finish(&b, chunk.conn.client.ip(), chunk.ts, out);
                    }
                }
                Some(data.get(n..).unwrap_or_default())
            }
            Err(why) => {
                if b.keep.is_some() {
                    self.record(Err(why));
                }
                s.rx = Rx::Desync;
                self.stats.desync_bytes += data.len() as u64;
                None
            }
        }
    }
}

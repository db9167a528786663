//! Bencode (BEP 3) validated in one pass over borrowed bytes, with no allocation for the
//! messages the channels read: every string, list and dict is a slice of the input, and the
//! caller picks the dict entries it wants as they are validated (a sink called once per
//! entry), instead of looking them up in a tree built first. Lists and dicts are read again
//! lazily where a channel needs their elements (KRPC `values`, a tracker's `peers` dicts).
//!
//! Why not a crate: `torrust-tracker-contrib-bencode`, which every channel used before, builds a
//! `BTreeMap` per dict and a `Vec` per list (on a BitTorrent-heavy capture, decoding KRPC that
//! way was a tenth of `sensor analyze`'s time); `bendy`'s streaming `Decoder` fails every dict
//! whose keys are unsorted (its state tracker compares each key with the last one), which
//! deployed KRPC and extension dicts are, and allocates a 2,048-entry state stack per decoder;
//! `bt_bencode` has no depth limit. None offers a borrowed, non-allocating, unsorted-key-tolerant
//! pass.
//!
//! What it accepts and rejects is exactly what that tree decoder (with the options the channels
//! gave it) does, fault class by fault class, checked against it by the differential tests
//! below and by each channel's: nesting capped at `max_depth` (checked before each value, keys
//! excepted), integers and string lengths read as Rust's `i64` parser reads them with leading
//! zeros and `-0` refused, a delimiter searched in the whole rest of the data, keys in any
//! order, a duplicate key found once its value is read, trailing bytes refused. Duplicates are
//! found by comparing with the dict's earlier keys, kept inline up to [`INLINE_KEYS`]; only a
//! dict with more keys than that (never a KRPC one) spills them into a `BTreeSet`, so that a
//! hostile unsorted dict costs O(n log n), not O(n²).

use std::collections::BTreeSet;

use super::BencodeFault;

/// Keys of one dict compared linearly before spilling to a set.
const INLINE_KEYS: usize = 16;

/// One validated value. Lists and dicts are their raw bytes (`l`…`e`, `d`…`e`), read again
/// lazily when needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(List<'a>),
    Dict(Dict<'a>),
}

impl<'a> Value<'a> {
    pub(crate) fn bytes(self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub(crate) fn int(self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(n),
            _ => None,
        }
    }

    pub(crate) fn list(self) -> Option<List<'a>> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    pub(crate) fn dict(self) -> Option<Dict<'a>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    pub(crate) fn is_dict(self) -> bool {
        matches!(self, Value::Dict(_))
    }
}

/// A list [`scan`] validated, as its raw bytes `l`…`e`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct List<'a> {
    raw: &'a [u8],
}

impl<'a> List<'a> {
    /// The elements, in order, decoded as they are reached.
    pub(crate) fn iter(self) -> Items<'a> {
        Items {
            data: self.raw,
            pos: 1,
        }
    }
}

/// A dict [`scan`] validated, as its raw bytes `d`…`e`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dict<'a> {
    raw: &'a [u8],
}

impl<'a> Dict<'a> {
    /// The entries, in the order they came, decoded as they are reached.
    pub(crate) fn entries(self) -> DictEntries<'a> {
        DictEntries {
            data: self.raw,
            pos: 1,
        }
    }

    /// The value of `key` (keys are unique: [`scan`] rejects duplicates). A linear walk: for
    /// the small dicts of a list element, cheaper than any index.
    pub(crate) fn get(self, key: &[u8]) -> Option<Value<'a>> {
        self.entries().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// Entries of a validated dict. Stops early rather than panic if the bytes were not the
/// validated dict they should be.
#[derive(Clone, Debug)]
pub(crate) struct DictEntries<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for DictEntries<'a> {
    type Item = (&'a [u8], Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.get(self.pos) == Some(&b'e') {
            return None;
        }
        let (key, next) = string(self.data, self.pos).ok()?;
        let (value, next) = reread(self.data, next)?;
        self.pos = next;
        Some((key, value))
    }
}

/// Elements of a validated list. Stops early rather than panic if the bytes were not the
/// validated list they should be.
#[derive(Clone, Debug)]
pub(crate) struct Items<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Items<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        let (v, next) = reread(self.data, self.pos)?;
        self.pos = next;
        Some(v)
    }
}

/// Re-reads the value at `pos` of already validated bytes: no checks beyond what keeps it from
/// panicking; `None` at the closing `e` (or on bytes that were not validated).
fn reread(data: &[u8], pos: usize) -> Option<(Value<'_>, usize)> {
    match *data.get(pos)? {
        b'i' => {
            let (n, next) = int(data, pos + 1, b'e').ok()?;
            Some((Value::Int(n), next))
        }
        b'0'..=b'9' => {
            let (s, next) = string(data, pos).ok()?;
            Some((Value::Bytes(s), next))
        }
        open @ (b'l' | b'd') => {
            let end = skip_container(data, pos + 1)?;
            let raw = data.get(pos..end)?;
            let v = if open == b'l' {
                Value::List(List { raw })
            } else {
                Value::Dict(Dict { raw })
            };
            Some((v, end))
        }
        _ => None,
    }
}

/// The end (one past the `e`) of the validated container whose contents start at `pos`.
fn skip_container(data: &[u8], mut pos: usize) -> Option<usize> {
    let mut open = 1usize;
    while open > 0 {
        match *data.get(pos)? {
            b'e' => {
                open -= 1;
                pos += 1;
            }
            b'l' | b'd' => {
                open += 1;
                pos += 1;
            }
            b'i' => pos = int(data, pos + 1, b'e').ok()?.1,
            _ => pos = string(data, pos).ok()?.1,
        }
    }
    Some(pos)
}

/// Validates `data` as one bencoded value and returns it; `sink(depth, key, value)` is called
/// for every dict entry once its value is validated and its key found unique, children before
/// their parent's entry (`depth` is that of the dict holding the entry, the top level 0).
/// Whatever the sink was given is meaningless if this returns an error.
pub(crate) fn scan<'a>(
    data: &'a [u8],
    max_depth: usize,
    sink: &mut impl FnMut(usize, &'a [u8], Value<'a>),
) -> Result<Value<'a>, BencodeFault> {
    let mut s = Scanner {
        data,
        max_depth,
        sink,
    };
    let (v, end) = s.value(0, 0)?;
    if end == data.len() {
        Ok(v)
    } else {
        Err(BencodeFault::TrailingData)
    }
}

struct Scanner<'a, 's, F> {
    data: &'a [u8],
    max_depth: usize,
    sink: &'s mut F,
}

impl<'a, F: FnMut(usize, &'a [u8], Value<'a>)> Scanner<'a, '_, F> {
    fn peek(&self, pos: usize) -> Result<u8, BencodeFault> {
        self.data.get(pos).copied().ok_or(BencodeFault::Truncated)
    }

    fn value(&mut self, pos: usize, depth: usize) -> Result<(Value<'a>, usize), BencodeFault> {
        if depth >= self.max_depth {
            return Err(BencodeFault::TooDeep);
        }
        let data = self.data;
        match self.peek(pos)? {
            b'i' => {
                let (n, next) = int(data, pos + 1, b'e')?;
                Ok((Value::Int(n), next))
            }
            b'l' => {
                let end = self.list(pos + 1, depth)?;
                Ok((
                    Value::List(List {
                        raw: &data[pos..end],
                    }),
                    end,
                ))
            }
            b'd' => {
                let end = self.dict(pos + 1, depth)?;
                let raw = &data[pos..end];
                Ok((Value::Dict(Dict { raw }), end))
            }
            b'0'..=b'9' => {
                let (s, next) = string(data, pos)?;
                Ok((Value::Bytes(s), next))
            }
            _ => Err(BencodeFault::Syntax),
        }
    }

    fn list(&mut self, mut pos: usize, depth: usize) -> Result<usize, BencodeFault> {
        while self.peek(pos)? != b'e' {
            pos = self.value(pos, depth + 1)?.1;
        }
        Ok(pos + 1)
    }

    fn dict(&mut self, mut pos: usize, depth: usize) -> Result<usize, BencodeFault> {
        let mut keys = Keys::default();
        while self.peek(pos)? != b'e' {
            // A key is read as a string whatever its first byte (`i1e` is a bad length).
            let (key, next) = string(self.data, pos)?;
            let (value, next) = self.value(next, depth + 1)?;
            if !keys.insert(key) {
                return Err(BencodeFault::DuplicateKey);
            }
            (self.sink)(depth, key, value);
            pos = next;
        }
        Ok(pos + 1)
    }
}

/// The keys of one dict so far.
#[derive(Default)]
struct Keys<'a> {
    inline: [&'a [u8]; INLINE_KEYS],
    len: usize,
    spilled: Option<BTreeSet<&'a [u8]>>,
}

impl<'a> Keys<'a> {
    /// False if `key` was already there.
    fn insert(&mut self, key: &'a [u8]) -> bool {
        if let Some(set) = &mut self.spilled {
            return set.insert(key);
        }
        let seen = &self.inline[..self.len];
        if seen.contains(&key) {
            return false;
        }
        if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = key;
            self.len += 1;
        } else {
            let mut set: BTreeSet<&[u8]> = self.inline.iter().copied().collect();
            set.insert(key);
            self.spilled = Some(set);
        }
        true
    }
}

/// An integer from `pos` to the first `delim` after it (`e` for integers, `:` for string
/// lengths). The common case, 1 to 18 digits with no sign and no leading zero, is read as the
/// digits are scanned; anything else goes the exact way of [`int_exact`], whose result the
/// fast path equals whenever it applies (18 digits cannot overflow an `i64`).
fn int(data: &[u8], pos: usize, delim: u8) -> Result<(i64, usize), BencodeFault> {
    let rest = data.get(pos..).unwrap_or_default();
    let mut n = 0i64;
    for (i, &b) in rest.iter().enumerate().take(19) {
        if b.is_ascii_digit() && i < 18 {
            n = n * 10 + i64::from(b - b'0');
        } else {
            if b == delim && (i == 1 || (i > 1 && rest[0] != b'0')) {
                return Ok((n, pos + i + 1));
            }
            break;
        }
    }
    int_exact(data, pos, delim)
}

/// [`int`] for every input: the delimiter searched in the whole rest of the data, the digits
/// read by Rust's `i64` parser (which takes a leading `+`). No delimiter at all is a
/// truncation if what is left could still become the number, a syntax error otherwise.
fn int_exact(data: &[u8], pos: usize, delim: u8) -> Result<(i64, usize), BencodeFault> {
    let rest = data.get(pos..).unwrap_or_default();
    let Some(len) = rest.iter().position(|&b| b == delim) else {
        return Err(if rest.iter().all(|b| b.is_ascii_digit() || *b == b'-') {
            BencodeFault::Truncated
        } else {
            BencodeFault::Syntax
        });
    };
    let digits = &rest[..len];
    // BEP 3: no leading zero (other than `0` itself) and no `-0`.
    if digits.len() > 1 && (digits[0] == b'0' || digits.starts_with(b"-0")) {
        return Err(BencodeFault::Syntax);
    }
    let n = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(BencodeFault::Syntax)?;
    Ok((n, pos + len + 1))
}

/// A string `<length>:<bytes>` starting at `pos`.
fn string(data: &[u8], pos: usize) -> Result<(&[u8], usize), BencodeFault> {
    let (len, start) = int(data, pos, b':')?;
    let len = usize::try_from(len).map_err(|_| BencodeFault::Syntax)?;
    let end = start
        .checked_add(len)
        .filter(|&end| end <= data.len())
        .ok_or(BencodeFault::LengthBeyondEnd)?;
    Ok((&data[start..end], end))
}

#[cfg(test)]
mod tests;

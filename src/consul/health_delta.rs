//! Decoding a `service` watch delivery from what changed since the same watch's previous one.
//!
//! A watch POSTs the whole snapshot of its service every time anything in it changes: with
//! 10000 instances that is 14 MB, of which one check's few bytes differ from the last delivery.
//! Decoding it all costs about 23 ms here; serde_json cannot even skip 14 MB in under 15 ms.
//! So for a large body hax keeps the previous body, each entry's byte range in it and what it
//! took from each entry ([`EntryFacts`]). A new body is compared with the previous one from
//! both ends (a memory comparison); the entries that lie wholly inside the common start or the
//! common end are the same bytes, so the same facts; only the bytes between are decoded, as an
//! array of entries of their own.
//!
//! Why that is exact: JSON is read left to right, so the entries before the first differing
//! byte are read the same in both bodies. The region between the last unchanged leading entry
//! and the first unchanged trailing one is accepted only if it is, apart from the commas that
//! join it to them, a valid array of entries on its own; then the new body is that valid
//! region between two runs of bytes that were valid in that same place in the old body, and it
//! reads as the unchanged entries, the region's entries, the unchanged entries. Anything else
//! (a different shape, a malformed region, no previous body) is decoded whole.
use super::health::{entry_facts, from_facts, parse_payload, EntryFacts, Parsed, PayloadError};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Mutex;

/// Bodies from this size on are kept for the next delivery's delta decode (smaller ones
/// decode whole in a few milliseconds at most).
pub const DELTA_FROM: usize = 256 << 10;

/// Watch paths whose last large body is kept, at most (each costs about its body's size
/// again: a 10000-entry body 14 MB plus its entries' facts).
pub const PATHS_MAX: usize = 16;

/// The last large `service` body of each watch path, for the next delivery's delta decode.
#[derive(Default)]
pub struct LastBodies(Mutex<HashMap<String, Decoded>>);

impl LastBodies {
    /// Parses a delivery on `path`: a large `service` body from the path's previous one when
    /// it can, anything else as [`parse_payload`] does.
    pub fn parse(&self, path: &str, body: Vec<u8>) -> Result<(Parsed, How), PayloadError> {
        let prev = self.lock().remove(path);
        if body.len() < DELTA_FROM {
            return parse_payload(&body).map(|p| (p, How::Whole));
        }
        match decode(prev.as_ref(), body) {
            Ok((d, how)) => {
                crate::metrics::watch_decode(match how {
                    How::Whole => "whole",
                    How::Delta { .. } => "delta",
                });
                let parsed = from_facts(&d.facts);
                let mut kept = self.lock();
                if kept.len() >= PATHS_MAX {
                    kept.clear();
                }
                kept.insert(path.to_string(), d);
                Ok((parsed, how))
            }
            Err(body) => parse_payload(&body).map(|p| (p, How::Whole)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Decoded>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A decoded `service` body, kept for the next delivery of the same watch.
pub struct Decoded {
    body: Vec<u8>,
    /// Each entry's byte range in `body`, in order.
    ranges: Vec<(usize, usize)>,
    /// Each entry's facts, in order.
    pub facts: Vec<EntryFacts>,
    /// Where the array's content starts (after `[`) and ends (at `]`).
    open: usize,
    close: usize,
}

/// How a delivery was decoded (for the logs and the tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// Decoded whole.
    Whole,
    /// From the previous delivery: `decoded` entries read, the rest kept.
    Delta { decoded: usize, kept: usize },
}

/// Decodes `body` whole, keeping each entry's range. None when it is not an array of
/// `{Node, Service, Checks}` entries.
pub fn decode_whole(body: Vec<u8>) -> Result<Decoded, Vec<u8>> {
    let Some((ranges, facts)) = entries_of(&body) else {
        return Err(body);
    };
    let open = body.iter().position(|&b| b == b'[').map(|o| o + 1);
    let close = body.iter().rposition(|&b| b == b']');
    match (open, close) {
        (Some(open), Some(close)) => Ok(Decoded {
            body,
            ranges,
            facts,
            open,
            close,
        }),
        _ => Err(body),
    }
}

/// Each entry's range and facts, when `body` is an array of entries.
#[allow(clippy::type_complexity)]
fn entries_of(body: &[u8]) -> Option<(Vec<(usize, usize)>, Vec<EntryFacts>)> {
    let raws: Vec<&RawValue> = serde_json::from_slice(body).ok()?;
    let base = body.as_ptr() as usize;
    let mut ranges = Vec::with_capacity(raws.len());
    let mut facts = Vec::with_capacity(raws.len());
    for r in &raws {
        let text = r.get();
        let start = text.as_ptr() as usize - base;
        ranges.push((start, start + text.len()));
        facts.push(entry_facts(text).ok()?);
    }
    Some((ranges, facts))
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    // Compared in blocks (a memory comparison each), then byte by byte in the first block
    // that differs.
    const BLOCK: usize = 4096;
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + BLOCK <= n && a[i..i + BLOCK] == b[i..i + BLOCK] {
        i += BLOCK;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let n = a.len().min(b.len());
    let (la, lb) = (a.len(), b.len());
    let mut i = 0;
    while i + BLOCK <= n && a[la - i - BLOCK..la - i] == b[lb - i - BLOCK..lb - i] {
        i += BLOCK;
    }
    while i < n && a[la - i - 1] == b[lb - i - 1] {
        i += 1;
    }
    i
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

/// Decodes `body` from `prev` (the same watch's previous delivery) when it can, else whole;
/// gives the body back when it is not an array of entries.
pub fn decode(prev: Option<&Decoded>, body: Vec<u8>) -> Result<(Decoded, How), Vec<u8>> {
    if let Some(d) = prev.and_then(|p| decode_from(p, &body)) {
        let kept = d.1;
        let decoded = d.0.facts.len() - kept;
        let mut next = d.0;
        next.body = body;
        return Ok((next, How::Delta { decoded, kept }));
    }
    decode_whole(body).map(|d| (d, How::Whole))
}

/// The new body's entries from `prev`, and how many were kept (the returned `Decoded` has an
/// empty body: the caller puts the new one in). None when the delta does not apply.
fn decode_from(prev: &Decoded, body: &[u8]) -> Option<(Decoded, usize)> {
    let old = &prev.body[..];
    let n = prev.ranges.len();
    let p = common_prefix(old, body);
    let s = common_suffix(&old[p..], &body[p..]);
    let delta = body.len() as isize - old.len() as isize;
    let moved = |x: usize| (x as isize + delta) as usize;
    // Unchanged: the leading entries ending within the common start, the trailing ones
    // starting within the common end; both ends of the array too.
    let close_kept = prev.close < p || prev.close >= old.len() - s;
    if prev.open > p || !close_kept {
        return None; // the array's own brackets changed
    }
    let close = if prev.close < p {
        prev.close
    } else {
        moved(prev.close)
    };
    let i = prev.ranges.partition_point(|r| r.1 <= p);
    let j = prev.ranges.partition_point(|r| r.0 < old.len() - s).max(i);
    let from = if i == 0 {
        prev.open
    } else {
        prev.ranges[i - 1].1
    };
    let to = if j == n {
        close
    } else {
        moved(prev.ranges[j].0)
    };
    if to < from {
        return None;
    }
    // The region between: [","] entries [","], the commas joining it to its neighbours.
    let mut c = trim(&body[from..to]);
    let mut middle: Vec<(usize, usize)> = Vec::new();
    let mut middle_facts: Vec<EntryFacts> = Vec::new();
    if c.is_empty() {
        if i > 0 && j < n {
            return None; // two entries with no comma between them
        }
    } else {
        if i > 0 {
            c = trim(c.strip_prefix(b",")?);
        }
        if j < n {
            if c.is_empty() {
                if i == 0 {
                    return None; // "[," before the first kept entry
                }
            } else {
                c = trim(c.strip_suffix(b",")?);
                if c.is_empty() {
                    return None; // two commas in a row
                }
            }
        }
        if !c.is_empty() {
            let offset = c.as_ptr() as usize - body.as_ptr() as usize;
            let mut piece = Vec::with_capacity(c.len() + 2);
            piece.push(b'[');
            piece.extend_from_slice(c);
            piece.push(b']');
            let raws: Vec<&RawValue> = serde_json::from_slice(&piece).ok()?;
            let base = piece.as_ptr() as usize;
            for r in raws {
                let text = r.get();
                let start = text.as_ptr() as usize - base - 1 + offset;
                middle.push((start, start + text.len()));
                middle_facts.push(entry_facts(text).ok()?);
            }
        }
    }
    let mut ranges = Vec::with_capacity(i + middle.len() + (n - j));
    ranges.extend_from_slice(&prev.ranges[..i]);
    ranges.extend(middle);
    ranges.extend(prev.ranges[j..].iter().map(|&(a, b)| (moved(a), moved(b))));
    let mut facts = Vec::with_capacity(ranges.len());
    facts.extend_from_slice(&prev.facts[..i]);
    facts.extend(middle_facts);
    facts.extend_from_slice(&prev.facts[j..]);
    let kept = i + (n - j);
    Some((
        Decoded {
            body: Vec::new(),
            ranges,
            facts,
            open: prev.open,
            close,
        },
        kept,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn entry(i: u64, status: &str, node: &str) -> Value {
        json!({
            "Node": {"Node": node, "Meta": {"m": "},{\"x"}},
            "Service": {"ID": format!("0x7200000000000001:{i:#x}"), "Service": "ios", "Tags": []},
            "Checks": [
                {"CheckID": "serfHealth", "Status": "passing", "ServiceID": ""},
                {"CheckID": format!("service:{i}"), "Status": status, "ServiceID": format!("0x7200000000000001:{i:#x}"), "Output": "]},{"}
            ]
        })
    }

    fn body(entries: &[Value], pretty: bool) -> Vec<u8> {
        if pretty {
            serde_json::to_vec_pretty(entries).unwrap()
        } else {
            serde_json::to_vec(entries).unwrap()
        }
    }

    #[test]
    fn one_changed_check_is_the_only_entry_decoded() {
        let mut v: Vec<Value> = (0..100).map(|i| entry(i, "passing", "n1")).collect();
        let (first, how) = decode(None, body(&v, false)).ok().unwrap();
        assert_eq!(how, How::Whole);
        v[42] = entry(42, "critical", "n1");
        let (second, how) = decode(Some(&first), body(&v, false)).ok().unwrap();
        assert_eq!(
            how,
            How::Delta {
                decoded: 1,
                kept: 99
            }
        );
        assert!(!second.facts[42].all_passing);
        assert_eq!(
            second.facts,
            decode_whole(body(&v, false)).ok().unwrap().facts
        );
        // The same body again: nothing decoded.
        let (third, how) = decode(Some(&second), body(&v, false)).ok().unwrap();
        assert_eq!(
            how,
            How::Delta {
                decoded: 0,
                kept: 100
            }
        );
        assert_eq!(third.facts, second.facts);
    }

    #[test]
    fn entries_added_and_removed_anywhere_are_decoded_as_a_whole_decode_would() {
        let v: Vec<Value> = (0..20).map(|i| entry(i, "passing", "n1")).collect();
        let (first, _) = decode(None, body(&v, false)).ok().unwrap();
        let cases: Vec<Vec<Value>> = vec![
            v[1..].to_vec(),                                         // first removed
            v[..19].to_vec(),                                        // last removed
            [&v[..5], &v[6..]].concat(),                             // one in the middle
            [v.clone(), vec![entry(99, "critical", "n2")]].concat(), // appended
            [vec![entry(99, "critical", "n2")], v.clone()].concat(), // prepended
            vec![],                                                  // all gone
            vec![v[3].clone()],                                      // one left
        ];
        for (k, w) in cases.iter().enumerate() {
            let got = decode(Some(&first), body(w, false)).ok().unwrap().0.facts;
            let want = decode_whole(body(w, false)).ok().unwrap().facts;
            assert_eq!(got, want, "case {k}");
        }
    }

    #[test]
    fn a_malformed_change_is_not_taken_from_the_previous_body() {
        let v: Vec<Value> = (0..10).map(|i| entry(i, "passing", "n1")).collect();
        let good = body(&v, false);
        let (first, _) = decode(None, good.clone()).ok().unwrap();
        // Two entries glued together, a doubled comma, an unclosed string.
        let s = String::from_utf8(good).unwrap();
        let cut = s.find("},{\"Checks\"").unwrap();
        let glued = format!("{}}}{}", &s[..cut], &s[cut + 2..]);
        let doubled = format!("{},,{}", &s[..cut + 1], &s[cut + 2..]);
        let unclosed = s.replacen("\"passing\"", "\"passing", 1);
        for bad in [glued, doubled, unclosed] {
            assert!(serde_json::from_str::<Value>(&bad).is_err());
            assert!(decode(Some(&first), bad.into_bytes()).is_err());
        }
    }

    proptest! {
        /// Whatever the previous and the new body, the delta decode gives what a whole
        /// decode gives, and fails exactly when it fails.
        #[test]
        fn a_delta_decode_equals_a_whole_decode(
            old in prop::collection::vec((0u64..30, prop::bool::ANY, 0u8..3), 0..25),
            new in prop::collection::vec((0u64..30, prop::bool::ANY, 0u8..3), 0..25),
            pretty in prop::bool::ANY,
            damage in prop::option::of((0usize..4000, 0u8..6)),
        ) {
            let mk = |v: &[(u64, bool, u8)]| -> Vec<Value> {
                v.iter()
                    .map(|&(i, ok, n)| entry(i, if ok { "passing" } else { "critical" }, &format!("n{n}")))
                    .collect()
            };
            let (first, _) = decode(None, body(&mk(&old), pretty)).ok().unwrap();
            let mut b = body(&mk(&new), pretty);
            if let Some((at, kind)) = damage {
                if !b.is_empty() {
                    let at = at % b.len();
                    match kind {
                        0 => { b.remove(at); }
                        1 => b.insert(at, b','),
                        2 => b.insert(at, b'"'),
                        3 => b[at] = b'}',
                        4 => b.insert(at, b'{'),
                        _ => b.truncate(at),
                    }
                }
            }
            let whole = decode_whole(b.clone()).ok().map(|d| d.facts);
            let delta = decode(Some(&first), b).ok().map(|d| d.0.facts);
            prop_assert_eq!(delta, whole);
        }
    }
}

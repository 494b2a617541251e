//! Motr object identifiers (`struct m0_fid`): parsing, printing and the type byte.
//!
//! A fid is two 64-bit words; the object type is the top byte of the container word
//! (`0x72` process, `0x73` service, `0x6e` node, ...). Fids print as `0x7200000000000001:0x6`
//! and parse from that form, from Motr's `<7200000000000001:6>` form and, where a process
//! fid is expected, from a bare decimal key (`6` meaning `0x7200000000000001:0x6`).
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A Motr fid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Fid {
    pub container: u64,
    pub key: u64,
}

/// Object type letters of Motr's configuration objects (top byte of the container).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjType {
    Root = b't',
    Profile = b'p',
    Pool = b'o',
    Pver = b'v',
    Node = b'n',
    Process = b'r',
    Service = b's',
    Sdev = b'd',
    Site = b'S',
    Rack = b'a',
    Enclosure = b'e',
    Controller = b'c',
    Drive = b'k',
}

/// Why a fid string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fid {input:?}: {reason}")]
pub struct FidParseError {
    pub input: String,
    pub reason: &'static str,
}

impl Fid {
    pub const ZERO: Fid = Fid {
        container: 0,
        key: 0,
    };

    pub const fn new(container: u64, key: u64) -> Fid {
        Fid { container, key }
    }

    /// A fid of object type `t` (a type letter such as `b'r'`), container number `c`, key `k`.
    pub const fn typed(t: u8, c: u64, key: u64) -> Fid {
        Fid {
            container: ((t as u64) << 56) | (c & 0x00ff_ffff_ffff_ffff),
            key,
        }
    }

    /// The type byte (top byte of the container word).
    pub fn type_byte(&self) -> u8 {
        (self.container >> 56) as u8
    }

    pub fn obj_type(&self) -> Option<ObjType> {
        use ObjType::*;
        [
            Root, Profile, Pool, Pver, Node, Process, Service, Sdev, Site, Rack, Enclosure,
            Controller, Drive,
        ]
        .into_iter()
        .find(|t| *t as u8 == self.type_byte())
    }

    pub fn is_process(&self) -> bool {
        self.type_byte() == ObjType::Process as u8
    }
    pub fn is_service(&self) -> bool {
        self.type_byte() == ObjType::Service as u8
    }
    pub fn is_zero(&self) -> bool {
        *self == Fid::ZERO
    }

    /// Parses a process id as registered in Consul: a fid string, or a bare decimal key of
    /// a process in container 1.
    pub fn parse_process_id(s: &str) -> Result<Fid, FidParseError> {
        let t = s.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            let key = t.parse::<u64>().map_err(|_| err(s, "key out of range"))?;
            return Ok(Fid::typed(b'r', 1, key));
        }
        t.parse()
    }
}

fn err(input: &str, reason: &'static str) -> FidParseError {
    FidParseError {
        input: input.chars().take(80).collect(),
        reason,
    }
}

fn hex_word(input: &str, w: &str) -> Result<u64, FidParseError> {
    let digits = w
        .strip_prefix("0x")
        .or_else(|| w.strip_prefix("0X"))
        .unwrap_or(w);
    if digits.is_empty() || digits.len() > 16 {
        return Err(err(input, "each part must be 1 to 16 hex digits"));
    }
    u64::from_str_radix(digits, 16).map_err(|_| err(input, "not a hexadecimal number"))
}

impl FromStr for Fid {
    type Err = FidParseError;
    fn from_str(s: &str) -> Result<Fid, FidParseError> {
        let t = s.trim();
        let t = match (t.strip_prefix('<'), t.ends_with('>')) {
            (Some(inner), true) => &inner[..inner.len() - 1],
            (None, false) => t,
            _ => return Err(err(s, "unbalanced angle brackets")),
        };
        let (c, k) = t
            .split_once(':')
            .ok_or_else(|| err(s, "expected container:key"))?;
        Ok(Fid {
            container: hex_word(s, c)?,
            key: hex_word(s, k)?,
        })
    }
}

impl fmt::Display for Fid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}:{:#x}", self.container, self.key)
    }
}

impl fmt::Debug for Fid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Serialize for Fid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fid, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_parses_both_motr_forms() {
        let f = Fid::typed(b'r', 1, 6);
        assert_eq!(f.to_string(), "0x7200000000000001:0x6");
        assert_eq!("0x7200000000000001:0x6".parse::<Fid>().unwrap(), f);
        assert_eq!("<7200000000000001:6>".parse::<Fid>().unwrap(), f);
        assert_eq!("0x7200000000000001:0x0006".parse::<Fid>().unwrap(), f);
    }

    #[test]
    fn bare_decimal_key_means_a_process_in_container_one() {
        assert_eq!(Fid::parse_process_id("6").unwrap(), Fid::typed(b'r', 1, 6));
        assert_eq!(
            Fid::parse_process_id("0x7200000000000001:0x7d").unwrap(),
            Fid::typed(b'r', 1, 0x7d)
        );
    }

    #[test]
    fn garbage_is_refused_with_a_reason_not_a_panic() {
        for bad in [
            "",
            ":",
            "0x1",
            "zz:1",
            "<1:2",
            "1:2>",
            "0x11112222333344445:1",
            "1:2:3",
            "\u{0}:1",
        ] {
            assert!(bad.parse::<Fid>().is_err(), "{bad:?} should not parse");
        }
        assert!(Fid::parse_process_id("99999999999999999999999").is_err());
    }

    #[test]
    fn type_byte_and_unknown_types() {
        let s = Fid::typed(b's', 1, 7);
        assert!(s.is_service() && !s.is_process());
        assert_eq!(s.obj_type(), Some(ObjType::Service));
        assert_eq!(Fid::new(0xff00_0000_0000_0001, 1).obj_type(), None);
    }
}

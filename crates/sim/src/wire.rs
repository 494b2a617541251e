//! Codec of the stand-in HA wire protocol (`ffi/standin/PROTOCOL.md`): pure functions from
//! typed frames to bytes and back.
//!
//! A frame is `u32 len` (little-endian, kind byte included, 1..=1 MiB), `u8 kind`, body.
//! Decoding never panics: truncated, oversized, trailing or unknown input is a [`WireError`].
//! Encoding checks the same limits, so nothing this module writes can be refused by a peer
//! (strings may not contain NUL; BE_IO_ERR location/opcode and SNS_ERR opcode fit in a byte,
//! as in Motr's structures).
use super::types::*;
use hax_fid::Fid;
use std::io::{self, Read};

/// Largest `len` of a frame (kind byte plus body).
pub const MAX_FRAME: usize = 1 << 20;
/// Most notes in an NVEC or FAILURE_VEC_REP, and most confds in an EP_REP.
pub const MAX_NOTES: usize = 1024;
/// Longest string (endpoint, git revision).
pub const MAX_STR: usize = 4096;

pub const KIND_EP_REQ: u8 = 0x01;
pub const KIND_MSG_TO_HA: u8 = 0x02;
pub const KIND_ACK_TO_HA: u8 = 0x03;
pub const KIND_EP_REP: u8 = 0x81;
pub const KIND_MSG_FROM_HA: u8 = 0x82;
pub const KIND_ACK_FROM_HA: u8 = 0x83;
pub const KIND_DROP: u8 = 0x84;

/// Why bytes are not a valid frame (or a frame cannot be encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated: needed {needed} more bytes for {what}")]
    Truncated { what: &'static str, needed: usize },
    #[error("frame length {0} is outside 1..=1048576")]
    BadLength(u64),
    #[error("frame length {declared} does not match the {actual} bytes given")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("{0} trailing bytes after the body")]
    Trailing(usize),
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("unknown message type {0}")]
    UnknownMsgType(u64),
    #[error("{what} count {n} exceeds {MAX_NOTES}")]
    TooMany { what: &'static str, n: u64 },
    #[error("string of {0} bytes exceeds {MAX_STR}")]
    StringTooLong(usize),
    #[error("string contains a NUL byte")]
    NulInString,
    #[error("invalid {what} value {value}")]
    BadValue { what: &'static str, value: u64 },
}

// ---------------------------------------------------------------- encoding

struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn fid(&mut self, f: &Fid) {
        self.u64(f.container);
        self.u64(f.key);
    }
    fn str(&mut self, s: &str) -> Result<(), WireError> {
        if s.len() > MAX_STR {
            return Err(WireError::StringTooLong(s.len()));
        }
        if s.contains('\0') {
            return Err(WireError::NulInString);
        }
        self.0.extend_from_slice(&(s.len() as u16).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
    /// A `u32` on the wire that Motr keeps in a `u8`.
    fn small(&mut self, what: &'static str, v: u32) -> Result<(), WireError> {
        if v > u8::MAX as u32 {
            return Err(WireError::BadValue {
                what,
                value: v as u64,
            });
        }
        self.u32(v);
        Ok(())
    }
    fn count(&mut self, what: &'static str, n: usize) -> Result<(), WireError> {
        if n > MAX_NOTES {
            return Err(WireError::TooMany { what, n: n as u64 });
        }
        self.u32(n as u32);
        Ok(())
    }
    fn notes(&mut self, notes: &[Note]) -> Result<(), WireError> {
        self.count("note", notes.len())?;
        for n in notes {
            self.fid(&n.fid);
            self.u32(n.state);
        }
        Ok(())
    }
    /// Starts a frame: length placeholder and kind.
    fn frame(kind: u8) -> Out {
        let mut o = Out(Vec::with_capacity(64));
        o.u32(0);
        o.u8(kind);
        o
    }
    /// Fills in the length and checks the limit.
    fn finish(mut self) -> Result<Vec<u8>, WireError> {
        let len = self.0.len() - 4;
        if len > MAX_FRAME {
            return Err(WireError::BadLength(len as u64));
        }
        self.0[..4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(self.0)
    }
}

fn encode_msg(o: &mut Out, tag: u64, m: &HaMsg) -> Result<(), WireError> {
    o.u64(tag);
    o.fid(&m.fid);
    o.fid(&m.source_process);
    o.fid(&m.source_service);
    o.u64(m.time);
    o.u64(m.epoch);
    o.u64(m.body.type_code());
    match &m.body {
        MsgBody::StobIoq(s) => {
            o.fid(&s.sdev);
            o.fid(&s.stob_domain);
            o.fid(&s.stob);
            o.u64(s.fd as u64);
            o.u32(s.opcode);
            o.u32(s.rc as u32);
            o.u64(s.offset);
            o.u64(s.size);
            o.u32(s.bshift);
        }
        MsgBody::Nvec {
            nvec_type,
            id_of_get,
            ignore_same_state,
            notes,
        } => {
            o.u64(nvec_type.code());
            o.u64(*id_of_get);
            o.u64(*ignore_same_state);
            o.notes(notes)?;
        }
        MsgBody::FailureVecReq { pool, cookie } => {
            o.fid(pool);
            o.u64(cookie.hi);
            o.u64(cookie.lo);
        }
        MsgBody::FailureVecRep {
            pool,
            cookie,
            notes,
        } => {
            o.fid(pool);
            o.u64(cookie.hi);
            o.u64(cookie.lo);
            o.notes(notes)?;
        }
        MsgBody::EventProcess {
            event,
            process_type,
            pid,
        } => {
            o.u64(event.code());
            o.u64(process_type.code());
            o.u64(*pid);
        }
        MsgBody::EventService {
            event,
            service_type,
            pid,
        } => {
            o.u64(event.code());
            o.u64(*service_type);
            o.u64(*pid);
        }
        MsgBody::EventRpc { attempts, state } => {
            o.u64(*attempts);
            o.u64(*state);
        }
        MsgBody::BeIoErr {
            errcode,
            location,
            io_opcode,
        } => {
            o.u32(*errcode);
            o.small("location", *location)?;
            o.small("io_opcode", *io_opcode)?;
        }
        MsgBody::SnsErr { errcode, opcode } => {
            o.u32(*errcode);
            o.small("opcode", *opcode)?;
        }
    }
    Ok(())
}

impl ToHa {
    /// The complete frame, length prefix included.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        match self {
            ToHa::EpReq(r) => {
                let mut o = Out::frame(KIND_EP_REQ);
                o.u64(r.seq);
                o.u8(r.first_request as u8);
                o.u64(r.cookie_expected);
                o.u64(r.pid);
                o.fid(&r.process);
                o.str(&r.endpoint)?;
                o.str(&r.git_rev)?;
                o.finish()
            }
            ToHa::Msg { tag, msg } => {
                let mut o = Out::frame(KIND_MSG_TO_HA);
                encode_msg(&mut o, *tag, msg)?;
                o.finish()
            }
            ToHa::Ack { tag } => {
                let mut o = Out::frame(KIND_ACK_TO_HA);
                o.u64(*tag);
                o.finish()
            }
        }
    }

    /// Parses one complete frame (length prefix included, nothing after it).
    pub fn decode(frame: &[u8]) -> Result<ToHa, WireError> {
        let (kind, mut i) = open_frame(frame)?;
        let f = match kind {
            KIND_EP_REQ => ToHa::EpReq(EpRequest {
                seq: i.u64("seq")?,
                first_request: i.bool("first_request")?,
                cookie_expected: i.u64("cookie_expected")?,
                pid: i.u64("pid")?,
                process: i.fid("process")?,
                endpoint: i.str("endpoint")?,
                git_rev: i.str("git_rev")?,
            }),
            KIND_MSG_TO_HA => {
                let tag = i.u64("tag")?;
                ToHa::Msg {
                    tag,
                    msg: decode_msg(&mut i)?,
                }
            }
            KIND_ACK_TO_HA => ToHa::Ack { tag: i.u64("tag")? },
            k => return Err(WireError::UnknownKind(k)),
        };
        i.end()?;
        Ok(f)
    }
}

impl FromHa {
    /// The complete frame, length prefix included.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        match self {
            FromHa::EpRep(r) => {
                let mut o = Out::frame(KIND_EP_REP);
                o.u64(r.seq);
                o.u32(r.rc as u32);
                o.u8(r.link.code());
                o.u64(r.cookie_actual);
                o.count("confd", r.confds.len())?;
                for (fid, ep) in &r.confds {
                    o.fid(fid);
                    o.str(ep)?;
                }
                o.u32(r.quorum);
                o.fid(&r.rm_fid);
                o.str(&r.rm_ep)?;
                o.finish()
            }
            FromHa::Msg { tag, msg } => {
                let mut o = Out::frame(KIND_MSG_FROM_HA);
                encode_msg(&mut o, *tag, msg)?;
                o.finish()
            }
            FromHa::Ack { tag } => {
                let mut o = Out::frame(KIND_ACK_FROM_HA);
                o.u64(*tag);
                o.finish()
            }
            FromHa::Drop => Out::frame(KIND_DROP).finish(),
        }
    }

    /// Parses one complete frame (length prefix included, nothing after it).
    pub fn decode(frame: &[u8]) -> Result<FromHa, WireError> {
        let (kind, mut i) = open_frame(frame)?;
        let f = match kind {
            KIND_EP_REP => {
                let seq = i.u64("seq")?;
                let rc = i.u32("rc")? as i32;
                let link = i.u8("link")?;
                let link = LinkDecision::from_code(link).ok_or(WireError::BadValue {
                    what: "link",
                    value: link as u64,
                })?;
                let cookie_actual = i.u64("cookie_actual")?;
                let n = i.count("confd")?;
                let mut confds = Vec::with_capacity(n);
                for _ in 0..n {
                    confds.push((i.fid("confd fid")?, i.str("confd ep")?));
                }
                FromHa::EpRep(EpReply {
                    seq,
                    rc,
                    link,
                    cookie_actual,
                    confds,
                    quorum: i.u32("quorum")?,
                    rm_fid: i.fid("rm fid")?,
                    rm_ep: i.str("rm ep")?,
                })
            }
            KIND_MSG_FROM_HA => {
                let tag = i.u64("tag")?;
                FromHa::Msg {
                    tag,
                    msg: decode_msg(&mut i)?,
                }
            }
            KIND_ACK_FROM_HA => FromHa::Ack { tag: i.u64("tag")? },
            KIND_DROP => FromHa::Drop,
            k => return Err(WireError::UnknownKind(k)),
        };
        i.end()?;
        Ok(f)
    }
}

// ---------------------------------------------------------------- decoding

struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated {
                what,
                needed: n - self.0.len(),
            });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(what, 1)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.take(what, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(what, 4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(what, 8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError::BadValue {
                what,
                value: v as u64,
            }),
        }
    }
    fn fid(&mut self, what: &'static str) -> Result<Fid, WireError> {
        Ok(Fid::new(self.u64(what)?, self.u64(what)?))
    }
    fn str(&mut self, what: &'static str) -> Result<String, WireError> {
        let n = self.u16(what)? as usize;
        if n > MAX_STR {
            return Err(WireError::StringTooLong(n));
        }
        let b = self.take(what, n)?;
        if b.contains(&0) {
            return Err(WireError::NulInString);
        }
        Ok(String::from_utf8_lossy(b).into_owned())
    }
    /// A `u32` on the wire that Motr keeps in a `u8`.
    fn small(&mut self, what: &'static str) -> Result<u32, WireError> {
        match self.u32(what)? {
            v if v > u8::MAX as u32 => Err(WireError::BadValue {
                what,
                value: v as u64,
            }),
            v => Ok(v),
        }
    }
    fn count(&mut self, what: &'static str) -> Result<usize, WireError> {
        let n = self.u32(what)?;
        if n as usize > MAX_NOTES {
            return Err(WireError::TooMany { what, n: n as u64 });
        }
        Ok(n as usize)
    }
    fn notes(&mut self) -> Result<Vec<Note>, WireError> {
        let n = self.count("note")?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(Note {
                fid: self.fid("note fid")?,
                state: self.u32("note state")?,
            });
        }
        Ok(v)
    }
    fn cookie(&mut self) -> Result<Cookie, WireError> {
        Ok(Cookie {
            hi: self.u64("cookie")?,
            lo: self.u64("cookie")?,
        })
    }
    fn end(&self) -> Result<(), WireError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

fn coded<T>(what: &'static str, v: u64, f: impl Fn(u64) -> Option<T>) -> Result<T, WireError> {
    f(v).ok_or(WireError::BadValue { what, value: v })
}

fn decode_msg(i: &mut In<'_>) -> Result<HaMsg, WireError> {
    let fid = i.fid("hm_fid")?;
    let source_process = i.fid("source_process")?;
    let source_service = i.fid("source_service")?;
    let time = i.u64("time")?;
    let epoch = i.u64("epoch")?;
    let body = match i.u64("type")? {
        1 => MsgBody::StobIoq(StobIoq {
            sdev: i.fid("sdev")?,
            stob_domain: i.fid("stob_domain")?,
            stob: i.fid("stob")?,
            fd: i.u64("fd")? as i64,
            opcode: i.u32("opcode")?,
            rc: i.u32("rc")? as i32,
            offset: i.u64("offset")?,
            size: i.u64("size")?,
            bshift: i.u32("bshift")?,
        }),
        2 => MsgBody::Nvec {
            nvec_type: coded("nvec_type", i.u64("nvec_type")?, NvecType::from_code)?,
            id_of_get: i.u64("id_of_get")?,
            ignore_same_state: i.u64("ignore_same_state")?,
            notes: i.notes()?,
        },
        3 => MsgBody::FailureVecReq {
            pool: i.fid("pool")?,
            cookie: i.cookie()?,
        },
        4 => MsgBody::FailureVecRep {
            pool: i.fid("pool")?,
            cookie: i.cookie()?,
            notes: i.notes()?,
        },
        7 => MsgBody::EventProcess {
            event: coded("process event", i.u64("event")?, ProcessEvent::from_code)?,
            process_type: coded("process type", i.u64("type")?, ProcessType::from_code)?,
            pid: i.u64("pid")?,
        },
        8 => MsgBody::EventService {
            event: coded("service event", i.u64("event")?, ServiceEvent::from_code)?,
            service_type: i.u64("service_type")?,
            pid: i.u64("pid")?,
        },
        9 => MsgBody::EventRpc {
            attempts: i.u64("attempts")?,
            state: i.u64("state")?,
        },
        10 => MsgBody::BeIoErr {
            errcode: i.u32("errcode")?,
            location: i.small("location")?,
            io_opcode: i.small("io_opcode")?,
        },
        11 => MsgBody::SnsErr {
            errcode: i.u32("errcode")?,
            opcode: i.small("opcode")?,
        },
        t => return Err(WireError::UnknownMsgType(t)),
    };
    Ok(HaMsg {
        fid,
        source_process,
        source_service,
        time,
        epoch,
        body,
    })
}

/// Checks the length prefix of a complete frame; returns its kind and a reader of the body.
fn open_frame(frame: &[u8]) -> Result<(u8, In<'_>), WireError> {
    let mut i = In(frame);
    let len = i.u32("length")? as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(WireError::BadLength(len as u64));
    }
    if i.0.len() != len {
        return Err(WireError::LengthMismatch {
            declared: len,
            actual: i.0.len(),
        });
    }
    Ok((i.u8("kind")?, i))
}

/// The size of the first complete frame at the start of `buf` (prefix included), `None` when
/// more bytes are needed; an error when the length prefix is out of bounds.
pub fn frame_size(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(WireError::BadLength(len as u64));
    }
    Ok((buf.len() >= 4 + len).then_some(4 + len))
}

/// Reads one complete frame (prefix included) from a blocking reader. An out-of-bounds
/// length is `InvalidData`; end of stream before a whole frame is `UnexpectedEof`.
pub fn read_frame<R: Read>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix)?;
    let len = u32::from_le_bytes(prefix) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            WireError::BadLength(len as u64),
        ));
    }
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&prefix);
    r.read_exact(&mut frame[4..])?;
    Ok(frame)
}

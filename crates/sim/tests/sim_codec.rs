//! Tests of the simulator's wire codec (`hax_sim::wire`) and of `SimProcess` against HA peers
//! scripted in the test with the same codec: the m0d boot order, blocking on answers, ACKs,
//! DROP, fault switches, stop/kill/restart, a fleet, and the `hax-m0d-sim` CLI.
use hax_fid::Fid;
use hax_sim::wire::{self, read_frame, WireError, MAX_FRAME};
use hax_sim::*;
use std::io::{ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ sample values

fn r(k: u64) -> Fid {
    Fid::typed(b'r', 1, k)
}
fn s(k: u64) -> Fid {
    Fid::typed(b's', 1, k)
}
fn pool(k: u64) -> Fid {
    Fid::typed(b'o', 1, k)
}

fn msg(body: MsgBody) -> HaMsg {
    HaMsg {
        fid: r(5),
        source_process: r(5),
        source_service: s(9),
        time: 123_456_789,
        epoch: 7,
        body,
    }
}

fn notes(n: usize) -> Vec<Note> {
    (0..n)
        .map(|i| Note {
            fid: Fid::typed(b'd', 1, i as u64),
            state: (i % 8) as u32,
        })
        .collect()
}

fn every_body() -> Vec<MsgBody> {
    vec![
        MsgBody::StobIoq(StobIoq {
            fd: -1,
            rc: -5,
            ..StobIoq::write_error(Fid::typed(b'd', 1, 0x33), -5)
        }),
        MsgBody::Nvec {
            nvec_type: NvecType::Get,
            id_of_get: 100,
            ignore_same_state: 0,
            notes: notes(81),
        },
        MsgBody::Nvec {
            nvec_type: NvecType::Set,
            id_of_get: 0,
            ignore_same_state: 1,
            notes: notes(1024),
        },
        MsgBody::FailureVecReq {
            pool: pool(4),
            cookie: Cookie {
                hi: 0x5555_d836_2d80,
                lo: 0x18ea,
            },
        },
        MsgBody::FailureVecRep {
            pool: pool(4),
            cookie: Cookie { hi: 1, lo: 2 },
            notes: notes(3),
        },
        MsgBody::FailureVecRep {
            pool: pool(5),
            cookie: Cookie::default(),
            notes: vec![],
        },
        MsgBody::EventProcess {
            event: ProcessEvent::DtmRecovered,
            process_type: ProcessType::M0d,
            pid: 11136,
        },
        MsgBody::EventService {
            event: ServiceEvent::Failed,
            service_type: 17,
            pid: 11136,
        },
        MsgBody::EventRpc {
            attempts: 3,
            state: 1,
        },
        MsgBody::BeIoErr {
            errcode: 5,
            location: 1,
            io_opcode: 2,
        },
        MsgBody::SnsErr {
            errcode: 28,
            opcode: 1,
        },
    ]
}

/// The cookie of the scripted HAs (a real one is per HA instance, never 0).
const HA_COOKIE: u64 = 0x00c0_ffee_0000_0001;

fn ep_rep(seq: u64, rc: i32, link: LinkDecision) -> EpReply {
    EpReply {
        seq,
        rc,
        link,
        cookie_actual: HA_COOKIE,
        confds: vec![
            (s(0x14), "inet:tcp:127.0.0.1@22002".into()),
            (s(0x15), "inet:tcp:127.0.0.1@22302".into()),
        ],
        quorum: 2,
        rm_fid: s(2),
        rm_ep: "inet:tcp:127.0.0.1@22001".into(),
    }
}

fn process_frames() -> Vec<ToHa> {
    let mut v = vec![
        ToHa::EpReq(EpRequest {
            seq: 1,
            first_request: true,
            cookie_expected: 0,
            pid: 11136,
            process: r(5),
            endpoint: "inet:tcp:127.0.0.1@22301".into(),
            git_rev: "27e7f86ed57aad344d02c426e939add31626034d".into(),
        }),
        ToHa::EpReq(EpRequest {
            seq: 2,
            first_request: false,
            cookie_expected: u64::MAX,
            pid: 0,
            process: r(5),
            endpoint: "e".repeat(4096),
            git_rev: String::new(),
        }),
        ToHa::Ack { tag: 9 },
    ];
    v.extend(
        every_body()
            .into_iter()
            .enumerate()
            .map(|(i, b)| ToHa::Msg {
                tag: 2 + 2 * i as u64,
                msg: msg(b),
            }),
    );
    v
}

fn ha_frames() -> Vec<FromHa> {
    let mut v = vec![
        FromHa::EpRep(ep_rep(1, 0, LinkDecision::Connected)),
        FromHa::EpRep(EpReply {
            confds: vec![],
            rm_ep: String::new(),
            ..ep_rep(2, -11, LinkDecision::None)
        }),
        FromHa::EpRep(ep_rep(3, 0, LinkDecision::Reused)),
        FromHa::EpRep(ep_rep(4, 0, LinkDecision::Absent)),
        FromHa::Ack { tag: 2 },
        FromHa::Drop,
    ];
    v.extend(
        every_body()
            .into_iter()
            .enumerate()
            .map(|(i, b)| FromHa::Msg {
                tag: 1 + 2 * i as u64,
                msg: msg(b),
            }),
    );
    v
}

fn set_len(frame: &mut [u8]) {
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
}

// ------------------------------------------------------------------ codec

#[test]
fn every_process_frame_round_trips() {
    for f in process_frames() {
        let bytes = f.encode().unwrap();
        assert_eq!(wire::frame_size(&bytes).unwrap(), Some(bytes.len()));
        assert_eq!(ToHa::decode(&bytes).unwrap(), f);
        assert_eq!(read_frame(&mut &bytes[..]).unwrap(), bytes);
    }
}

#[test]
fn every_ha_frame_round_trips() {
    for f in ha_frames() {
        let bytes = f.encode().unwrap();
        assert_eq!(FromHa::decode(&bytes).unwrap(), f);
    }
}

#[test]
fn frames_have_the_documented_byte_layout() {
    // ACK: len 9, kind 0x03, u64 tag.
    assert_eq!(
        ToHa::Ack { tag: 2 }.encode().unwrap(),
        [9, 0, 0, 0, 3, 2, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(FromHa::Drop.encode().unwrap(), [1, 0, 0, 0, 0x84]);
    // EP_REQ: seq, first, pid, fid, str endpoint, str git_rev.
    let req = ToHa::EpReq(EpRequest {
        seq: 1,
        first_request: true,
        cookie_expected: 0x1122_3344_5566_7788,
        pid: 2,
        process: r(5),
        endpoint: "ab".into(),
        git_rev: "c".into(),
    });
    let b = req.encode().unwrap();
    // EP_REQ (v2): seq, first, cookie_expected, pid, fid, str endpoint, str git_rev.
    assert_eq!(b.len(), 4 + 1 + 8 + 1 + 8 + 8 + 16 + 2 + 2 + 2 + 1);
    assert_eq!(b[4], 0x01);
    assert_eq!(b[13], 1);
    assert_eq!(&b[14..22], &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(&b[22..30], &2u64.to_le_bytes());
    assert_eq!(&b[30..38], &0x7200_0000_0000_0001u64.to_le_bytes());
    assert_eq!(&b[46..50], &[2, 0, b'a', b'b']);
    // MSG: tag, 3 fids, time, epoch, type (= 8 + 48 + 24 bytes) then the body; a note is 20 bytes.
    let m = ToHa::Msg {
        tag: 4,
        msg: msg(MsgBody::Nvec {
            nvec_type: NvecType::Get,
            id_of_get: 100,
            ignore_same_state: 0,
            notes: notes(2),
        }),
    };
    let b = m.encode().unwrap();
    assert_eq!(b.len(), 5 + 8 + 48 + 24 + 24 + 4 + 2 * 20);
    assert_eq!(&b[77..85], &2u64.to_le_bytes()); // hed_type NVEC
    assert_eq!(&b[85..93], &1u64.to_le_bytes()); // GET
    assert_eq!(&b[93..101], &100u64.to_le_bytes()); // id_of_get
                                                    // EP_REP: rc is a signed 32-bit value; link 3 (none) on error replies.
    let b = FromHa::EpRep(EpReply {
        confds: vec![],
        ..ep_rep(1, -11, LinkDecision::None)
    })
    .encode()
    .unwrap();
    assert_eq!(&b[13..18], &[0xf5, 0xff, 0xff, 0xff, 3]);
    // then (v2) the HA's cookie, then the confd count.
    assert_eq!(&b[18..26], &HA_COOKIE.to_le_bytes());
    assert_eq!(&b[26..30], &0u32.to_le_bytes());
}

#[test]
fn truncated_frames_are_errors_at_every_cut() {
    let all: Vec<(Vec<u8>, bool)> = process_frames()
        .iter()
        .map(|f| (f.encode().unwrap(), true))
        .chain(ha_frames().iter().map(|f| (f.encode().unwrap(), false)))
        .collect();
    for (bytes, to_ha) in all {
        let decode = |b: &[u8]| match to_ha {
            true => ToHa::decode(b).map(|_| ()),
            false => FromHa::decode(b).map(|_| ()),
        };
        // Every cut of small frames; for big ones the head, a stride and the tail.
        let n = bytes.len();
        let cuts = (0..n).filter(|c| n <= 600 || *c < 300 || c % 97 == 0 || *c + 64 > n);
        for cut in cuts {
            // As cut off on the wire: the length prefix no longer matches.
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} decoded");
            assert_eq!(
                wire::frame_size(&bytes[..cut])
                    .unwrap_or(Some(0))
                    .unwrap_or(0),
                0
            );
            // With a length that agrees with the short body: the body parser must notice.
            if cut > 4 {
                let mut short = bytes[..cut].to_vec();
                set_len(&mut short);
                assert!(decode(&short).is_err(), "short body of {cut} bytes decoded");
            }
        }
        assert!(read_frame(&mut &bytes[..bytes.len() - 1]).is_err());
    }
}

#[test]
fn zero_and_oversized_lengths_are_refused() {
    let mut zero = vec![0u8; 4];
    assert!(matches!(
        wire::frame_size(&zero),
        Err(WireError::BadLength(0))
    ));
    assert!(matches!(
        FromHa::decode(&zero),
        Err(WireError::BadLength(0))
    ));
    let big = (MAX_FRAME as u32 + 1).to_le_bytes();
    assert!(matches!(
        wire::frame_size(&big),
        Err(WireError::BadLength(_))
    ));
    assert_eq!(
        read_frame(&mut &big[..]).unwrap_err().kind(),
        ErrorKind::InvalidData
    );
    zero.push(0x83);
    assert!(FromHa::decode(&zero).is_err());
    // A frame of exactly 1 MiB is fine as far as framing goes.
    let max = (MAX_FRAME as u32).to_le_bytes();
    assert_eq!(wire::frame_size(&max).unwrap(), None);
    // Encoding refuses what a peer would refuse.
    let huge = msg(MsgBody::Nvec {
        nvec_type: NvecType::Set,
        id_of_get: 0,
        ignore_same_state: 0,
        notes: notes(1025),
    });
    assert!(matches!(
        ToHa::Msg { tag: 2, msg: huge }.encode(),
        Err(WireError::TooMany { .. })
    ));
}

#[test]
fn counts_above_1024_are_refused() {
    for (body, nr_at) in [
        (
            MsgBody::Nvec {
                nvec_type: NvecType::Set,
                id_of_get: 0,
                ignore_same_state: 0,
                notes: vec![],
            },
            85 + 24,
        ),
        (
            MsgBody::FailureVecRep {
                pool: pool(1),
                cookie: Cookie::default(),
                notes: vec![],
            },
            85 + 32,
        ),
    ] {
        let mut b = FromHa::Msg {
            tag: 1,
            msg: msg(body),
        }
        .encode()
        .unwrap();
        assert_eq!(&b[nr_at..nr_at + 4], &[0, 0, 0, 0]);
        b[nr_at..nr_at + 4].copy_from_slice(&1025u32.to_le_bytes());
        b.extend(std::iter::repeat_n(0u8, 1025 * 20));
        set_len(&mut b);
        assert!(
            matches!(FromHa::decode(&b), Err(WireError::TooMany { n: 1025, .. })),
            "{:?}",
            FromHa::decode(&b)
        );
    }
    let mut rep = ep_rep(1, 0, LinkDecision::Connected);
    rep.confds = (0..1025).map(|i| (s(i), String::new())).collect();
    assert!(FromHa::EpRep(rep).encode().is_err());
}

#[test]
fn strings_longer_than_4096_are_refused() {
    let long = EpRequest {
        seq: 1,
        first_request: true,
        cookie_expected: 0,
        pid: 1,
        process: r(5),
        endpoint: "x".repeat(4097),
        git_rev: String::new(),
    };
    assert!(matches!(
        ToHa::EpReq(long.clone()).encode(),
        Err(WireError::StringTooLong(4097))
    ));
    // Hand-made: a 4097-byte endpoint.
    let mut b = ToHa::EpReq(EpRequest {
        endpoint: String::new(),
        ..long
    })
    .encode()
    .unwrap();
    let at = 4 + 1 + 8 + 1 + 8 + 8 + 16;
    b[at..at + 2].copy_from_slice(&4097u16.to_le_bytes());
    let tail = b.split_off(at + 2);
    b.extend(std::iter::repeat_n(b'x', 4097));
    b.extend(tail);
    set_len(&mut b);
    assert!(matches!(
        ToHa::decode(&b),
        Err(WireError::StringTooLong(4097))
    ));
}

#[test]
fn nul_bytes_in_strings_and_oversized_byte_fields_are_refused() {
    let req = EpRequest {
        seq: 1,
        first_request: true,
        cookie_expected: 0,
        pid: 1,
        process: r(5),
        endpoint: "ab".into(),
        git_rev: String::new(),
    };
    let bad = EpRequest {
        endpoint: "a\0".into(),
        ..req.clone()
    };
    assert_eq!(ToHa::EpReq(bad).encode(), Err(WireError::NulInString));
    let mut b = ToHa::EpReq(req).encode().unwrap();
    b[49] = 0; // second byte of the endpoint
    assert_eq!(ToHa::decode(&b), Err(WireError::NulInString));
    // Motr keeps BE_IO_ERR location/opcode and the SNS_ERR opcode in a byte.
    for body in [
        MsgBody::BeIoErr {
            errcode: 5,
            location: 256,
            io_opcode: 1,
        },
        MsgBody::BeIoErr {
            errcode: 5,
            location: 1,
            io_opcode: 300,
        },
        MsgBody::SnsErr {
            errcode: 5,
            opcode: 256,
        },
    ] {
        assert!(matches!(
            ToHa::Msg {
                tag: 2,
                msg: msg(body)
            }
            .encode(),
            Err(WireError::BadValue { .. })
        ));
    }
    let mut b = ToHa::Msg {
        tag: 2,
        msg: msg(MsgBody::SnsErr {
            errcode: 5,
            opcode: 1,
        }),
    }
    .encode()
    .unwrap();
    b[89..93].copy_from_slice(&256u32.to_le_bytes());
    assert!(matches!(
        ToHa::decode(&b),
        Err(WireError::BadValue {
            what: "opcode",
            value: 256
        })
    ));
}

#[test]
fn unknown_kinds_types_and_values_are_refused() {
    for kind in [0x00u8, 0x04, 0x80, 0x85, 0xff] {
        let f = [1, 0, 0, 0, kind];
        assert!(matches!(ToHa::decode(&f), Err(WireError::UnknownKind(k)) if k == kind));
        assert!(matches!(FromHa::decode(&f), Err(WireError::UnknownKind(k)) if k == kind));
    }
    // Direction matters: an HA frame is not a process frame.
    assert!(ToHa::decode(&FromHa::Ack { tag: 1 }.encode().unwrap()).is_err());
    assert!(FromHa::decode(&ToHa::Ack { tag: 2 }.encode().unwrap()).is_err());
    // Message types 5, 6 (KEEPALIVE) and anything unknown.
    let base = ToHa::Msg {
        tag: 2,
        msg: msg(MsgBody::EventRpc {
            attempts: 1,
            state: 2,
        }),
    }
    .encode()
    .unwrap();
    for t in [0u64, 5, 6, 12, u64::MAX] {
        let mut b = base.clone();
        b[77..85].copy_from_slice(&t.to_le_bytes());
        assert!(matches!(ToHa::decode(&b), Err(WireError::UnknownMsgType(x)) if x == t));
    }
    // Out-of-range enum values.
    let ev = ToHa::Msg {
        tag: 2,
        msg: msg(MsgBody::EventProcess {
            event: ProcessEvent::Started,
            process_type: ProcessType::M0d,
            pid: 1,
        }),
    };
    let mut b = ev.encode().unwrap();
    b[85..93].copy_from_slice(&9u64.to_le_bytes());
    assert!(matches!(
        ToHa::decode(&b),
        Err(WireError::BadValue { value: 9, .. })
    ));
    let mut b = FromHa::EpRep(ep_rep(1, 0, LinkDecision::Connected))
        .encode()
        .unwrap();
    b[17] = 4;
    assert!(matches!(
        FromHa::decode(&b),
        Err(WireError::BadValue {
            what: "link",
            value: 4
        })
    ));
    let mut b = process_frames()[0].encode().unwrap();
    b[13] = 2;
    assert!(matches!(
        ToHa::decode(&b),
        Err(WireError::BadValue {
            what: "first_request",
            value: 2
        })
    ));
    // Trailing bytes.
    let mut b = FromHa::Ack { tag: 1 }.encode().unwrap();
    b.push(0);
    set_len(&mut b);
    assert!(matches!(FromHa::decode(&b), Err(WireError::Trailing(1))));
}

#[test]
fn the_committed_fuzz_seeds_are_frames_of_the_current_protocol() {
    // fuzz/corpus/sim_wire/seed-*: every seed is whole frames that decode in one direction
    // (seed-stream is a conversation), so the fuzzers start from valid protocol-v2 input.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/sim_wire");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("seed-") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = wire::frame_size(rest)
                .unwrap()
                .unwrap_or_else(|| panic!("{name}: a partial frame"));
            let f = &rest[..n];
            assert!(
                ToHa::decode(f).is_ok() || FromHa::decode(f).is_ok(),
                "{name}: a frame that decodes in neither direction: {:?} / {:?}",
                ToHa::decode(f),
                FromHa::decode(f)
            );
            rest = &rest[n..];
        }
        seen += 1;
    }
    assert!(seen >= 17, "{seen} seeds");
    let ep = std::fs::read(dir.join("seed-ep_rep")).unwrap();
    let FromHa::EpRep(r) = FromHa::decode(&ep).unwrap() else {
        panic!()
    };
    assert_ne!(r.cookie_actual, 0);
}

#[test]
fn random_garbage_never_panics() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let valid: Vec<Vec<u8>> = ha_frames().iter().map(|f| f.encode().unwrap()).collect();
    for i in 0..20_000 {
        let mut b = valid[i % valid.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % b.len();
            b[at] = next() as u8;
        }
        let _ = FromHa::decode(&b);
        let _ = ToHa::decode(&b);
        let _ = wire::frame_size(&b);
    }
}

// ------------------------------------------------------------------ scripted HA peer

/// One accepted connection, driven step by step by the test.
struct Peer {
    s: TcpStream,
    /// ACKs received from the process (tags of HA messages).
    acks: Vec<u64>,
    /// Frames read while looking for an ACK, handed out by `next` first.
    pending: std::collections::VecDeque<ToHa>,
    next_tag: u64,
}

impl Peer {
    fn accept(l: &TcpListener) -> Peer {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Peer {
            s,
            acks: Vec::new(),
            pending: Default::default(),
            next_tag: 1,
        }
    }
    fn send(&mut self, f: FromHa) {
        self.s.write_all(&f.encode().unwrap()).unwrap();
    }
    /// Sends an HA message with the next odd tag.
    fn send_msg(&mut self, body: MsgBody) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 2;
        self.send(FromHa::Msg {
            tag,
            msg: HaMsg::new(Fid::ZERO, Fid::ZERO, Fid::ZERO, body),
        });
        tag
    }
    fn read(&mut self) -> ToHa {
        ToHa::decode(&read_frame(&mut self.s).unwrap()).unwrap()
    }
    /// The next frame that is not an ACK.
    fn next(&mut self) -> ToHa {
        if let Some(f) = self.pending.pop_front() {
            return f;
        }
        loop {
            match self.read() {
                ToHa::Ack { tag } => self.acks.push(tag),
                f => return f,
            }
        }
    }
    fn ep(&mut self) -> EpRequest {
        match self.next() {
            ToHa::EpReq(r) => r,
            f => panic!("expected EP_REQ, got {f:?}"),
        }
    }
    fn msg(&mut self) -> (u64, HaMsg) {
        match self.next() {
            ToHa::Msg { tag, msg } => (tag, msg),
            f => panic!("expected MSG, got {f:?}"),
        }
    }
    fn reply(&mut self, req: &EpRequest, rc: i32, link: LinkDecision) {
        self.send(FromHa::EpRep(ep_rep(req.seq, rc, link)));
    }
    /// Asserts the process sends nothing but ACKs for `d`.
    fn expect_silence(&mut self, d: Duration) {
        assert!(
            self.pending.is_empty(),
            "expected silence, got {:?}",
            self.pending
        );
        let until = Instant::now() + d;
        self.s
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        while Instant::now() < until {
            match self.s.peek(&mut [0u8; 1]) {
                Ok(0) => panic!("process closed the connection"),
                Ok(_) => {
                    self.s
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    match self.read() {
                        ToHa::Ack { tag } => self.acks.push(tag),
                        f => panic!("expected silence, got {f:?}"),
                    }
                    self.s
                        .set_read_timeout(Some(Duration::from_millis(20)))
                        .unwrap();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
        self.s
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
    /// Reads until the process ACKed `tag` (the process may go on before its ACK is
    /// written: other frames are kept for `next`).
    fn wait_ack(&mut self, tag: u64) {
        while !self.acks.contains(&tag) {
            match self.read() {
                ToHa::Ack { tag } => self.acks.push(tag),
                f => self.pending.push_back(f),
            }
        }
    }
    /// Reads to the end of the stream, accepting only ACKs.
    fn expect_eof(&mut self) {
        assert!(self.pending.is_empty(), "{:?}", self.pending);
        loop {
            match read_frame(&mut self.s) {
                Ok(f) => match ToHa::decode(&f).unwrap() {
                    ToHa::Ack { tag } => self.acks.push(tag),
                    f => panic!("expected end of stream, got {f:?}"),
                },
                Err(e) => return assert_eq!(e.kind(), ErrorKind::UnexpectedEof),
            }
        }
    }
    fn expect_process_event(&mut self, ev: ProcessEvent, cfg: &SimConfig) -> u64 {
        let (tag, m) = self.msg();
        assert_eq!(m.fid, cfg.process_fid);
        assert_eq!(
            m.body,
            MsgBody::EventProcess {
                event: ev,
                process_type: cfg.process_type,
                pid: cfg.pid
            }
        );
        tag
    }
    fn expect_service_event(
        &mut self,
        (svc, ty): (Fid, u64),
        ev: ServiceEvent,
        cfg: &SimConfig,
    ) -> u64 {
        let (tag, m) = self.msg();
        assert_eq!((m.fid, m.source_process), (svc, cfg.process_fid));
        assert_eq!(
            m.body,
            MsgBody::EventService {
                event: ev,
                service_type: ty,
                pid: cfg.pid
            }
        );
        tag
    }
    fn ack(&mut self, tag: u64) {
        self.send(FromHa::Ack { tag });
    }
    /// Answers the entrypoint request of a boot without pools, GET or services (a configured
    /// m0d sends no second one); returns the tags of STARTING, STARTED, DTM_RECOVERED.
    fn serve_plain_boot(&mut self, cfg: &SimConfig) -> Vec<u64> {
        let req = self.ep();
        assert!(req.first_request);
        self.reply(&req, 0, LinkDecision::Connected);
        let t1 = self.expect_process_event(ProcessEvent::Starting, cfg);
        let t2 = self.expect_process_event(ProcessEvent::Started, cfg);
        let t3 = self.expect_process_event(ProcessEvent::DtmRecovered, cfg);
        vec![t1, t2, t3]
    }
}

fn listen() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("inet:tcp:127.0.0.1@{}", l.local_addr().unwrap().port());
    (l, ep)
}

fn quick(cfg: &mut SimConfig) {
    cfg.timeouts.reply = Duration::from_secs(10);
    cfg.timeouts.ack = Duration::from_secs(10);
    cfg.timeouts.entrypoint = Duration::from_secs(10);
    cfg.ha_resend = Duration::from_millis(300);
    cfg.rpc_timeout = Duration::from_millis(400);
}

fn plain_config(key: u64) -> SimConfig {
    let mut cfg = SimConfig::new(r(key));
    cfg.pid = 4242;
    quick(&mut cfg);
    cfg
}

#[test]
fn boot_sends_frames_in_m0d_order_blocks_on_answers_acks_ha_and_records_drop() {
    let (l, ep) = listen();
    let mut cfg = SimConfig::new(r(5));
    cfg.pid = 11136;
    cfg.endpoint = "inet:tcp:127.0.0.1@22301".into();
    cfg.services = vec![(s(9), service_type::IOS), (s(0x14), service_type::CONFD)];
    cfg.pools = vec![pool(4), pool(5)];
    quick(&mut cfg);
    cfg.second_entrypoint = true; // the old m0d order, with link reuse
    cfg.get_fids = gen::config_fids(81, &cfg);
    let (tx, rx) = crossbeam_channel::unbounded();
    cfg.events = Some(tx);
    let proc = SimProcess::connect(&ep, cfg.clone()).unwrap();
    let mut ha = Peer::accept(&l);

    thread::scope(|sc| {
        let booting = sc.spawn(|| proc.boot());
        // 1. First entrypoint request; an error reply makes the process ask again at once.
        let req = ha.ep();
        assert!(req.first_request);
        assert_eq!(
            (req.process, req.pid, req.endpoint.as_str()),
            (r(5), 11136, "inet:tcp:127.0.0.1@22301")
        );
        let t_err = Instant::now();
        // As Motr: the error reply to a first request makes the link anyway; the process asks
        // again with a request that is not first, and that one reuses the link.
        ha.reply(&req, -11, LinkDecision::Connected);
        let again = ha.ep();
        assert!(
            t_err.elapsed() < Duration::from_secs(2),
            "retry was not immediate"
        );
        assert!(!again.first_request && again.seq != req.seq);
        ha.reply(&again, 0, LinkDecision::Reused);
        // 2. STARTING with even tag 2; 3. the second, non-first request.
        assert_eq!(ha.expect_process_event(ProcessEvent::Starting, &cfg), 2);
        let second = ha.ep();
        assert!(!second.first_request);
        ha.reply(&second, 0, LinkDecision::Reused);
        // 4. One FAILURE_VEC_REQ per pool, each waited for.
        for (i, p) in [pool(4), pool(5)].into_iter().enumerate() {
            let (tag, m) = ha.msg();
            assert_eq!(tag, 4 + 2 * i as u64);
            let MsgBody::FailureVecReq { pool: got, cookie } = m.body else {
                panic!("{m:?}")
            };
            assert_eq!(got, p);
            ha.expect_silence(Duration::from_millis(150));
            // Other HA messages do not answer it.
            let t = ha.send_msg(MsgBody::EventRpc {
                attempts: 1,
                state: 1,
            });
            ha.wait_ack(t);
            ha.expect_silence(Duration::from_millis(100));
            let t = ha.send_msg(MsgBody::FailureVecRep {
                pool: p,
                cookie,
                notes: notes(2),
            });
            ha.wait_ack(t);
        }
        // 5. NVEC GET of the configuration objects, states 0, waiting for the matching SET.
        let (_, m) = ha.msg();
        let MsgBody::Nvec {
            nvec_type: NvecType::Get,
            id_of_get,
            notes: asked,
            ..
        } = m.body
        else {
            panic!("{m:?}")
        };
        assert_ne!(id_of_get, 0);
        assert_eq!(asked.len(), 81);
        assert!(asked.iter().all(|n| n.state == 0));
        assert_eq!(
            asked.iter().map(|n| n.fid).collect::<Vec<_>>(),
            cfg.get_fids
        );
        ha.expect_silence(Duration::from_millis(150));
        let b = ha.send_msg(MsgBody::Nvec {
            nvec_type: NvecType::Set,
            id_of_get: 0,
            ignore_same_state: 0,
            notes: vec![Note::new(r(5), ObjState::Online)],
        });
        ha.wait_ack(b);
        ha.expect_silence(Duration::from_millis(100));
        let answer: Vec<Note> = asked
            .iter()
            .map(|n| Note::new(n.fid, ObjState::Online))
            .collect();
        let t = ha.send_msg(MsgBody::Nvec {
            nvec_type: NvecType::Set,
            id_of_get,
            ignore_same_state: 0,
            notes: answer,
        });
        ha.wait_ack(t);
        // 6. Services, 7. STARTED, 8. DTM_RECOVERED.
        let mut tags = vec![];
        for svc in cfg.services.clone() {
            tags.push(ha.expect_service_event(svc, ServiceEvent::Starting, &cfg));
            tags.push(ha.expect_service_event(svc, ServiceEvent::Started, &cfg));
        }
        tags.push(ha.expect_process_event(ProcessEvent::Started, &cfg));
        tags.push(ha.expect_process_event(ProcessEvent::DtmRecovered, &cfg));
        assert_eq!(tags, (10..=20).step_by(2).collect::<Vec<u64>>());
        let report = booting.join().unwrap().unwrap();
        assert_eq!(report.ep_attempts, 2);
        // The rc-0 reply reused the link the error reply had made.
        assert_eq!(report.first_reply.link, LinkDecision::Reused);
        assert_eq!(report.second_reply.unwrap().link, LinkDecision::Reused);
        assert_eq!(report.first_reply.confds.len(), 2);
        assert_eq!(
            report.failure_vecs,
            vec![(pool(4), notes(2)), (pool(5), notes(2))]
        );
        assert_eq!(report.nvec_answer.len(), 81);
        // The process waits for ACKs of its own messages; an ACK confirms every message up
        // to its tag (HA's delivered mark).
        assert!(matches!(
            proc.wait_for_ack(18, Duration::from_millis(50)),
            Err(SimError::Timeout { .. })
        ));
        ha.ack(20);
        proc.wait_for_ack(20, Duration::from_secs(5)).unwrap();
        proc.wait_for_ack(18, Duration::from_millis(50)).unwrap();
        assert!(matches!(
            proc.wait_for_ack(22, Duration::from_millis(50)),
            Err(SimError::Timeout { .. })
        ));
        // Every HA message was ACKed, in order.
        assert_eq!(ha.acks, vec![1, 3, 5, 7, 9, 11]);
        // Notes history and waits.
        proc.wait_for_note(r(5), ObjState::Online, Duration::from_secs(1))
            .unwrap();
        let later = Instant::now();
        assert!(matches!(
            proc.wait_for_note_after(r(5), ObjState::Online, later, Duration::from_millis(50)),
            Err(SimError::Timeout { .. })
        ));
        let hist = proc.received_notes();
        assert_eq!(hist.len(), 82);
        assert_eq!((hist[0].id_of_get, hist[1].id_of_get), (0, id_of_get));
        // DROP is recorded, and pending waits end with `Dropped`.
        assert!(!proc.is_dropped());
        ha.send(FromHa::Drop);
        proc.wait_dropped(Duration::from_secs(5)).unwrap();
        assert!(proc.is_dropped() && proc.is_gone());
        assert!(matches!(proc.nvec_get(&[r(5)]), Err(SimError::Dropped)));
    });
    let evs: Vec<SimEvent> = rx.try_iter().collect();
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e.kind, SimEventKind::Note { .. }))
            .count(),
        82
    );
    assert_eq!(evs.last().unwrap().kind, SimEventKind::Dropped);
}

#[test]
fn m0mkfs_boot_starts_then_stops_and_close_waits_for_acks() {
    let (l, ep) = listen();
    let mut cfg = plain_config(8);
    cfg.process_type = ProcessType::M0mkfs;
    let proc = SimProcess::connect(&ep, cfg.clone()).unwrap();
    let mut ha = Peer::accept(&l);
    thread::scope(|sc| {
        let booting = sc.spawn(|| proc.boot());
        let req = ha.ep();
        ha.reply(&req, 0, LinkDecision::Connected);
        ha.expect_process_event(ProcessEvent::Starting, &cfg);
        for ev in [
            ProcessEvent::Started,
            ProcessEvent::Stopping,
            ProcessEvent::Stopped,
        ] {
            ha.expect_process_event(ev, &cfg);
        }
        booting.join().unwrap().unwrap();
        // stop_clean sends nothing more (already stopped) and waits for every ACK.
        let stopping = sc.spawn(|| proc.stop_clean());
        ha.expect_silence(Duration::from_millis(150));
        assert!(!stopping.is_finished());
        for t in [2, 4, 6, 8] {
            ha.ack(t);
        }
        stopping.join().unwrap().unwrap();
        ha.expect_eof();
    });
}

#[test]
fn stop_clean_sends_stop_events_in_motr_order() {
    let (l, ep) = listen();
    let mut cfg = plain_config(11);
    cfg.services = vec![(s(12), service_type::IOS), (s(13), service_type::RMS)];
    let proc = SimProcess::connect(&ep, cfg.clone()).unwrap();
    let mut ha = Peer::accept(&l);
    thread::scope(|sc| {
        let booting = sc.spawn(|| proc.boot());
        let req = ha.ep();
        ha.reply(&req, 0, LinkDecision::Connected);
        ha.expect_process_event(ProcessEvent::Starting, &cfg);
        for svc in cfg.services.clone() {
            ha.expect_service_event(svc, ServiceEvent::Starting, &cfg);
            ha.expect_service_event(svc, ServiceEvent::Started, &cfg);
        }
        ha.expect_process_event(ProcessEvent::Started, &cfg);
        ha.expect_process_event(ProcessEvent::DtmRecovered, &cfg);
        booting.join().unwrap().unwrap();
        let stopping = sc.spawn(|| proc.stop_clean());
        ha.expect_process_event(ProcessEvent::Stopping, &cfg);
        ha.expect_service_event(cfg.services[1], ServiceEvent::Stopping, &cfg);
        ha.expect_service_event(cfg.services[1], ServiceEvent::Stopped, &cfg);
        ha.expect_service_event(cfg.services[0], ServiceEvent::Stopping, &cfg);
        ha.expect_service_event(cfg.services[0], ServiceEvent::Stopped, &cfg);
        let last = ha.expect_process_event(ProcessEvent::Stopped, &cfg);
        assert_eq!(last, 26);
        for t in (2..=26).step_by(2) {
            ha.ack(t);
        }
        stopping.join().unwrap().unwrap();
        assert!(proc.is_gone());
    });
}

#[test]
fn the_process_sends_back_the_ha_cookie_of_the_last_reply() {
    let (l, ep) = listen();
    let proc = SimProcess::connect(&ep, plain_config(11)).unwrap();
    let mut ha = Peer::accept(&l);
    thread::scope(|sc| {
        let asking = sc.spawn(|| {
            let a = proc.entrypoint(true).unwrap();
            let b = proc.entrypoint(true).unwrap();
            let c = proc.entrypoint(false).unwrap();
            (a, b, c)
        });
        let req = ha.ep();
        assert_eq!(req.cookie_expected, 0, "no HA answered yet");
        ha.send(FromHa::EpRep(EpReply {
            cookie_actual: 7,
            ..ep_rep(req.seq, -11, LinkDecision::None)
        }));
        let req = ha.ep();
        assert_eq!(req.cookie_expected, 7, "remembered from an error reply too");
        ha.reply(&req, 0, LinkDecision::Connected);
        let req = ha.ep();
        assert!(!req.first_request);
        assert_eq!(req.cookie_expected, HA_COOKIE);
        ha.reply(&req, 0, LinkDecision::Reused);
        let (a, b, c) = asking.join().unwrap();
        assert_eq!((a.rc, b.rc, c.link), (-11, 0, LinkDecision::Reused));
    });
    assert_eq!(proc.ha_cookie(), HA_COOKIE);
}

#[test]
fn link_absent_on_the_second_request_kills_the_process() {
    let (l, ep) = listen();
    let mut cfg = plain_config(14);
    cfg.second_entrypoint = true;
    let proc = SimProcess::connect(&ep, cfg.clone()).unwrap();
    let mut ha = Peer::accept(&l);
    thread::scope(|sc| {
        let booting = sc.spawn(|| proc.boot());
        let req = ha.ep();
        ha.reply(&req, 0, LinkDecision::Connected);
        ha.expect_process_event(ProcessEvent::Starting, &cfg);
        let req = ha.ep();
        ha.reply(&req, 0, LinkDecision::Absent);
        assert!(matches!(booting.join().unwrap(), Err(SimError::LinkAbsent)));
        ha.expect_eof();
    });
    assert!(proc
        .died()
        .unwrap()
        .contains("!rep->hae_disconnected_previously"));
    assert!(proc.is_gone());
    assert!(matches!(
        proc.send_process_event(ProcessEvent::Started, ProcessType::M0d),
        Err(SimError::Died(_))
    ));
}

#[test]
fn entrypoint_errors_past_the_deadline_fail_the_boot() {
    let (l, ep) = listen();
    let mut cfg = plain_config(17);
    cfg.timeouts.entrypoint = Duration::from_millis(300);
    let proc = SimProcess::connect(&ep, cfg).unwrap();
    let mut ha = Peer::accept(&l);
    thread::scope(|sc| {
        let booting = sc.spawn(|| proc.boot());
        let mut n = 0;
        while !booting.is_finished() {
            ha.s.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let Ok(f) = read_frame(&mut ha.s) else {
                continue;
            };
            let ToHa::EpReq(req) = ToHa::decode(&f).unwrap() else {
                panic!()
            };
            assert_eq!(req.first_request, n == 0, "only the first request is first");
            thread::sleep(Duration::from_millis(20)); // an HA pacing its error replies
            let link = if n == 0 {
                LinkDecision::Connected
            } else {
                LinkDecision::Reused
            };
            ha.reply(&req, -11, link);
            n += 1;
        }
        match booting.join().unwrap() {
            Err(SimError::EntrypointFailed { rc: -11, attempts }) => {
                assert!(attempts >= 2 && attempts <= n)
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn unanswered_get_times_out_and_ha_closing_is_recorded() {
    let (l, ep) = listen();
    let mut cfg = plain_config(20);
    cfg.timeouts.reply = Duration::from_millis(200);
    let proc = SimProcess::connect(&ep, cfg).unwrap();
    let mut ha = Peer::accept(&l);
    thread::scope(|sc| {
        let asking = sc.spawn(|| proc.nvec_get(&[r(20), s(21)]));
        let (_, m) = ha.msg();
        assert!(matches!(
            m.body,
            MsgBody::Nvec {
                nvec_type: NvecType::Get,
                ..
            }
        ));
        assert!(matches!(
            asking.join().unwrap(),
            Err(SimError::Timeout { .. })
        ));
    });
    drop(ha);
    let t = Instant::now();
    while proc.closed_reason().is_none() && t.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(proc.closed_reason().unwrap().contains("closed"));
    assert!(proc.is_gone() && !proc.is_dropped());
    assert!(proc.failure_vec_req(pool(1)).is_err());
}

#[test]
fn a_process_told_not_to_ack_or_not_to_read_holds_ha_messages() {
    let (l, ep) = listen();
    let proc = SimProcess::connect(&ep, plain_config(23)).unwrap();
    let mut ha = Peer::accept(&l);
    let set = |fid: Fid, n: usize| MsgBody::Nvec {
        nvec_type: NvecType::Set,
        id_of_get: 0,
        ignore_same_state: 0,
        notes: (0..n)
            .map(|_| Note::new(fid, ObjState::Transient))
            .collect(),
    };
    // Not acking: the message is recorded but never confirmed.
    proc.set_acking(false);
    ha.send_msg(set(r(23), 1));
    proc.wait_for_note(r(23), ObjState::Transient, Duration::from_secs(5))
        .unwrap();
    ha.expect_silence(Duration::from_millis(150));
    assert!(ha.acks.is_empty());
    proc.set_acking(true);
    let t = ha.send_msg(set(r(23), 1));
    ha.wait_ack(t);
    assert_eq!(ha.acks, vec![t]);
    // Not reading: HA's writes eventually block.
    proc.set_reading(false);
    thread::sleep(Duration::from_millis(120));
    ha.s.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let big = FromHa::Msg {
        tag: 99,
        msg: msg(set(s(24), 1024)),
    }
    .encode()
    .unwrap();
    let mut sent = 0usize;
    let blocked = loop {
        match ha.s.write(&big) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break true
            }
            Err(e) => panic!("{e}"),
        }
        if sent > 256 << 20 {
            break false;
        }
    };
    assert!(
        blocked,
        "HA could write {sent} bytes to a process that does not read"
    );
    assert!(proc.received_notes().iter().all(|n| n.fid != s(24)));
}

#[test]
fn stob_ioq_carries_the_sdev_and_kill_closes_at_once() {
    let (l, ep) = listen();
    let cfg = plain_config(26);
    let proc = SimProcess::connect(&ep, cfg).unwrap();
    let mut ha = Peer::accept(&l);
    let sdev = Fid::typed(b'd', 1, 0x33);
    let tag = proc.send_stob_ioq(StobIoq::write_error(sdev, -5)).unwrap();
    let (got, m) = ha.msg();
    assert_eq!((got, m.fid, m.source_process), (tag, sdev, r(26)));
    let MsgBody::StobIoq(ioq) = m.body else {
        panic!()
    };
    assert_eq!((ioq.sdev, ioq.rc, ioq.opcode), (sdev, -5, StobIoq::WRITE));
    proc.kill();
    assert!(proc.is_gone());
    ha.expect_eof();
}

#[test]
fn kill_is_immediate_even_while_a_write_is_blocked_on_an_ha_that_does_not_read() {
    let (l, ep) = listen();
    let mut cfg = plain_config(32);
    cfg.timeouts.write = Duration::from_secs(20);
    let proc = SimProcess::connect(&ep, cfg).unwrap();
    let _ha = Peer::accept(&l); // never reads
    thread::scope(|sc| {
        let flooding = sc.spawn(|| {
            let ioq = StobIoq::write_error(Fid::typed(b'd', 1, 1), -5);
            let mut n = 0u64;
            while proc.send_stob_ioq(ioq).is_ok() {
                n += 1;
            }
            n
        });
        thread::sleep(Duration::from_millis(700));
        assert!(
            !flooding.is_finished(),
            "the writer should be blocked by now"
        );
        let t = Instant::now();
        proc.kill();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "kill took {:?}",
            t.elapsed()
        );
        assert!(flooding.join().unwrap() > 0);
    });
}

#[test]
fn restart_reconnects_and_boots_again_with_a_first_request() {
    let (l, ep) = listen();
    let cfg = plain_config(29);
    let mut proc = SimProcess::connect(&ep, cfg.clone()).unwrap();
    let mut ha = Peer::accept(&l);
    thread::scope(|sc| {
        let booting = sc.spawn(|| proc.boot());
        assert_eq!(ha.serve_plain_boot(&cfg), vec![2, 4, 6]);
        booting.join().unwrap().unwrap();
    });
    ha.send_msg(MsgBody::Nvec {
        nvec_type: NvecType::Set,
        id_of_get: 0,
        ignore_same_state: 0,
        notes: vec![Note::new(r(29), ObjState::Online)],
    });
    proc.wait_for_note(r(29), ObjState::Online, Duration::from_secs(5))
        .unwrap();
    thread::scope(|sc| {
        let restarting = sc.spawn(|| proc.restart());
        ha.expect_eof();
        let mut ha2 = Peer::accept(&l);
        assert_eq!(ha2.serve_plain_boot(&cfg), vec![2, 4, 6]);
        restarting.join().unwrap().unwrap();
        ha2.expect_silence(Duration::from_millis(50));
    });
    assert!(
        proc.received_notes().is_empty(),
        "history is per connection"
    );
}

// ------------------------------------------------------------------ a real m0d's recovery

/// Events of a process, with the time they arrived.
fn events_until(
    rx: &crossbeam_channel::Receiver<SimEvent>,
    mut stop: impl FnMut(&SimEventKind) -> bool,
    within: Duration,
) -> Vec<SimEventKind> {
    let deadline = Instant::now() + within;
    let mut got = vec![];
    while let Ok(ev) = rx.recv_deadline(deadline) {
        let done = stop(&ev.kind);
        got.push(ev.kind);
        if done {
            break;
        }
    }
    got
}

#[test]
fn a_process_sends_no_second_entrypoint_request_by_default() {
    let cfg = SimConfig::new(r(1));
    assert!(!cfg.second_entrypoint);
    assert_eq!(
        (cfg.ha_resend, cfg.rpc_timeout),
        (Duration::from_secs(10), Duration::from_secs(6))
    );
    let (l, ep) = listen();
    let cfg = plain_config(2);
    let proc = SimProcess::connect(&ep, cfg.clone()).unwrap();
    let mut ha = Peer::accept(&l);
    thread::scope(|sc| {
        let booting = sc.spawn(|| proc.boot());
        // serve_plain_boot fails on any EP_REQ after the first
        assert_eq!(ha.serve_plain_boot(&cfg), vec![2, 4, 6]);
        let report = booting.join().unwrap().unwrap();
        assert!(report.second_reply.is_none());
        ha.expect_silence(Duration::from_millis(50));
    });
}

#[test]
fn an_error_reply_to_a_reconnecting_request_kills_the_process_and_one_to_a_reused_link_does_not() {
    let (l, ep) = listen();
    let mut cfg = plain_config(3);
    cfg.second_entrypoint = true;
    let (tx, rx) = crossbeam_channel::unbounded();
    cfg.events = Some(tx);
    let proc = SimProcess::connect(&ep, cfg.clone()).unwrap();
    let mut ha = Peer::accept(&l);
    thread::scope(|sc| {
        let booting = sc.spawn(|| proc.boot());
        let req = ha.ep();
        // first: the error reply makes the link; asked again at once, not first
        ha.reply(&req, -11, LinkDecision::Connected);
        let req = ha.ep();
        assert!(!req.first_request);
        // an error reply to a request whose link is reused: it asks again, alive
        ha.reply(&req, -11, LinkDecision::Reused);
        let req = ha.ep();
        assert!(!req.first_request);
        ha.reply(&req, 0, LinkDecision::Reused);
        ha.expect_process_event(ProcessEvent::Starting, &cfg);
        let req = ha.ep();
        assert!(!req.first_request);
        // HA paces an EAGAIN to a request Motr makes a new link for (the reconnect case):
        // that link will not match the next request: m0d dies
        ha.reply(&req, -11, LinkDecision::Connected);
        let err = booting.join().unwrap().unwrap_err();
        assert!(matches!(&err, SimError::Died(why) if why.contains("hae_disconnected_previously")));
        ha.expect_eof();
    });
    let evs = events_until(
        &rx,
        |k| matches!(k, SimEventKind::Died { .. }),
        Duration::from_secs(2),
    );
    assert!(matches!(evs.last(), Some(SimEventKind::Died { reason })
        if reason.contains("!rep->hae_disconnected_previously in ha_entrypoint_state_cb()")));
}

#[test]
fn a_second_failure_vec_rep_for_one_request_kills_the_process() {
    let (l, ep) = listen();
    let proc = SimProcess::connect(&ep, plain_config(4)).unwrap();
    let mut ha = Peer::accept(&l);
    thread::scope(|sc| {
        let asking = sc.spawn(|| proc.failure_vec_req(pool(4)));
        let (_, m) = ha.msg();
        let MsgBody::FailureVecReq { cookie, .. } = m.body else {
            panic!("{m:?}")
        };
        let rep = MsgBody::FailureVecRep {
            pool: pool(4),
            cookie,
            notes: notes(1),
        };
        let t = ha.send_msg(rep.clone());
        ha.wait_ack(t);
        assert_eq!(asking.join().unwrap().unwrap(), notes(1));
        // the same reply again (HA answered a re-sent request): fhr != NULL fails
        let t2 = ha.send_msg(rep);
        ha.expect_eof();
        assert!(
            !ha.acks.contains(&t2),
            "m0d asserts before it confirms the message"
        );
    });
    assert!(proc
        .died()
        .unwrap()
        .contains("fhr != NULL in m0_ha_fvec_rep_handler()"));
    // A reply nobody asked for (an unknown cookie) is the same assertion.
    let (l, ep) = listen();
    let proc = SimProcess::connect(&ep, plain_config(5)).unwrap();
    let mut ha = Peer::accept(&l);
    ha.send_msg(MsgBody::FailureVecRep {
        pool: pool(4),
        cookie: Cookie { hi: 1, lo: 2 },
        notes: vec![],
    });
    ha.expect_eof();
    assert!(proc.died().unwrap().contains("fhr != NULL"));
}

/// A real m0d whose HA restarts: it notices at its next send, re-sends for `ha_resend`, asks
/// again (not first, the dead HA's cookie) on a new connection, waits `rpc_timeout`, then sends
/// everything from the first unconfirmed message again, in order, answered requests included.
#[test]
fn after_its_ha_dies_a_process_resends_its_unconfirmed_messages_on_its_next_send() {
    let (l, ep) = listen();
    let mut cfg = plain_config(6);
    let (tx, rx) = crossbeam_channel::unbounded();
    cfg.events = Some(tx);
    let proc = SimProcess::connect(&ep, cfg.clone()).unwrap();
    let mut ha1 = Peer::accept(&l);
    let fvec_cookie = thread::scope(|sc| {
        let booting = sc.spawn(|| proc.boot());
        assert_eq!(ha1.serve_plain_boot(&cfg), vec![2, 4, 6]);
        booting.join().unwrap().unwrap();
        // HA confirms only STARTING: 4 and 6 stay queued
        ha1.ack(2);
        proc.wait_for_ack(2, Duration::from_secs(5)).unwrap();
        // a request HA answers (still unconfirmed: it will be sent again)
        let asking = sc.spawn(|| proc.failure_vec_req(pool(4)));
        let (tag, m) = ha1.msg();
        assert_eq!(tag, 8);
        let MsgBody::FailureVecReq { cookie, .. } = m.body else {
            panic!("{m:?}")
        };
        let t = ha1.send_msg(MsgBody::FailureVecRep {
            pool: pool(4),
            cookie,
            notes: vec![],
        });
        ha1.wait_ack(t);
        asking.join().unwrap().unwrap();
        cookie
    });
    assert_eq!(proc.unconfirmed_tags(), vec![4, 6, 8]);
    // HA dies. The idle process does not notice (no keepalive): no new connection.
    drop(ha1);
    let evs = events_until(
        &rx,
        |k| matches!(k, SimEventKind::Closed { .. }),
        Duration::from_secs(5),
    );
    assert!(matches!(evs.last(), Some(SimEventKind::Closed { .. })));
    l.set_nonblocking(true).unwrap();
    thread::sleep(Duration::from_millis(700));
    assert!(
        l.accept().is_err(),
        "an idle process never reconnects by itself"
    );
    l.set_nonblocking(false).unwrap();
    // Its next send: ha_resend, then a non-first request with the dead HA's cookie.
    thread::scope(|sc| {
        let t0 = Instant::now();
        let sending =
            sc.spawn(|| proc.send_stob_ioq(StobIoq::write_error(Fid::typed(b'd', 1, 1), -5)));
        let mut ha2 = Peer::accept(&l);
        assert!(
            t0.elapsed() >= cfg.ha_resend,
            "reconnected after {:?}",
            t0.elapsed()
        );
        let req = ha2.ep();
        assert!(!req.first_request);
        assert_eq!(req.cookie_expected, HA_COOKIE);
        let t1 = Instant::now();
        ha2.send(FromHa::EpRep(EpReply {
            cookie_actual: HA_COOKIE + 1, // a restarted HA
            ..ep_rep(req.seq, 0, LinkDecision::Connected)
        }));
        // the old RPC link times out first
        ha2.expect_silence(cfg.rpc_timeout - Duration::from_millis(150));
        let resent: Vec<u64> = (0..4).map(|_| ha2.msg().0).collect();
        assert!(t1.elapsed() >= cfg.rpc_timeout);
        assert_eq!(resent, vec![4, 6, 8, 10]);
        assert_eq!(sending.join().unwrap().unwrap(), 10);
        assert_eq!(proc.ha_cookie(), HA_COOKIE + 1);
        let evs = events_until(
            &rx,
            |k| matches!(k, SimEventKind::Resent { .. }),
            Duration::from_secs(5),
        );
        assert!(evs.iter().any(|k| matches!(k, SimEventKind::HaLost { .. })));
        assert!(evs.iter().any(|k| matches!(
            k,
            SimEventKind::Reconnected {
                link: LinkDecision::Connected
            }
        )));
        assert!(matches!(
            evs.last(),
            Some(SimEventKind::Resent {
                count: 4,
                first_tag: 4
            })
        ));
        // The queue flows on; HA's mark confirms the re-sent messages.
        ha2.ack(10);
        proc.wait_for_ack(10, Duration::from_secs(5)).unwrap();
        assert!(proc.unconfirmed_tags().is_empty());
        // An HA that answers the re-sent FAILURE_VEC_REQ again kills the process.
        ha2.send_msg(MsgBody::FailureVecRep {
            pool: pool(4),
            cookie: fvec_cookie,
            notes: vec![],
        });
        ha2.expect_eof();
    });
    assert!(proc.died().unwrap().contains("fhr != NULL"));
}

#[test]
fn an_error_reply_to_the_reconnect_request_kills_the_process() {
    let (l, ep) = listen();
    let cfg = plain_config(7);
    let proc = SimProcess::connect(&ep, cfg.clone()).unwrap();
    let mut ha1 = Peer::accept(&l);
    thread::scope(|sc| {
        let booting = sc.spawn(|| proc.boot());
        ha1.serve_plain_boot(&cfg);
        booting.join().unwrap().unwrap();
    });
    drop(ha1);
    let t = Instant::now();
    while proc.closed_reason().is_none() && t.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(10));
    }
    thread::scope(|sc| {
        let sending = sc.spawn(|| proc.send_process_event(ProcessEvent::Started, ProcessType::M0d));
        let mut ha2 = Peer::accept(&l);
        let req = ha2.ep();
        assert!(!req.first_request);
        ha2.reply(&req, -11, LinkDecision::Connected); // hax pacing a restart: EAGAIN
        assert!(matches!(sending.join().unwrap(), Err(SimError::Died(_))));
        ha2.expect_eof();
    });
    assert!(proc
        .died()
        .unwrap()
        .contains("!rep->hae_disconnected_previously"));
}

#[test]
fn a_clean_stop_waits_for_stopped_to_be_confirmed_and_reports_a_hang() {
    for confirmed in [true, false] {
        let (l, ep) = listen();
        let mut cfg = plain_config(9);
        cfg.timeouts.ack = Duration::from_millis(400);
        let (tx, rx) = crossbeam_channel::unbounded();
        cfg.events = Some(tx);
        let proc = SimProcess::connect(&ep, cfg.clone()).unwrap();
        let mut ha = Peer::accept(&l);
        thread::scope(|sc| {
            let booting = sc.spawn(|| proc.boot());
            ha.serve_plain_boot(&cfg);
            booting.join().unwrap().unwrap();
            ha.ack(6);
            let stopping = sc.spawn(|| proc.stop_clean());
            ha.expect_process_event(ProcessEvent::Stopping, &cfg);
            let stopped = ha.expect_process_event(ProcessEvent::Stopped, &cfg);
            ha.ack(stopped - 2); // STOPPING only
            if confirmed {
                ha.expect_silence(Duration::from_millis(100));
                assert!(
                    !stopping.is_finished(),
                    "m0_ha_link_flush waits for STOPPED"
                );
                ha.ack(stopped);
                stopping.join().unwrap().unwrap();
            } else {
                // HA dropped the link before writing STOPPED's confirmation: a hang
                let err = stopping.join().unwrap().unwrap_err();
                assert!(matches!(err, SimError::Timeout { .. }), "{err}");
                let evs = events_until(
                    &rx,
                    |k| matches!(k, SimEventKind::FlushHung { .. }),
                    Duration::from_secs(2),
                );
                assert_eq!(evs.last(), Some(&SimEventKind::FlushHung { tag: stopped }));
            }
            ha.expect_eof();
        });
    }
}

// ------------------------------------------------------------------ automatic HA peer

/// Serves every connection like a cooperative HA: replies rc 0 to entrypoints, answers
/// failure-vector requests and GETs, ACKs every message.
fn auto_ha(l: TcpListener) {
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            thread::spawn(move || {
                let mut tag = 1;
                while let Ok(frame) = read_frame(&mut c) {
                    let mut out = vec![];
                    match ToHa::decode(&frame).unwrap() {
                        ToHa::EpReq(req) => {
                            let link = if req.first_request {
                                LinkDecision::Connected
                            } else {
                                LinkDecision::Reused
                            };
                            out.push(FromHa::EpRep(ep_rep(req.seq, 0, link)));
                        }
                        ToHa::Msg { tag: t, msg } => {
                            out.push(FromHa::Ack { tag: t });
                            let body = match msg.body {
                                MsgBody::FailureVecReq { pool, cookie } => {
                                    Some(MsgBody::FailureVecRep {
                                        pool,
                                        cookie,
                                        notes: vec![],
                                    })
                                }
                                MsgBody::Nvec {
                                    nvec_type: NvecType::Get,
                                    id_of_get,
                                    notes,
                                    ..
                                } => Some(MsgBody::Nvec {
                                    nvec_type: NvecType::Set,
                                    id_of_get,
                                    ignore_same_state: 0,
                                    notes: notes
                                        .iter()
                                        .map(|n| Note::new(n.fid, ObjState::Online))
                                        .collect(),
                                }),
                                _ => None,
                            };
                            if let Some(body) = body {
                                out.push(FromHa::Msg {
                                    tag,
                                    msg: HaMsg::new(Fid::ZERO, Fid::ZERO, Fid::ZERO, body),
                                });
                                tag += 2;
                            }
                        }
                        ToHa::Ack { .. } => {}
                    }
                    for f in out {
                        if c.write_all(&f.encode().unwrap()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
}

#[test]
fn a_fleet_of_processes_boots_concurrently_with_timings() {
    let (l, ep) = listen();
    auto_ha(l);
    let mut base = plain_config(100);
    base.services = vec![(s(101), service_type::IOS)];
    base.pools = vec![pool(4), pool(5), pool(0x38)];
    let configs: Vec<SimConfig> = (0..40)
        .map(|i| {
            let mut c = gen::nth_config(&base, i, 3);
            c.get_fids = gen::config_fids(81, &c);
            c
        })
        .collect();
    let out = boot_many(&ep, configs, Duration::ZERO);
    for o in &out {
        assert!(
            o.result.is_ok(),
            "{}: {:?}",
            o.process_fid,
            o.result.as_ref().err()
        );
    }
    assert_eq!(out[39].process_fid, r(100 + 3 * 39));
    let sum = summarize(&out);
    assert_eq!(
        (sum.processes, sum.booted, sum.failed, sum.max_ep_attempts),
        (40, 40, 0, 1)
    );
    assert!(sum.boot_ms.max >= sum.boot_ms.p50 && sum.boot_ms.p50 > 0.0);
    for o in &out {
        o.process.as_ref().unwrap().stop_clean().unwrap();
    }
}

#[test]
fn cli_boots_prints_json_events_and_stops() {
    let (l, ep) = listen();
    auto_ha(l);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hax-m0d-sim"))
        .args([
            "--ha-endpoint",
            &ep,
            "--process-fid",
            "0x7200000000000001:0xc",
            "--pid",
            "77",
        ])
        .args([
            "--service",
            "0x7300000000000001:0xd:ios",
            "--pool",
            "0x6f00000000000001:0x4",
        ])
        .args([
            "--get-count",
            "81",
            "--count",
            "2",
            "--stob-error",
            "0x6400000000000001:0x33",
        ])
        .args(["--ha-resend-ms", "100", "--rpc-timeout-ms", "100"])
        .args(["--flush-timeout-ms", "5000", "--then", "stop", "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |ev: &str| lines.iter().filter(|v| v["event"] == ev).count();
    assert_eq!(
        (
            of("booted"),
            of("stopped"),
            of("stob_error_sent"),
            of("note")
        ),
        (2, 2, 2, 162)
    );
    assert!(lines
        .iter()
        .any(|v| v["event"] == "booted" && v["process"] == "0x7200000000000001:0xf"));
    let t = lines.iter().find(|v| v["event"] == "timings").unwrap();
    assert_eq!(t["summary"]["booted"], 2);
    // A refused endpoint is a failed boot with a non-zero exit code.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_hax-m0d-sim"))
        .args([
            "--ha-endpoint",
            "inet:tcp:10.1.1.1@22001",
            "--process-fid",
            "6",
            "--then",
            "exit",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn shared_state_is_usable_from_several_threads() {
    // SimProcess is Send + Sync: tests may wait for notes on one thread while another acts.
    fn assert_sync<T: Send + Sync>() {}
    assert_sync::<SimProcess>();
}

//! `timeout/<YYYYmmddHHMM.SS>` keys (UTC, as in the seed's README): when the time has come,
//! the RC leader moves the key's value into `eq/` (an envelope as is; anything else wrapped
//! as a TIMEOUT entry) and deletes the key, in one transaction.
use super::envelope::{self, Envelope};
use serde_json::json;

/// The prefix of timeout keys.
pub const PREFIX: &str = "timeout/";

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// When `timeout/YYYYmmddHHMM.SS` is due, in seconds since the Unix epoch (None: not such a
/// key, or not a real date).
pub fn due_at(key: &str) -> Option<i64> {
    let t = key.strip_prefix(PREFIX)?;
    let b = t.as_bytes();
    if b.len() != 15
        || b[12] != b'.'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 12 || c.is_ascii_digit())
    {
        return None;
    }
    let num = |from: usize, to: usize| t[from..to].parse::<i64>().ok();
    let (y, mo, d, h, mi, s) = (
        num(0, 4)?,
        num(4, 6)?,
        num(6, 8)?,
        num(8, 10)?,
        num(10, 12)?,
        num(13, 15)?,
    );
    if !(1..=12).contains(&mo)
        || d < 1
        || d > days_in_month(y, mo as u32) as i64
        || h > 23
        || mi > 59
        || s > 60
    {
        return None;
    }
    Some(days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + s)
}

/// The key of a timeout due at `unix_secs`.
pub fn key_for(unix_secs: i64) -> String {
    let (y, m, d) = civil_from_days(unix_secs.div_euclid(86_400));
    let r = unix_secs.rem_euclid(86_400);
    format!(
        "{PREFIX}{y:04}{m:02}{d:02}{:02}{:02}.{:02}",
        r / 3600,
        r % 3600 / 60,
        r % 60
    )
}

/// What a due timeout puts into `eq/`: its value if that is an envelope, else a TIMEOUT
/// entry naming the key and carrying the value.
pub fn eq_value(key: &str, raw: &[u8]) -> Vec<u8> {
    match Envelope::decode(raw) {
        Ok(_) => raw.to_vec(),
        Err(_) => {
            let value = String::from_utf8_lossy(raw).into_owned();
            Envelope::new(envelope::TIMEOUT, json!({"key": key, "value": value})).to_bytes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_timeout_key_is_utc() {
        // 2019-07-22 12:08:00 UTC
        assert_eq!(due_at("timeout/201907221208.00"), Some(1_563_797_280));
        assert_eq!(due_at("timeout/197001010000.00"), Some(0));
        assert_eq!(due_at("timeout/200002291230.59"), Some(951_827_459));
        assert_eq!(key_for(1_563_797_280), "timeout/201907221208.00");
        assert_eq!(key_for(951_827_459), "timeout/200002291230.59");
    }

    #[test]
    fn keys_and_times_round_trip() {
        for t in [0, 59, 86_399, 86_400, 1_700_000_000, 4_102_444_799] {
            assert_eq!(due_at(&key_for(t)), Some(t), "{t}");
        }
    }

    #[test]
    fn bad_timeout_keys_have_no_time() {
        for k in [
            "timeout/2019072212080",
            "timeout/201907221208:00",
            "timeout/201913221208.00",
            "timeout/201902291208.00",
            "timeout/201907222408.00",
            "timeout/20190722120x.00",
            "tmo/201907221208.00",
            "timeout/",
        ] {
            assert_eq!(due_at(k), None, "{k}");
        }
    }

    #[test]
    fn a_plain_value_is_wrapped_and_an_envelope_moves_as_is() {
        let wrapped = Envelope::decode(&eq_value("timeout/201907221208.00", b"tmo1")).unwrap();
        assert_eq!(wrapped.message_type, envelope::TIMEOUT);
        assert_eq!(wrapped.field("key"), Some("timeout/201907221208.00"));
        assert_eq!(wrapped.field("value"), Some("tmo1"));
        let env = br#"{"message_type": "STOB_IOQ_ERROR", "payload": {"sdev": "0x6400000000000001:0x5"}, "timestamp": 1}"#;
        assert_eq!(eq_value("timeout/201907221208.00", env), env.to_vec());
    }
}

//! Generated configurations: plausible configuration-object fids for an NVEC GET, the
//! configuration of the i-th process of a fleet, and `FID:TYPE` service specs.
use super::config::SimConfig;
use super::types::service_type;
use hax_fid::Fid;

/// `n` distinct configuration objects an m0d plausibly asks about: the root, a profile, a
/// node, the process itself, its services and pools, then sdevs, drives, pool versions and
/// object versions.
pub fn config_fids(n: usize, cfg: &SimConfig) -> Vec<Fid> {
    let mut out: Vec<Fid> = Vec::with_capacity(n);
    let push = |f: Fid, out: &mut Vec<Fid>| {
        if out.len() < n && !out.contains(&f) {
            out.push(f);
        }
    };
    let fixed = [
        Fid::typed(b't', 1, 0),
        Fid::typed(b'p', 1, 0),
        Fid::typed(b'n', 1, 2),
        cfg.process_fid,
    ];
    for f in fixed
        .into_iter()
        .chain(cfg.services.iter().map(|s| s.0))
        .chain(cfg.pools.iter().copied())
    {
        push(f, &mut out);
    }
    let kinds = [b'd', b'k', b'v', b'j'];
    let mut i = 0u64;
    while out.len() < n {
        push(
            Fid::typed(kinds[(i % 4) as usize], 1, 0x1000 + i / 4),
            &mut out,
        );
        i += 1;
    }
    out
}

/// The configuration of the `i`-th process of a fleet built from `base`: process and service
/// keys moved by `step * i`, the endpoint port and the pid by `i`. Pools and GET fids are
/// shared (regenerate GET fids per process with `config_fids` if they should follow).
pub fn nth_config(base: &SimConfig, i: usize, step: u64) -> SimConfig {
    let shift = |f: Fid| Fid::new(f.container, f.key.wrapping_add(step.wrapping_mul(i as u64)));
    let mut cfg = base.clone();
    cfg.process_fid = shift(base.process_fid);
    cfg.services = base.services.iter().map(|(f, t)| (shift(*f), *t)).collect();
    cfg.pid = base.pid.wrapping_add(i as u64);
    cfg.endpoint = match base.endpoint.rsplit_once('@') {
        Some((head, port)) => match port.parse::<u64>() {
            Ok(p) => format!("{head}@{}", p + i as u64),
            Err(_) => base.endpoint.clone(),
        },
        None => base.endpoint.clone(),
    };
    cfg
}

/// Parses a Motr service type: a number or one of `mds ios confd rms stats ha`.
pub fn parse_service_type(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    Some(match t.as_str() {
        "mds" => service_type::MDS,
        "ios" => service_type::IOS,
        "confd" => service_type::CONFD,
        "rms" => service_type::RMS,
        "stats" => service_type::STATS,
        "ha" => service_type::HA,
        _ => return t.parse().ok(),
    })
}

/// Parses `FID:TYPE` (e.g. `0x7300000000000001:0x9:ios` or `0x7300000000000001:0x9:2`).
pub fn parse_service_spec(spec: &str) -> Result<(Fid, u64), String> {
    let (fid, ty) = spec
        .rsplit_once(':')
        .ok_or_else(|| format!("{spec:?}: expected FID:TYPE"))?;
    let fid: Fid = fid.parse().map_err(|e| format!("{spec:?}: {e}"))?;
    let ty =
        parse_service_type(ty).ok_or_else(|| format!("{spec:?}: unknown service type {ty:?}"))?;
    Ok((fid, ty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_get_fids_are_distinct_and_start_with_the_basics() {
        let mut cfg = SimConfig::new(Fid::typed(b'r', 1, 6));
        cfg.services = vec![(Fid::typed(b's', 1, 7), 2)];
        cfg.pools = vec![Fid::typed(b'o', 1, 4)];
        let fids = config_fids(81, &cfg);
        assert_eq!(fids.len(), 81);
        let mut dedup = fids.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), 81);
        assert_eq!(fids[0], Fid::typed(b't', 1, 0));
        assert!(fids.contains(&cfg.process_fid) && fids.contains(&Fid::typed(b'o', 1, 4)));
        assert_eq!(config_fids(2, &cfg).len(), 2);
    }

    #[test]
    fn fleet_configs_shift_fids_ports_and_pids() {
        let mut base = SimConfig::new(Fid::typed(b'r', 1, 6));
        base.endpoint = "inet:tcp:127.0.0.1@23006".into();
        base.pid = 1000;
        base.services = vec![(Fid::typed(b's', 1, 7), 2)];
        let c = nth_config(&base, 2, 3);
        assert_eq!(c.process_fid, Fid::typed(b'r', 1, 12));
        assert_eq!(c.services, vec![(Fid::typed(b's', 1, 13), 2)]);
        assert_eq!(c.endpoint, "inet:tcp:127.0.0.1@23008");
        assert_eq!(c.pid, 1002);
    }

    #[test]
    fn service_specs_parse_names_and_numbers() {
        let s = Fid::typed(b's', 1, 9);
        assert_eq!(
            parse_service_spec("0x7300000000000001:0x9:ios").unwrap(),
            (s, 2)
        );
        assert_eq!(
            parse_service_spec("0x7300000000000001:0x9:17").unwrap(),
            (s, 17)
        );
        assert!(parse_service_spec("0x7300000000000001:0x9:bogus").is_err());
        assert!(parse_service_spec("ios").is_err());
    }
}

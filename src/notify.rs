//! hax's readiness: told to systemd (`Type=notify`, see `examples/systemd/hax.service.in`):
//! `READY=1` once hax serves, `STOPPING=1` when its shutdown begins (both do nothing when hax
//! does not run under a service manager, `NOTIFY_SOCKET` unset, and a failed send is only
//! logged); and kept for `GET /readyz` ([`readiness`], served by WatchIngest).
use crate::fid::Fid;
use sd_notify::NotifyState;
use std::sync::Mutex;

/// Where hax is in its life, as `GET /readyz` answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Not ready yet: hax is learning who it is, or Motr's HA interface is starting.
    Starting,
    /// The HA interface is started (hax's own entrypoint request was answered): hax serves.
    Ready { process: Fid, endpoint: String },
    /// The shutdown began.
    Stopping,
}

static STATE: Mutex<Readiness> = Mutex::new(Readiness::Starting);

fn set(r: Readiness) {
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) = r;
}

/// The process's readiness now.
pub fn readiness() -> Readiness {
    STATE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn send(state: NotifyState, what: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none_or(|s| s.is_empty()) {
        return;
    }
    if let Err(e) = sd_notify::notify(&[state]) {
        log::warn!("hax: could not tell systemd {what}: {e}");
    }
}

/// hax is ready: `GET /readyz` answers 200, and systemd is told (`READY=1`).
pub fn ready(process: Fid, endpoint: &str) {
    set(Readiness::Ready {
        process,
        endpoint: endpoint.to_string(),
    });
    send(NotifyState::Ready, "hax is ready");
}

/// hax is stopping: `GET /readyz` answers 503 again, and systemd is told (`STOPPING=1`).
pub fn stopping() {
    set(Readiness::Stopping);
    send(NotifyState::Stopping, "hax is stopping");
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_a_notify_socket_nothing_happens() {
        // The test runner is not a systemd service: both calls must be silent no-ops.
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            super::ready(
                crate::fid::Fid::typed(b'r', 1, 6),
                "inet:tcp:127.0.0.1@22001",
            );
            super::stopping();
        }
    }
}

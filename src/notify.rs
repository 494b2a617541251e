//! Readiness for systemd (`Type=notify`, see `examples/systemd/hax.service.in`): `READY=1`
//! once hax serves, `STOPPING=1` when its shutdown begins. Both do nothing when hax does not
//! run under a service manager (`NOTIFY_SOCKET` unset), and a failed send is only logged.
use sd_notify::NotifyState;

fn send(state: NotifyState, what: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none_or(|s| s.is_empty()) {
        return;
    }
    if let Err(e) = sd_notify::notify(&[state]) {
        log::warn!("hax: could not tell systemd {what}: {e}");
    }
}

/// Tells systemd that hax is ready (`READY=1`).
pub fn ready() {
    send(NotifyState::Ready, "hax is ready");
}

/// Tells systemd that hax is stopping (`STOPPING=1`).
pub fn stopping() {
    send(NotifyState::Stopping, "hax is stopping");
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_a_notify_socket_nothing_happens() {
        // The test runner is not a systemd service: both calls must be silent no-ops.
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            super::ready();
            super::stopping();
        }
    }
}

//! Supervision: hax is never a silent, half-dead daemon.
//!
//! Every long-lived task is owned by something that stops it at shutdown (an actor's context,
//! or a handle the daemon keeps). When an actor or a task dies while hax is not stopping (a
//! panic anywhere outside the FFI callbacks' own guards, or a loop that returned), the daemon
//! is told (`fatal`), logs why, runs its bounded shutdown and exits with [`EXIT_FATAL`], so
//! that systemd (`Restart=on-failure`) starts a fresh one. Nothing is restarted in place: a
//! fresh hax rebuilds everything from Consul, and Motr sends it what was not confirmed.
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use tokio::sync::watch;

/// The exit code after a fatal failure (EX_SOFTWARE).
pub const EXIT_FATAL: i32 = 70;

static FATAL: OnceLock<watch::Sender<Option<String>>> = OnceLock::new();
static STOPPING: AtomicBool = AtomicBool::new(false);

fn channel() -> &'static watch::Sender<Option<String>> {
    FATAL.get_or_init(|| watch::channel(None).0)
}

/// Something hax cannot go on without died: shut down and exit non-zero. Only the first
/// reason is kept; nothing happens once hax is stopping anyway.
pub fn fatal(reason: String) {
    if STOPPING.load(Ordering::SeqCst) {
        return;
    }
    channel().send_if_modified(|r| {
        if r.is_some() {
            return false;
        }
        log::error!("fatal: {reason}; hax shuts down and exits {EXIT_FATAL}");
        *r = Some(reason);
        true
    });
}

/// hax is shutting down: tasks ending from now on are expected.
pub fn stopping() {
    STOPPING.store(true, Ordering::SeqCst);
}

/// Resolves with the reason once something fatal happened.
pub async fn wait_fatal() -> String {
    let mut rx = channel().subscribe();
    loop {
        if let Some(r) = rx.borrow_and_update().clone() {
            return r;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Makes every panic outside an FFI callback's guard fatal (after the usual report). A panic
/// inside a guard is caught and logged there; Motr gets its confirmation anyway.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        if crate::ffi::in_guard() {
            return;
        }
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        fatal(format!("panic in thread {thread}{at}: {what}"));
    }));
}

/// Spawns a task that must run as long as hax does, on the current arbiter: if it ever
/// returns while hax is not stopping, that is fatal. The handle stops it at shutdown.
pub fn spawn_task<F>(name: &'static str, fut: F) -> actix_rt::task::JoinHandle<()>
where
    F: Future<Output = ()> + 'static,
{
    actix::spawn(async move {
        fut.await;
        fatal(format!("task {name} ended"));
    })
}

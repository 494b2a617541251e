//! hax's own handling of the signals that stop it (SIGTERM, SIGINT, SIGHUP).
//!
//! Libraries loaded with libmotr install handlers at load time, before `main` runs: Debian
//! 12's libfabric pulls in libinfinipath, whose constructor makes SIGTERM and SIGINT call
//! `exit(1)`. A handler-based signal library (tokio's) calls the handler that was there
//! before, so hax would die with status 1 and no shutdown. hax therefore never lets a handler
//! run: `block` blocks these signals in the calling thread first thing in `main`, so every
//! thread created afterwards (actix's, Motr's locality threads) inherits the block, and one
//! thread takes them with `sigwait`. Whatever a library installed is never called.
use nix::sys::signal::{SigSet, Signal};
use tokio::sync::watch;

/// The signals that ask hax to stop.
fn stop_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Blocks the stop signals in the calling thread (and every thread it creates later).
/// Call it in `main` before anything starts a thread.
pub fn block() -> Result<(), nix::Error> {
    stop_set().thread_block()
}

/// Where the stop request is announced: `true` once a stop signal arrived.
#[derive(Clone)]
pub struct StopSignal(watch::Receiver<Option<Signal>>);

impl StopSignal {
    /// Resolves when a stop signal has arrived (at once if one already did).
    pub async fn wait(&mut self) -> Signal {
        loop {
            if let Some(s) = *self.0.borrow_and_update() {
                return s;
            }
            if self.0.changed().await.is_err() {
                // The waiter thread is gone: no signal will ever come.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Starts the thread that takes the stop signals with `sigwait`. The signals must have been
/// blocked with [`block`] in every thread (done by `main` before any thread starts).
pub fn spawn_waiter() -> std::io::Result<StopSignal> {
    let (tx, rx) = watch::channel(None);
    std::thread::Builder::new()
        .name("hax-signals".into())
        .spawn(move || {
            let set = stop_set();
            loop {
                match set.wait() {
                    Ok(sig) => {
                        log::info!("hax: {sig} received");
                        if tx.send(Some(sig)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        log::error!("hax: sigwait failed ({e}); signals are not handled");
                        return;
                    }
                }
            }
        })?;
    Ok(StopSignal(rx))
}

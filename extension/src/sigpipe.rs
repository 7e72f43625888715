//! SIGPIPE kept away from the host.
//!
//! Writing to a socket whose peer has closed raises SIGPIPE, whose default action
//! kills the process. Rust programs ignore it at start, but promduck runs inside other
//! people's processes: the DuckDB CLI keeps the default, so a server that closes the
//! connection while a request body is being sent would kill the CLI without a word.
//! promduck does not change the host's disposition (the CLI relies on it for
//! `duckdb | head`); it blocks SIGPIPE in the threads that do its network I/O — the
//! runtimes' threads for good, and a DuckDB thread while it waits in `block_on` —
//! so the write fails with EPIPE, an ordinary error, instead.

use std::mem::MaybeUninit;

fn sigpipe_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given; sigaddset then adds a valid
    // signal number to the initialised set.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
        set.assume_init()
    }
}

/// Blocks SIGPIPE in the calling thread for the rest of its life (runtime threads).
pub fn block_in_this_thread() {
    let set = sigpipe_set();
    // SAFETY: a valid, initialised set; the old mask is not asked for (null).
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// SIGPIPE blocked in the calling thread until dropped; a SIGPIPE raised meanwhile is
/// discarded, and the thread's previous mask restored.
pub struct Blocked {
    old: libc::sigset_t,
}

impl Blocked {
    pub fn new() -> Blocked {
        let set = sigpipe_set();
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: a valid set; `old` receives the previous mask (initialised by the call).
        let old = unsafe {
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr());
            old.assume_init()
        };
        Blocked { old }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let set = sigpipe_set();
        // SAFETY: `self.old` is the mask pthread_sigmask returned; sigismember reads it.
        let was_blocked = unsafe { libc::sigismember(&self.old, libc::SIGPIPE) } == 1;
        if !was_blocked {
            // Discard a SIGPIPE raised for this thread while it was blocked (with a zero
            // timeout: never waits), so unblocking it does not deliver it.
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid set and timespec; the signal info is not asked for (null).
            unsafe {
                while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGPIPE {}
            }
        }
        // SAFETY: restores the mask this thread had before `new`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sigpipe_while_blocked_is_discarded_not_delivered() {
        std::thread::spawn(|| {
            // SAFETY: the default action for SIGPIPE in this test process: the test
            // process dies if the signal is ever delivered.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            {
                let _b = Blocked::new();
                // SAFETY: raising a signal at the calling thread.
                unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGPIPE) };
            }
            // Still alive: it was discarded; and the mask is as before.
            let mut now = MaybeUninit::<libc::sigset_t>::uninit();
            // SAFETY: reads the current mask into `now`.
            let now = unsafe {
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), now.as_mut_ptr());
                now.assume_init()
            };
            // SAFETY: `now` is initialised.
            assert_eq!(unsafe { libc::sigismember(&now, libc::SIGPIPE) }, 0);
            // SAFETY: back to ignoring it, as the Rust test harness had it.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        })
        .join()
        .unwrap();
    }
}

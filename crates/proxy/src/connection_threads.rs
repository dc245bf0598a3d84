//! Client connections are served on one single-threaded runtime per core, each
//! accepting on its own copy of every listening socket.
//!
//! Everything a client connection starts (its server connections, their hyper tasks,
//! HTTP/2 stream tasks, the lingering close) is spawned where the connection runs, so
//! the two legs of an exchange wake each other on one thread: no work stealing, no
//! waking of the other worker to look for work, no task moving between cores.
//! Against tokio's multi-threaded scheduler (two workers on two cores) that took
//! keep-alive c=16 from 62.0–97.8 to 57.7–65.5 µs of proxy CPU per request, and from
//! 11,332–17,410 to 17,686–19,949 req/s (four interleaved runs each; ARCHITECTURE.md,
//! "Decisions").
//!
//! Each thread registers a duplicate of each listening socket with its own reactor,
//! and the kernel wakes every thread waiting on a socket for each new connection; the
//! first to call `accept` takes it. A busy thread comes late, so new connections go
//! to the threads with time to spare. The front ends (API, web UI, console) stay on
//! the process's main runtime.

use std::io;
use std::net::TcpListener as StdTcpListener;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The connection threads; dropping this stops them, and the connections they serve
/// end as they would when a runtime shuts down.
pub(crate) struct ConnectionThreads {
    threads: Vec<ConnectionThread>,
}

struct ConnectionThread {
    runtime: Handle,
    stop: Option<oneshot::Sender<()>>,
    /// Says (by closing) that the thread's runtime, and every connection on it, is gone.
    stopped: std::sync::mpsc::Receiver<()>,
}

/// How long dropping the threads waits for their connections to be dropped. The
/// process must not exit while a connection thread still frees its TLS objects:
/// OpenSSL's exit handler would free the library under it. Dropping a runtime's
/// connections takes milliseconds; the bound is for a destructor that blocks.
const STOP_WAIT: Duration = Duration::from_secs(2);

impl ConnectionThreads {
    /// One thread per core this process may run on.
    pub(crate) fn start() -> io::Result<ConnectionThreads> {
        let count = std::thread::available_parallelism().map_or(1, usize::from);
        Self::start_with(count)
    }

    pub(crate) fn start_with(count: usize) -> io::Result<ConnectionThreads> {
        let mut threads = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stop_requested) = oneshot::channel::<()>();
            let (gone, stopped) = std::sync::mpsc::channel::<()>();
            std::thread::Builder::new()
                .name(format!("connections-{index}"))
                .spawn(move || {
                    // Returns when the sender is dropped; dropping the runtime then
                    // drops the connections' tasks.
                    let _ = runtime.block_on(stop_requested);
                    drop(runtime);
                    drop(gone);
                })?;
            threads.push(ConnectionThread {
                runtime: handle,
                stop: Some(stop),
                stopped,
            });
        }
        Ok(ConnectionThreads { threads })
    }

    /// Runs `accept_loop` on every thread, each with its own copy of `socket`
    /// registered with that thread's reactor.
    pub(crate) fn accept_on_each<F, Fut>(
        &self,
        socket: &StdTcpListener,
        accept_loop: F,
    ) -> io::Result<Vec<tokio::task::JoinHandle<()>>>
    where
        F: Fn(tokio::net::TcpListener) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut loops = Vec::with_capacity(self.threads.len());
        for thread in &self.threads {
            let copy = socket.try_clone()?;
            // The registration must happen inside the runtime whose reactor owns it.
            let listener = {
                let _entered = thread.runtime.enter();
                tokio::net::TcpListener::from_std(copy)?
            };
            loops.push(thread.runtime.spawn(accept_loop(listener)));
        }
        Ok(loops)
    }
}

impl Drop for ConnectionThreads {
    fn drop(&mut self) {
        for thread in &mut self.threads {
            drop(thread.stop.take());
        }
        let deadline = Instant::now() + STOP_WAIT;
        for thread in &self.threads {
            let left = deadline.saturating_duration_since(Instant::now());
            // Disconnected when the thread is done; a timeout leaves it running.
            let _ = thread.stopped.recv_timeout(left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};

    #[test]
    fn every_thread_accepts_on_the_shared_socket_and_stops_when_dropped() {
        let threads = ConnectionThreads::start_with(2).unwrap();
        let socket = StdTcpListener::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let address = socket.local_addr().unwrap();
        let accepted_on = Arc::new(Mutex::new(HashSet::new()));
        let seen = Arc::clone(&accepted_on);
        let loops = threads
            .accept_on_each(&socket, move |listener| {
                let seen = Arc::clone(&seen);
                async move {
                    loop {
                        let Ok((mut stream, _)) = listener.accept().await else {
                            return;
                        };
                        let name = std::thread::current().name().unwrap_or("").to_owned();
                        seen.lock().unwrap().insert(name.clone());
                        use tokio::io::AsyncWriteExt;
                        let _ = stream.write_all(name.as_bytes()).await;
                    }
                }
            })
            .unwrap();
        drop(socket);
        assert_eq!(loops.len(), 2);

        // Connections keep being answered, on the connection threads, until both have
        // taken one (which thread wins each race is the kernel's choice).
        let mut answers = 0;
        while accepted_on.lock().unwrap().len() < 2 {
            answers += 1;
            assert!(answers < 2_000, "one thread never accepted");
            let mut client = std::net::TcpStream::connect(address).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            client.write_all(b"?").unwrap();
            let mut name = String::new();
            client.read_to_string(&mut name).ok();
            // Each answer names a connection thread.
            assert!(name.starts_with("connections-"), "{name:?}");
            if answers % 8 == 0 {
                // Occupy whichever thread is quicker, so the other gets a turn.
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        // Dropped: by the time drop returns, the threads' runtimes are gone, and with
        // them the accept loops and their copies of the socket, so the port refuses.
        drop(threads);
        let refused = std::net::TcpStream::connect(address);
        assert!(
            refused.is_err(),
            "still accepting after the threads were stopped"
        );
    }
}

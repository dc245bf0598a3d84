//! Client connections are served on one single-threaded runtime per core.
//!
//! Everything a client connection starts (its server connections, their hyper tasks,
//! HTTP/2 stream tasks, the lingering close) is spawned where the connection runs, so
//! the two legs of an exchange wake each other on one thread: no work stealing, no
//! waking of the other worker to look for work, no task moving between cores.
//! Against tokio's multi-threaded scheduler (two workers on two cores) that took
//! keep-alive c=16 from 63.0–67.3 to 54.0–58.2 µs of proxy CPU per request
//! (ARCHITECTURE.md, "Decisions").
//!
//! The listeners' accept loops run on the first connection thread and hand each
//! accepted connection to the thread serving the fewest connections (in turn when
//! several serve as few). Threads that raced to `accept` on a shared socket did not
//! spread the load: a client opening sixteen connections at once found them all
//! taken by whichever thread woke first. Accept loops on the main runtime woke one of
//! its parked workers for every connection.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How long dropping the threads waits for their connections to be dropped. The
/// process must not exit while a connection thread still frees its TLS objects:
/// OpenSSL's exit handler would free the library under it. Dropping a runtime's
/// connections takes milliseconds; the bound is for a destructor that blocks.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// The connection threads; dropping this stops them, and the connections they serve
/// end as they would when a runtime shuts down.
pub(crate) struct ConnectionThreads {
    dispatch: Arc<Dispatch>,
    stops: Vec<ThreadStop>,
}

/// Where connections go: shared with the accept loops, which run on the threads
/// themselves and so must not own them.
pub(crate) struct Dispatch {
    threads: Vec<ConnectionThread>,
    /// Where the search for the least busy thread starts: ties go round in turn.
    next: AtomicUsize,
}

struct ConnectionThread {
    runtime: Handle,
    /// Client connections being served on this thread.
    connections: Arc<AtomicUsize>,
}

struct ThreadStop {
    stop: Option<oneshot::Sender<()>>,
    /// Says (by closing) that the thread's runtime, and every connection on it, is gone.
    stopped: std::sync::mpsc::Receiver<()>,
}

impl ConnectionThreads {
    /// One thread per core this process may run on.
    pub(crate) fn start() -> io::Result<ConnectionThreads> {
        let count = std::thread::available_parallelism().map_or(1, usize::from);
        Self::start_with(count)
    }

    pub(crate) fn start_with(count: usize) -> io::Result<ConnectionThreads> {
        let mut threads = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
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
                connections: Arc::new(AtomicUsize::new(0)),
            });
            stops.push(ThreadStop {
                stop: Some(stop),
                stopped,
            });
        }
        Ok(ConnectionThreads {
            dispatch: Arc::new(Dispatch {
                threads,
                next: AtomicUsize::new(0),
            }),
            stops,
        })
    }

    pub(crate) fn dispatch(&self) -> &Arc<Dispatch> {
        &self.dispatch
    }

    /// Runs `accept_loop` on the first connection thread, with `socket` moved to that
    /// thread's reactor: an accept then wakes a thread that is often awake anyway,
    /// where on the main runtime each one woke a parked worker (35–45 µs of CPU per
    /// connection, measured).
    pub(crate) fn accept_on_first<F, Fut>(
        &self,
        socket: tokio::net::TcpListener,
        accept_loop: F,
    ) -> io::Result<tokio::task::JoinHandle<()>>
    where
        F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let socket = socket.into_std()?;
        let first = &self.dispatch.threads[0].runtime;
        let socket = {
            let _entered = first.enter();
            tokio::net::TcpListener::from_std(socket)?
        };
        Ok(first.spawn(accept_loop(socket)))
    }
}

impl Dispatch {
    /// Serves `stream` with `serve` on the thread serving the fewest connections.
    pub(crate) fn serve<F, Fut>(&self, stream: TcpStream, serve: F) -> io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let thread = self.least_busy();
        // Registered again, with the reactor of the thread that will poll it.
        let stream = stream.into_std()?;
        let connections = Arc::clone(&thread.connections);
        connections.fetch_add(1, Ordering::Relaxed);
        thread.runtime.spawn(async move {
            let _served = Served(connections);
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(error) => tracing::warn!("cannot serve an accepted client: {error}"),
            }
        });
        Ok(())
    }

    fn least_busy(&self) -> &ConnectionThread {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.threads.len();
        (0..count)
            .map(|offset| &self.threads[(start + offset) % count])
            .min_by_key(|thread| thread.connections.load(Ordering::Relaxed))
            .expect("at least one connection thread")
    }

    #[cfg(test)]
    fn connections(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|thread| thread.connections.load(Ordering::Relaxed))
            .collect()
    }
}

/// Counts a connection out of its thread when its task ends or is dropped.
struct Served(Arc<AtomicUsize>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for ConnectionThreads {
    fn drop(&mut self) {
        for thread in &mut self.stops {
            drop(thread.stop.take());
        }
        let deadline = Instant::now() + STOP_WAIT;
        for thread in &self.stops {
            let left = deadline.saturating_duration_since(Instant::now());
            // Disconnected when the thread is done; a timeout leaves it running.
            let _ = thread.stopped.recv_timeout(left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection served on `threads` that answers with its thread's name and then
    /// holds the connection until the client closes it.
    async fn connect_and_name(
        threads: &ConnectionThreads,
        listener: &tokio::net::TcpListener,
    ) -> (TcpStream, String) {
        let address = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(address).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        threads
            .dispatch()
            .serve(accepted, |mut stream| async move {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                stream.write_all(name.as_bytes()).await.unwrap();
                stream.write_all(b"\n").await.unwrap();
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            })
            .unwrap();
        let mut name = Vec::new();
        while !name.ends_with(b"\n") {
            let mut byte = [0u8; 1];
            assert_eq!(client.read(&mut byte).await.unwrap(), 1);
            name.push(byte[0]);
        }
        (client, String::from_utf8(name).unwrap().trim().to_owned())
    }

    #[tokio::test]
    async fn connections_go_to_the_least_busy_thread_and_stop_with_the_threads() {
        let threads = ConnectionThreads::start_with(2).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();

        // Sixteen at once, all held open: eight on each thread.
        let mut held = Vec::new();
        for _ in 0..16 {
            held.push(connect_and_name(&threads, &listener).await);
        }
        let on_first = held.iter().filter(|(_, n)| n == "connections-0").count();
        let on_second = held.iter().filter(|(_, n)| n == "connections-1").count();
        assert_eq!((on_first, on_second), (8, 8));
        assert_eq!(threads.dispatch().connections(), vec![8, 8]);

        // Six close on the first thread: the next six go there.
        let mut closed = 0;
        held.retain(|(_, name)| {
            let close = name == "connections-0" && closed < 6;
            closed += usize::from(close);
            !close
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads.dispatch().connections() != vec![2, 8] {
            let now = threads.dispatch().connections();
            assert!(Instant::now() < deadline, "{now:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..6 {
            let (client, name) = connect_and_name(&threads, &listener).await;
            assert_eq!(name, "connections-0");
            held.push((client, name));
        }

        // Dropped: by the time drop returns, the threads' runtimes are gone and every
        // connection on them is closed.
        drop(threads);
        for (mut client, name) in held {
            let mut rest = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(1), client.read_to_end(&mut rest));
            assert!(
                matches!(read.await, Ok(Ok(0))),
                "a connection on {name} is still open"
            );
        }
    }
}

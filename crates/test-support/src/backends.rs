//! Backend servers for tests, each on its own thread-free tokio tasks.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

async fn listen() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a test backend on 127.0.0.1")
}

fn serve<F, Fut>(listener: TcpListener, accepted: Arc<AtomicUsize>, handle: F) -> JoinHandle<()>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, SeqCst);
            tokio::spawn(handle(stream));
        }
    })
}

macro_rules! server_common {
    ($t:ty) => {
        impl $t {
            pub fn addr(&self) -> SocketAddr {
                self.addr
            }
            /// Connections accepted so far.
            pub fn accepted(&self) -> usize {
                self.accepted.load(SeqCst)
            }
        }
        impl Drop for $t {
            fn drop(&mut self) {
                self.task.abort();
            }
        }
    };
}

/// Echoes every byte back; on end of file, finishes echoing and shuts down its write side.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start() -> Self {
        let listener = listen().await;
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = serve(listener, Arc::clone(&accepted), |mut s| async move {
            let (mut r, mut w) = s.split();
            if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                let _ = w.shutdown().await;
            }
        });
        EchoServer {
            addr,
            accepted,
            task,
        }
    }
}
server_common!(EchoServer);

/// Writes its name and a newline, then closes (or holds the connection open).
#[derive(Debug)]
pub struct NamedServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl NamedServer {
    /// Writes its name and closes.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, false).await
    }

    /// Writes its name and keeps the connection open until the client closes.
    pub async fn start_holding(name: &str) -> Self {
        Self::start_with(name, true).await
    }

    async fn start_with(name: &str, hold: bool) -> Self {
        let listener = listen().await;
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let line = format!("{name}\n");
        let task = serve(listener, Arc::clone(&accepted), move |mut s| {
            let line = line.clone();
            async move {
                let _ = s.write_all(line.as_bytes()).await;
                if hold {
                    let mut sink = [0u8; 64];
                    while let Ok(n) = s.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                    return;
                }
                let _ = s.shutdown().await;
                // Wait for the client's close so our FIN is not followed by a reset.
                let mut sink = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut sink)).await;
            }
        });
        NamedServer {
            addr,
            accepted,
            task,
        }
    }
}
server_common!(NamedServer);

/// Reads until end of file, then answers `<bytes> <sha256-hex>\n` and closes:
/// proves that a half-closed client still gets its reply.
#[derive(Debug)]
pub struct DrainThenReply {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl DrainThenReply {
    pub async fn start() -> Self {
        let listener = listen().await;
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = serve(listener, Arc::clone(&accepted), |mut s| async move {
            let mut hasher = sha2::Sha256::new();
            let mut total = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        hasher.update(&buf[..n]);
                        total += n;
                    }
                    Err(_) => return,
                }
            }
            let reply = format!("{total} {}\n", crate::hex(&hasher.finalize()));
            let _ = s.write_all(reply.as_bytes()).await;
            let _ = s.shutdown().await;
        });
        DrainThenReply {
            addr,
            accepted,
            task,
        }
    }
}
server_common!(DrainThenReply);

/// Accepts and holds every connection open without reading, until the client closes.
#[derive(Debug)]
pub struct HoldServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HoldServer {
    pub async fn start() -> Self {
        let listener = listen().await;
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = serve(listener, Arc::clone(&accepted), |mut s| async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
        HoldServer {
            addr,
            accepted,
            task,
        }
    }
}
server_common!(HoldServer);

/// A listener on 127.0.0.1 whose accept queue is full and which never accepts:
/// a connect to it never completes (the kernel drops the SYN), like a host that
/// went silent. Built on loopback, so no traffic leaves the machine.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    _listener: Socket,
    _fillers: Vec<std::net::TcpStream>,
}

impl Blackhole {
    pub fn start() -> io::Result<Self> {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        listener.listen(0)?;
        let addr = listener
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an inet address"))?;
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => fillers.push(s),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Ok(Blackhole {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("accept queue never filled"))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A UDP server that answers every datagram with `NAME:` followed by the datagram.
#[derive(Debug)]
pub struct UdpNamedEcho {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl UdpNamedEcho {
    pub async fn start(name: &str) -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind a UDP test backend on 127.0.0.1");
        let addr = socket.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let prefix = format!("{name}:").into_bytes();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                counter.fetch_add(1, SeqCst);
                let mut reply = prefix.clone();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, from).await;
            }
        });
        UdpNamedEcho {
            addr,
            accepted,
            task,
        }
    }
}
server_common!(UdpNamedEcho);

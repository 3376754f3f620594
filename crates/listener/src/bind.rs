//! Binding listen sockets the way a load balancer on a VRRP node needs:
//! IP_FREEBIND so a backup can listen on a VIP it does not hold yet, and
//! SO_REUSEADDR so a restart does not wait for TIME_WAIT. Not SO_REUSEPORT: two
//! daemons on one port must fail loudly, not split the traffic silently.
//!
//! A failure says what to do about it, in plain words.
//!
//! Accepted sockets inherit TCP_NODELAY and the keepalive settings of their
//! listening socket on Linux, so those are set once on the listener
//! ([`ListenerOptions`]) instead of five setsockopt(2) calls per connection.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, SockRef, Socket, Type};
use tandem_core::{ListenAddress, Protocol};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::holder;

/// The listen backlog: the kernel caps it at net.core.somaxconn.
const BACKLOG: i32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {protocol} {address}: address already in use{held_by}{advice}")]
    InUse {
        protocol: Protocol,
        address: ListenAddress,
        held_by: String,
        advice: String,
    },
    #[error("cannot listen on {protocol} {address}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)")]
    PermissionDenied {
        protocol: Protocol,
        address: ListenAddress,
    },
    #[error("cannot listen on {protocol} {address}: {source}")]
    Other {
        protocol: Protocol,
        address: ListenAddress,
        source: io::Error,
    },
}

/// Binds and listens on a TCP address; the socket is non-blocking, ready for tokio.
pub fn bind_tcp(address: ListenAddress) -> Result<std::net::TcpListener, BindError> {
    let socket = listen_socket(address, Protocol::Tcp).and_then(|s| {
        // Inherited by every accepted socket.
        s.set_nodelay(true)?;
        s.listen(BACKLOG)?;
        Ok(s)
    });
    socket
        .map(Into::into)
        .map_err(|e| explain(e, Protocol::Tcp, address))
}

/// Binds a UDP socket on `address`; non-blocking.
pub fn bind_udp(address: ListenAddress) -> Result<std::net::UdpSocket, BindError> {
    listen_socket(address, Protocol::Udp)
        .map(Into::into)
        .map_err(|e| explain(e, Protocol::Udp, address))
}

fn listen_socket(address: ListenAddress, protocol: Protocol) -> io::Result<Socket> {
    let addr: SocketAddr = address.socket_addr();
    let ty = match protocol {
        Protocol::Tcp => Type::STREAM,
        Protocol::Udp => Type::DGRAM,
    };
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv4() {
        socket.set_freebind(true)?;
    } else {
        socket.set_only_v6(true)?;
        socket.set_freebind_ipv6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// What the listening socket hands down to the sockets it accepts: TCP_NODELAY
/// always, and the service's keepalive choice, which a reload may change.
///
/// A change is made on the listener, so only connections that complete their
/// handshake afterwards inherit it; those already in the accept queue carry
/// the old settings. So after each change the accepted sockets are checked
/// (getsockopt) and fixed until the first one that came with the right
/// settings: the queue is first in, first out, so every later one did too.
#[derive(Debug)]
pub(crate) struct ListenerOptions {
    /// The keepalive choice made on the listener; `None` before the first.
    keepalive: Option<bool>,
    /// Whether accepted sockets may still predate the last change.
    checking: bool,
}

impl ListenerOptions {
    /// Sets TCP_NODELAY on `listener`: [`bind_tcp`] did already, but a listener
    /// may come from elsewhere.
    pub(crate) fn new(listener: &TcpListener) -> Self {
        if let Err(e) = SockRef::from(listener).set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY on the listening socket");
        }
        ListenerOptions {
            keepalive: None,
            checking: true,
        }
    }

    /// Makes sure `accepted` and the sockets accepted after it have
    /// TCP_NODELAY and keepalive as `keepalive` says.
    pub(crate) fn apply(&mut self, listener: &TcpListener, accepted: &TcpStream, keepalive: bool) {
        if self.keepalive != Some(keepalive) {
            set_keepalive(&SockRef::from(listener), keepalive);
            self.keepalive = Some(keepalive);
            self.checking = true;
        }
        if !self.checking {
            return;
        }
        let socket = SockRef::from(accepted);
        let nodelay = socket.nodelay().unwrap_or(false);
        let keepalive_on = socket.keepalive().unwrap_or(!keepalive);
        if nodelay && keepalive_on == keepalive {
            self.checking = false;
            return;
        }
        let _ = socket.set_nodelay(true);
        set_keepalive(&socket, keepalive);
    }
}

fn set_keepalive(socket: &SockRef<'_>, on: bool) {
    let result = if on {
        socket.set_tcp_keepalive(&tandem_forward::keepalive_params())
    } else {
        socket.set_keepalive(false)
    };
    if let Err(e) = result {
        debug!(error = %e, "cannot set TCP keepalive");
    }
}

fn explain(error: io::Error, protocol: Protocol, address: ListenAddress) -> BindError {
    match error.kind() {
        io::ErrorKind::AddrInUse => {
            let port = address.socket_addr().port();
            let held_by = match holder::find(protocol, port) {
                Some(holder::PortHolder {
                    bound,
                    process: Some((pid, name)),
                }) => format!(" ({name}, pid {pid}, listens on {bound})"),
                Some(holder::PortHolder {
                    bound,
                    process: None,
                }) => format!(" (another process listens on {bound}; run as root to see which)"),
                None => String::new(),
            };
            let advice = if port == 6443 {
                ". On a kubeadm control-plane node kube-apiserver already listens on 6443: \
                 listen on another port such as 8443 (and use it in --control-plane-endpoint), \
                 or start kube-apiserver with --bind-address set to the node's own IP"
                    .to_owned()
            } else {
                String::new()
            };
            BindError::InUse {
                protocol,
                address,
                held_by,
                advice,
            }
        }
        io::ErrorKind::PermissionDenied => BindError::PermissionDenied { protocol, address },
        _ => BindError::Other {
            protocol,
            address,
            source: error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_in_use_names_the_holder() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = ListenAddress(taken.local_addr().unwrap());
        let err = bind_tcp(address).unwrap_err().to_string();
        assert!(err.contains("address already in use"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(!err.contains("kubeadm"), "{err}");
    }

    #[test]
    fn freebind_allows_an_address_not_on_this_host() {
        // 198.18.0.0/15 is the benchmarking range, held by no interface here.
        let l = bind_tcp(ListenAddress("198.18.255.254:0".parse().unwrap())).unwrap();
        assert_eq!(
            l.local_addr().unwrap().ip(),
            "198.18.255.254".parse::<std::net::IpAddr>().unwrap()
        );
    }

    /// What an accepted socket says about TCP_NODELAY, SO_KEEPALIVE and the
    /// keepalive timing.
    fn accepted_options(
        listener: &std::net::TcpListener,
    ) -> (bool, bool, std::time::Duration, std::time::Duration, u32) {
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (s, _) = listener.accept().unwrap();
        let s = SockRef::from(&s);
        (
            s.nodelay().unwrap(),
            s.keepalive().unwrap(),
            s.keepalive_time().unwrap(),
            s.keepalive_interval().unwrap(),
            s.keepalive_retries().unwrap(),
        )
    }

    #[test]
    fn accepted_sockets_inherit_nodelay_and_keepalive_from_the_listener() {
        let listener = bind_tcp(ListenAddress("127.0.0.1:0".parse().unwrap())).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (nodelay, keepalive, ..) = accepted_options(&listener);
        assert!(
            nodelay,
            "bind_tcp sets TCP_NODELAY for every accepted socket"
        );
        assert!(!keepalive);
        SockRef::from(&listener)
            .set_tcp_keepalive(&tandem_forward::keepalive_params())
            .unwrap();
        let (nodelay, keepalive, time, interval, retries) = accepted_options(&listener);
        assert!(nodelay && keepalive);
        assert_eq!(time, tandem_forward::KEEPALIVE_TIME);
        assert_eq!(interval, tandem_forward::KEEPALIVE_INTERVAL);
        assert_eq!(retries, tandem_forward::KEEPALIVE_RETRIES);
    }

    #[tokio::test]
    async fn a_keepalive_change_reaches_connections_queued_before_it() {
        let std_listener = bind_tcp(ListenAddress("127.0.0.1:0".parse().unwrap())).unwrap();
        let listener = TcpListener::from_std(std_listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut options = ListenerOptions::new(&listener);
        // Two connections queue while the listener has no keepalive ...
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        // ... and the service turns keepalive on before they are accepted.
        let (a, _) = listener.accept().await.unwrap();
        options.apply(&listener, &a, true);
        assert!(SockRef::from(&a).keepalive().unwrap(), "fixed by hand");
        let (b, _) = listener.accept().await.unwrap();
        options.apply(&listener, &b, true);
        assert!(SockRef::from(&b).keepalive().unwrap(), "fixed by hand");
        let _c = TcpStream::connect(addr).await.unwrap();
        let (c, _) = listener.accept().await.unwrap();
        assert!(SockRef::from(&c).keepalive().unwrap(), "inherited");
        options.apply(&listener, &c, true);
        assert!(!options.checking, "a socket that inherited ends the checks");
        // Turned off again by a reload.
        let _d = TcpStream::connect(addr).await.unwrap();
        let (d, _) = listener.accept().await.unwrap();
        options.apply(&listener, &d, false);
        assert!(!SockRef::from(&d).keepalive().unwrap());
        assert!(SockRef::from(&d).nodelay().unwrap());
    }

    #[test]
    fn tcp_and_udp_share_a_port() {
        let tcp = bind_tcp(ListenAddress("127.0.0.1:0".parse().unwrap())).unwrap();
        let udp = bind_udp(ListenAddress(tcp.local_addr().unwrap())).unwrap();
        assert_eq!(tcp.local_addr().unwrap(), udp.local_addr().unwrap());
    }
}

//! Binding listen sockets the way a load balancer on a VRRP node needs:
//! IP_FREEBIND so a backup can listen on a VIP it does not hold yet, and
//! SO_REUSEADDR so a restart does not wait for TIME_WAIT. Not SO_REUSEPORT: two
//! daemons on one port must fail loudly, not split the traffic silently.
//!
//! A failure says what to do about it, in plain words.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};
use tandem_core::{ListenAddress, Protocol};

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

    #[test]
    fn tcp_and_udp_share_a_port() {
        let tcp = bind_tcp(ListenAddress("127.0.0.1:0".parse().unwrap())).unwrap();
        let udp = bind_udp(ListenAddress(tcp.local_addr().unwrap())).unwrap();
        assert_eq!(tcp.local_addr().unwrap(), udp.local_addr().unwrap());
    }
}

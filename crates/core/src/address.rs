//! Address newtypes: a listen address and a backend address are both socket
//! addresses, but mixing them up is a bug the compiler should catch.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Where a service accepts connections or datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenAddress(pub SocketAddr);

/// Where a backend is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddress(pub SocketAddr);

impl ListenAddress {
    pub fn socket_addr(self) -> SocketAddr {
        self.0
    }
}

impl BackendAddress {
    pub fn socket_addr(self) -> SocketAddr {
        self.0
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for BackendAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The transport a service balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol name that is neither `tcp` nor `udp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolParseError(pub String);

impl fmt::Display for ProtocolParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown protocol `{}`, expected `tcp` or `udp`", self.0)
    }
}

impl std::error::Error for ProtocolParseError {}

impl FromStr for Protocol {
    type Err = ProtocolParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(ProtocolParseError(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_round_trips_through_its_name() {
        for p in [Protocol::Tcp, Protocol::Udp] {
            assert_eq!(p.as_str().parse::<Protocol>(), Ok(p));
        }
        assert!("sctp".parse::<Protocol>().is_err());
    }

    #[test]
    fn addresses_display_as_socket_addresses() {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(ListenAddress(a).to_string(), "127.0.0.1:80");
        assert_eq!(BackendAddress(a).to_string(), "127.0.0.1:80");
    }
}

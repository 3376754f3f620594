//! The interface tandem's routes point at: a TUN device that lives exactly
//! as long as the descriptor that created it. When the process ends, however
//! it ends (clean stop, crash, `kill -9`), the kernel deletes the device and
//! every route through it, and the routing daemon withdraws them: nothing is
//! left announced for a node that can no longer serve.
//!
//! No packet ever goes through it: the routes live in a table no rule looks
//! up, and the VIP itself is a local address. Two ioctls have no safe
//! wrapper in std or socket2, so they are here, each with its test.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// An interface created by this process, deleted when the value is dropped.
#[derive(Debug)]
pub struct RouteDevice {
    name: String,
    _tun: File,
}

impl RouteDevice {
    /// Creates the TUN interface `name` and sets it up. Fails with `EBUSY`
    /// when an interface of that name exists (another tandem holds it).
    pub fn create(name: &str) -> io::Result<RouteDevice> {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req`
        // is, on this stack frame; the descriptor is open for the call.
        let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        set_up(name)?;
        Ok(RouteDevice {
            name: name.to_owned(),
            _tun: tun,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An `ifreq` naming `name`, everything else zero.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not an interface name"),
        ));
    }
    // SAFETY: ifreq is plain old data (a name array and a union of integers
    // and addresses), for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// `ip link set NAME up`, with the classic interface ioctls.
fn set_up(name: &str) -> io::Result<()> {
    // SAFETY: socket(2) has no memory arguments; a valid descriptor is
    // owned at once, so it is closed on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write one `struct
    // ifreq` on this stack frame; the descriptor is open for both calls.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use test_support::netns::{wait_for, Lab};

    fn link_line(host: &test_support::netns::Host, name: &str) -> String {
        let out = host.sh(&["ip", "-o", "link", "show", "dev", name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn the_device_is_up_while_held_and_gone_with_its_holder() {
        let Some(mut lab) = Lab::new("the_device_is_up_while_held_and_gone_with_its_holder") else {
            return;
        };
        let host = lab.host(&["198.18.0.11/24"]);
        let inside = host.clone();
        let device = host
            .spawn(move || {
                let device = RouteDevice::create("tandem-test0").expect("create");
                let line = link_line(&inside, "tandem-test0");
                assert!(
                    line.contains(",UP,") || line.contains("<UP,") || line.contains(",UP>"),
                    "{line}"
                );
                assert!(!line.contains("NO-CARRIER"), "{line}");
                // A second holder of the same name is refused.
                let again = RouteDevice::create("tandem-test0").unwrap_err();
                assert_eq!(again.raw_os_error(), Some(libc::EBUSY), "{again}");
                device
            })
            .join()
            .expect("the namespace thread");
        assert_eq!(device.name(), "tandem-test0");
        drop(device);
        let gone = wait_for(Duration::from_secs(2), || {
            link_line(&host, "tandem-test0").is_empty()
        });
        assert!(gone.is_some(), "the device outlived its descriptor");
    }

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        for name in ["", "0123456789abcdef", "a\0b"] {
            assert_eq!(
                ifreq(name).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{name:?}"
            );
        }
        assert!(ifreq("tandem-routes").is_ok());
    }
}

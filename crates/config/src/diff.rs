//! What a reload changes: two validated configurations in, the list of
//! changes out. Pure; the daemon prepares what the changes need (sockets,
//! health checkers) and commits them only when all of that succeeded.
//!
//! A service is known by its name across a reload. Same name, same `listen`
//! and `protocol`: it keeps its listening socket (no gap in accepting) and is
//! [`Change::Updated`] if anything else differs. Same name, another address
//! or protocol: [`Change::Moved`] (a new socket, the same backends and
//! counters). A new name wants a new socket; an old name not in the new file
//! is [`Change::Removed`] and drains.
//!
//! A socket can change hands only through a restart: a service (added or
//! moved) whose address and protocol a *differently named* running service
//! holds is a [`Clash`], since the running one keeps that socket until the
//! reload has committed. Rename in one reload, move in another.

use std::fmt;

use tandem_core::{ListenAddress, Protocol};

use crate::model::{Config, Service};

/// What happens to one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Only in the new file: bind, start checking, accept.
    Added(String),
    /// Only in the old file: stop accepting, drain, then cut.
    Removed(String),
    /// Same listen address and protocol, other settings or backends.
    Updated(String),
    /// Same name, another address or protocol.
    Moved {
        name: String,
        from: (ListenAddress, Protocol),
        to: (ListenAddress, Protocol),
    },
    /// Nothing differs.
    Unchanged(String),
}

impl Change {
    pub fn name(&self) -> &str {
        match self {
            Change::Added(n) | Change::Removed(n) | Change::Updated(n) | Change::Unchanged(n) => n,
            Change::Moved { name, .. } => name,
        }
    }

    /// Whether the change needs a socket bound before it can be committed.
    pub fn needs_socket(&self) -> bool {
        matches!(self, Change::Added(_) | Change::Moved { .. })
    }
}

/// A new listener on an address a differently named running service holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    pub service: String,
    pub listen: ListenAddress,
    pub held_by: String,
}

impl fmt::Display for Clash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service {}: {} is still used by service {} in the running configuration; rename in one reload, move in another",
            self.service, self.listen, self.held_by
        )
    }
}

/// Sections that are read only at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartOnly {
    Runtime,
    Admin,
    Vrrp,
    Routing,
}

impl RestartOnly {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartOnly::Runtime => "runtime",
            RestartOnly::Admin => "admin",
            RestartOnly::Vrrp => "vrrp",
            RestartOnly::Routing => "routing",
        }
    }
}

/// Everything a reload from `old` to `new` would change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diff {
    /// The new file's services in its order, then the removed ones in the
    /// old file's order.
    pub services: Vec<Change>,
    /// Sections that differ but take effect only at restart.
    pub restart_only: Vec<RestartOnly>,
    /// Non-empty: the reload cannot be applied.
    pub clashes: Vec<Clash>,
}

impl Diff {
    /// True when applying it would change nothing that runs.
    pub fn is_empty(&self) -> bool {
        self.services
            .iter()
            .all(|c| matches!(c, Change::Unchanged(_)))
    }
}

/// The changes from `old` to `new`; see the module doc for the rules.
pub fn diff(old: &Config, new: &Config) -> Diff {
    let find = |name: &str| old.services.iter().find(|s| s.name == name);
    let mut services = Vec::with_capacity(new.services.len());
    let mut clashes = Vec::new();
    for service in &new.services {
        let change = match find(&service.name) {
            None => Change::Added(service.name.clone()),
            Some(before)
                if socket_of(before) != socket_of(service)
                    || in_userspace(before) != in_userspace(service) =>
            {
                Change::Moved {
                    name: service.name.clone(),
                    from: socket_of(before),
                    to: socket_of(service),
                }
            }
            Some(before) if before != service => Change::Updated(service.name.clone()),
            Some(_) => Change::Unchanged(service.name.clone()),
        };
        if change.needs_socket() {
            let holder = old
                .services
                .iter()
                .find(|s| s.name != service.name && socket_of(s) == socket_of(service));
            if let Some(holder) = holder {
                clashes.push(Clash {
                    service: service.name.clone(),
                    listen: service.listen,
                    held_by: holder.name.clone(),
                });
            }
        }
        services.push(change);
    }
    for before in &old.services {
        if !new.services.iter().any(|s| s.name == before.name) {
            services.push(Change::Removed(before.name.clone()));
        }
    }
    let mut restart_only = Vec::new();
    if old.runtime != new.runtime {
        restart_only.push(RestartOnly::Runtime);
    }
    if old.admin != new.admin {
        restart_only.push(RestartOnly::Admin);
    }
    if old.vrrp != new.vrrp {
        restart_only.push(RestartOnly::Vrrp);
    }
    if old.routing != new.routing {
        restart_only.push(RestartOnly::Routing);
    }
    Diff {
        services,
        restart_only,
        clashes,
    }
}

fn socket_of(service: &Service) -> (ListenAddress, Protocol) {
    (service.listen, service.protocol)
}

/// Whether the service holds a socket: a `forwarding: nat` one does not, so
/// a change into or out of nat opens or closes one, like a move.
fn in_userspace(service: &Service) -> bool {
    service.forwarding.in_userspace()
}

/// One line for the log and the reload answer: `added a; removed b; updated
/// c; moved d (127.0.0.1:1 -> 127.0.0.1:2)`, or `no change`.
impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut updated = Vec::new();
        let mut moved = Vec::new();
        for change in &self.services {
            match change {
                Change::Added(n) => added.push(n.clone()),
                Change::Removed(n) => removed.push(n.clone()),
                Change::Updated(n) => updated.push(n.clone()),
                Change::Moved { name, from, to } if from.1 == to.1 => {
                    moved.push(format!("{name} ({} -> {})", from.0, to.0))
                }
                Change::Moved { name, from, to } => moved.push(format!(
                    "{name} ({} {} -> {} {})",
                    from.1, from.0, to.1, to.0
                )),
                Change::Unchanged(_) => {}
            }
        }
        let parts: Vec<String> = [
            ("added", added),
            ("removed", removed),
            ("updated", updated),
            ("moved", moved),
        ]
        .into_iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(what, names)| format!("{what} {}", names.join(", ")))
        .collect();
        if parts.is_empty() {
            f.write_str("no change")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with these services: `(name, listen port, protocol, backend port)`.
    fn config(services: &[(&str, u16, &str, u16)], extra: &str) -> Config {
        let mut yaml = String::from("services:\n");
        for (name, port, protocol, backend) in services {
            yaml.push_str(&format!(
                "  - {{ name: {name}, protocol: {protocol}, listen: 127.0.0.1:{port}, backends: [{{ address: 127.0.0.1:{backend} }}] }}\n"
            ));
        }
        yaml.push_str(extra);
        crate::parse(&yaml, "test").unwrap()
    }

    fn moved(name: &str, from: u16, to: u16, protocol: Protocol) -> Change {
        let at = |port: u16| (ListenAddress(([127, 0, 0, 1], port).into()), protocol);
        Change::Moved {
            name: name.into(),
            from: at(from),
            to: at(to),
        }
    }

    #[test]
    fn every_kind_of_change_is_told_apart() {
        use Change::*;
        type Row<'a> = (
            &'a str,
            &'a [(&'a str, u16, &'a str, u16)],
            Vec<Change>,
            &'a str,
        );
        let old: &[(&str, u16, &str, u16)] = &[("a", 1001, "tcp", 2001), ("b", 1002, "tcp", 2002)];
        let table: Vec<Row> = vec![
            (
                "same file",
                old,
                vec![Unchanged("a".into()), Unchanged("b".into())],
                "no change",
            ),
            (
                "a backend changes",
                &[("a", 1001, "tcp", 2009), ("b", 1002, "tcp", 2002)],
                vec![Updated("a".into()), Unchanged("b".into())],
                "updated a",
            ),
            (
                "a service is added",
                &[
                    ("a", 1001, "tcp", 2001),
                    ("b", 1002, "tcp", 2002),
                    ("c", 1003, "udp", 2003),
                ],
                vec![
                    Unchanged("a".into()),
                    Unchanged("b".into()),
                    Added("c".into()),
                ],
                "added c",
            ),
            (
                "a service is removed",
                &[("b", 1002, "tcp", 2002)],
                vec![Unchanged("b".into()), Removed("a".into())],
                "removed a",
            ),
            (
                "a service moves to another port",
                &[("a", 1005, "tcp", 2001), ("b", 1002, "tcp", 2002)],
                vec![moved("a", 1001, 1005, Protocol::Tcp), Unchanged("b".into())],
                "moved a (127.0.0.1:1001 -> 127.0.0.1:1005)",
            ),
            (
                "a service changes protocol",
                &[("a", 1001, "udp", 2001), ("b", 1002, "tcp", 2002)],
                vec![
                    Change::Moved {
                        name: "a".into(),
                        from: (ListenAddress(([127, 0, 0, 1], 1001).into()), Protocol::Tcp),
                        to: (ListenAddress(([127, 0, 0, 1], 1001).into()), Protocol::Udp),
                    },
                    Unchanged("b".into()),
                ],
                "moved a (tcp 127.0.0.1:1001 -> udp 127.0.0.1:1001)",
            ),
            (
                "everything at once, in the new file's order",
                &[("c", 1003, "tcp", 2003), ("b", 1004, "tcp", 2002)],
                vec![
                    Added("c".into()),
                    moved("b", 1002, 1004, Protocol::Tcp),
                    Removed("a".into()),
                ],
                "added c; removed a; moved b (127.0.0.1:1002 -> 127.0.0.1:1004)",
            ),
        ];
        let before = config(old, "");
        for (what, new, want, line) in table {
            let d = diff(&before, &config(new, ""));
            assert_eq!(d.services, want, "{what}");
            assert_eq!(d.to_string(), line, "{what}");
            assert!(d.clashes.is_empty(), "{what}: {:?}", d.clashes);
            assert!(d.restart_only.is_empty(), "{what}");
            assert_eq!(d.is_empty(), line == "no change", "{what}");
        }
    }

    #[test]
    fn a_change_into_or_out_of_nat_opens_or_closes_the_socket() {
        let plain = config(&[("a", 1001, "tcp", 2001)], "");
        let nat = config(
            &[("a", 1001, "tcp", 2001)],
            "defaults: { forwarding: nat }\n",
        );
        let copy = config(
            &[("a", 1001, "tcp", 2001)],
            "defaults: { forwarding: copy }\n",
        );
        let m = moved("a", 1001, 1001, Protocol::Tcp);
        assert_eq!(diff(&plain, &nat).services, vec![m.clone()]);
        assert_eq!(diff(&nat, &plain).services, vec![m]);
        assert_eq!(
            diff(&plain, &copy).services,
            vec![Change::Updated("a".into())],
            "splice to copy keeps the socket"
        );
    }

    #[test]
    fn a_socket_held_by_another_running_service_is_a_clash() {
        let before = config(&[("a", 1001, "tcp", 2001), ("b", 1002, "tcp", 2002)], "");
        // Renamed: `c` wants a's socket while `a` still holds it.
        let renamed = diff(
            &before,
            &config(&[("c", 1001, "tcp", 2001), ("b", 1002, "tcp", 2002)], ""),
        );
        assert_eq!(
            renamed.clashes,
            [Clash {
                service: "c".into(),
                listen: ListenAddress(([127, 0, 0, 1], 1001).into()),
                held_by: "a".into(),
            }]
        );
        assert!(renamed.clashes[0]
            .to_string()
            .contains("rename in one reload, move in another"));
        // Swapped: both moves want the other's socket.
        let swapped = diff(
            &before,
            &config(&[("a", 1002, "tcp", 2001), ("b", 1001, "tcp", 2002)], ""),
        );
        assert_eq!(swapped.clashes.len(), 2);
        // The same port with the other protocol is another socket.
        let other_protocol = diff(
            &before,
            &config(&[("b", 1002, "tcp", 2002), ("c", 1001, "udp", 2001)], ""),
        );
        assert!(other_protocol.clashes.is_empty());
    }

    #[test]
    fn sections_read_only_at_start_are_named() {
        let services = &[("a", 1001, "tcp", 2001)];
        let before = config(services, "");
        let after = config(
            services,
            "runtime: { worker_threads: 1 }\nadmin: { listen: 127.0.0.1:9901 }\n",
        );
        let d = diff(&before, &after);
        assert_eq!(d.restart_only, [RestartOnly::Runtime, RestartOnly::Admin]);
        assert!(d.is_empty(), "no service changes");
        assert_eq!(d.restart_only[1].as_str(), "admin");
        let routed = config(
            services,
            "routing: { vips: [{ address: 127.0.0.1, services: [a] }] }\n",
        );
        let d = diff(&before, &routed);
        assert_eq!(d.restart_only, [RestartOnly::Routing]);
        assert_eq!(d.restart_only[0].as_str(), "routing");
    }
}

//! ns per pick of every scheduler for 3, 100 and 1,000 backends.
//!
//! Backends have mixed weights, one in ten is a backup, and a third hold open
//! connections, so least_connections and random compare real loads. Client
//! addresses change at every pick, so source_hash reads a different table slot
//! each time, as it would in service.
//!
//! Run: `cargo bench -p tandem-benches --bench scheduler -- --measurement-time 2 --warm-up-time 1`

use std::hint::black_box;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tandem_core::{Backend, BackendAddress, BackendSet};
use tandem_scheduler::{build, HashKey, SchedulerKind};

fn backends(n: usize) -> BackendSet {
    BackendSet::new(
        (0..n)
            .map(|i| {
                Arc::new(Backend::new(
                    BackendAddress(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 6443).into()),
                    None,
                    NonZeroU32::new(1 + i as u32 % 3).expect("positive"),
                    n > 3 && i % 10 == 9,
                    true,
                ))
            })
            .collect(),
    )
}

fn clients() -> Vec<SocketAddr> {
    (0..4096u32)
        .map(|i| SocketAddr::from((i.wrapping_mul(2_654_435_761).to_be_bytes(), 1024 + i as u16)))
        .collect()
}

fn pick(c: &mut Criterion) {
    let algorithms = [
        ("round_robin", SchedulerKind::RoundRobin),
        ("least_connections", SchedulerKind::LeastConnections),
        ("source_hash", SchedulerKind::SourceHash),
        ("random", SchedulerKind::Random),
    ];
    let clients = clients();
    for (name, algorithm) in algorithms {
        let mut group = c.benchmark_group(format!("pick/{name}"));
        for n in [3, 100, 1000] {
            let set = backends(n);
            let _held: Vec<_> = set
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 3 == 0)
                .flat_map(|(i, b)| (0..1 + i % 5).map(|_| b.open_connection()))
                .collect();
            let scheduler = build(algorithm, HashKey::SourceIp, &set);
            let mut next = 0;
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| {
                    next = (next + 1) & 4095;
                    black_box(scheduler.pick(&set, black_box(clients[next]), &[]))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, pick);
criterion_main!(benches);

//! Picking allocates nothing, for every algorithm: a counting global allocator
//! watches this thread while it picks.
// A `GlobalAlloc` can only be written with `unsafe`; this test binary is the
// only place in the crate that needs it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use tandem_core::{Backend, BackendAddress, BackendSet};
use tandem_scheduler::{build, pick, HashKey, OnAllDown, SchedulerKind};

struct Counting;

thread_local! {
    // Const-initialised and without a destructor: touching it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter is a thread-local `Cell` and allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same layout the caller gave us, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout (via `alloc` above).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: `ptr` came from `System` with `layout`, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

fn backends(n: usize) -> BackendSet {
    BackendSet::new(
        (0..n)
            .map(|i| {
                Arc::new(Backend::new(
                    BackendAddress(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 6443).into()),
                    None,
                    NonZeroU32::new(1 + i as u32 % 4).expect("positive"),
                    i % 10 == 9,
                    true,
                ))
            })
            .collect(),
    )
}

#[test]
fn picking_allocates_nothing() {
    let algorithms = [
        (SchedulerKind::RoundRobin, HashKey::SourceIp),
        (SchedulerKind::LeastConnections, HashKey::SourceIp),
        (SchedulerKind::SourceHash, HashKey::SourceIp),
        (SchedulerKind::SourceHash, HashKey::SourceIpPort),
        (SchedulerKind::Random, HashKey::SourceIp),
    ];
    let clients: Vec<SocketAddr> = (0..1000u32)
        .map(|i| SocketAddr::from((i.wrapping_mul(2_654_435_761).to_be_bytes(), i as u16)))
        .collect();
    for n in [3, 100, 1000] {
        let set = backends(n);
        let held: Vec<_> = set.iter().step_by(3).map(|b| b.open_connection()).collect();
        // Some down and draining, so the skip and fallback paths run too.
        set.get(1).expect("n >= 3").set_up(false);
        set.get(n - 1).expect("n >= 3").set_draining(true);
        for algorithm in algorithms {
            let scheduler = build(algorithm.0, algorithm.1, &set);
            let before = allocations();
            for (i, &client) in clients.iter().enumerate() {
                let tried = [i % n];
                assert!(scheduler.pick(&set, client, &[]).is_some());
                std::hint::black_box(scheduler.pick(&set, client, &tried));
                assert!(pick(&*scheduler, OnAllDown::TryAll, &set, client, &tried).is_some());
            }
            assert_eq!(
                allocations() - before,
                0,
                "{algorithm:?} with {n} backends allocated"
            );
        }
        // Everything down: the longest paths, still nothing allocated.
        for b in set.iter() {
            b.set_up(false);
        }
        for algorithm in algorithms {
            let scheduler = build(algorithm.0, algorithm.1, &set);
            let before = allocations();
            for &client in &clients {
                assert_eq!(scheduler.pick(&set, client, &[]), None);
            }
            assert_eq!(
                allocations() - before,
                0,
                "{algorithm:?} with {n} backends all down allocated"
            );
        }
        drop(held);
    }
}

#[test]
fn the_counter_sees_allocations() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 64]);
    assert!(allocations() > before);
    drop(v);
}

//! The `tandem` command; everything it does lives in the library.

/// jemalloc: tokio's 128-byte-aligned task allocations waste about 0.5 KiB per
/// connection under glibc's allocator (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    tandem::main()
}

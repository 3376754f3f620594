#!/usr/bin/env bash
# The side-by-side L4 benchmark: tandem, HAProxy (splice and no splice), nginx,
# no proxy, and the kernel data path (tandem's forwarding: nat and hand-written
# nftables DNAT rules, which need root and nft), in interleaved rounds, proxies pinned to core 0 and the load
# generator plus backends to core 1. See docs/performance.md.
#
#   benches/l4/run.sh            # 5 rounds, 5 s per measurement
#   benches/l4/run.sh --quick    # 1 round, 2 s per measurement
#   benches/l4/run.sh --baseline OLD_TANDEM   # before/after in the same rounds
#   benches/l4/run.sh --workers 2 [--tandem-cpus 0,1]
#
# Other options (subsets of targets and workloads, copy mode): bench.py --help.
#
# It installs nothing: it names what is missing and stops.
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
for tool in haproxy nginx iperf3 wrk dnsperf nsd taskset python3; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
if ((${#missing[@]})); then
    echo "missing: ${missing[*]}" >&2
    echo "install with: apt-get install haproxy nginx libnginx-mod-stream iperf3 wrk dnsperf nsd" >&2
    exit 1
fi
kernel=()
if ! command -v nft >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "no nft or not root: leaving out tandem-nat and nft-anchor (apt-get install nftables; run as root)" >&2
    kernel=(--no-kernel)
fi
cargo build --release -p tandem >&2
exec python3 benches/l4/bench.py --tandem "${CARGO_TARGET_DIR:-target}/release/tandem" "${kernel[@]}" "$@"

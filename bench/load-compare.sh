#!/usr/bin/env bash
# Compares chaosbot's load generator with oha and wrk on one local server and prints a table.
# Peers: `cargo install oha` (lands in ~/.cargo/bin) and `apt-get install -y wrk`; a missing
# one is skipped with a notice. Knobs: LOAD_BENCH_SECS, LOAD_BENCH_CONNECTIONS, LOAD_BENCH_RATE,
# LOAD_BENCH_STALL_CONNECTIONS (see benches/load.rs). The HTTPS case: bench/load-compare-tls.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
exec cargo bench --bench load

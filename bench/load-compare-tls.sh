#!/usr/bin/env bash
# Compares chaosbot's load generator with oha over HTTPS on one local TLS server (kept-alive
# connections, then a new connection per request with session resumption) and prints a table.
# Peer: `cargo install oha` (lands in ~/.cargo/bin); a missing oha is skipped with a notice.
# Knobs: LOAD_BENCH_SECS, LOAD_BENCH_CONNECTIONS, LOAD_BENCH_ROUNDS (see benches/load_tls.rs).
# The probe cost over TLS (p50/p99, kept-alive vs plain HTTP) is `cargo bench --bench probe_tls`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
exec cargo bench --bench load_tls

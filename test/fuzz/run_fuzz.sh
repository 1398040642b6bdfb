#!/bin/sh
# Builds the libFuzzer target for the relay's STUN/TURN parsers in its own build dir
# (clang, ASan + UBSan) and runs it for N seconds (default 20). Exit status: 0 when no
# crash was found, 77 when clang or libFuzzer is missing, else the fuzzer's status.
#
#   test/fuzz/run_fuzz.sh [SECONDS]      env: FUZZ_BUILD_DIR (default build-fuzz)
set -eu
seconds=${1:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}

if ! command -v clang++ >/dev/null 2>&1; then
  echo "SKIP: clang++ not installed (apt-get install clang)"
  exit 77
fi
if [ ! -d "$build" ]; then
  CXX=clang++ CC=clang meson setup "$build" "$root" -Dfuzz=true -Dtests=false \
    -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized \
    -Dcpp_args=-fsanitize=fuzzer-no-link >/dev/null
fi
ninja -C "$build" relay/fuzz_stun >/dev/null

corpus="$build/fuzz-corpus-stun"
mkdir -p "$corpus"
# Seeds: a Binding request, an Allocate, ChannelData (hex, written once).
seed() { [ -f "$corpus/$1" ] || printf "$2" > "$corpus/$1"; }
seed binding '\000\001\000\000\041\022\244\102abcdefghijkl'
seed allocate '\000\003\000\010\041\022\244\102abcdefghijkl\000\031\000\004\021\000\000\000'
seed channel '\100\000\000\004data'

log="$build/fuzz_stun.log"
status=0
# Leak checks off: the target keeps one TURN server across runs on purpose.
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
ASAN_OPTIONS=detect_leaks=0 \
  "$build/relay/fuzz_stun" -max_total_time="$seconds" -max_len=2048 \
  -artifact_prefix="$build/" "$corpus" >"$log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  tail -n 40 "$log"
  echo "FAIL: fuzz_stun found a crash (status $status); artifacts in $build/, log $log"
  exit "$status"
fi
echo "PASS: fuzz_stun ran ${seconds} s: $(grep -E '^Done' "$log" || tail -n 1 "$log")"

#!/bin/sh
# Builds natfwd's libFuzzer targets in their own build dir (clang, ASan + UBSan) and runs
# each for N seconds (default 20): fuzz_stun (the shared STUN codec), fuzz_turn (the
# relay's Binding responder, TURN framing and TURN core) and fuzz_frame (rendezvous
# frames, Envelopes), fuzz_stream_open (the stream-open header codec) and
# fuzz_front_door (the publishing front door's HTTP head and ClientHello parsers) and
# fuzz_pcp (the peer's PCP MAP response parser, what answers on the gateway's 5351) and
# fuzz_punch (the hard-NAT punch packet parser and the search behind it). Exit
# status: 0 when no crash was found, 77 when clang or libFuzzer is missing, 1 on a crash.
#
#   test/fuzz/run_fuzz.sh [SECONDS] [TARGET...]   env: FUZZ_BUILD_DIR (default build-fuzz)
set -eu
seconds=${1:-20}
[ $# -gt 0 ] && shift
targets=${*:-fuzz_stun fuzz_turn fuzz_frame fuzz_stream_open fuzz_front_door fuzz_pcp fuzz_punch}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}

if ! command -v clang++ >/dev/null 2>&1; then
  echo "SKIP: clang++ not installed (apt-get install clang)"
  exit 77
fi
if [ ! -d "$build" ]; then
  CXX=clang++ CC=clang meson setup "$build" "$root" -Dfuzz=true -Dtests=disabled \
    -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized \
    -Dcpp_args=-fsanitize=fuzzer-no-link >/dev/null
fi
for target in $targets; do
  case $target in
    fuzz_stun) path=stun/fuzz_stun ;;
    fuzz_turn) path=relay/fuzz_turn ;;
    fuzz_frame) path=proto/fuzz_frame ;;
    fuzz_stream_open) path=proto/fuzz_stream_open ;;
    fuzz_front_door) path=relay/fuzz_front_door ;;
    fuzz_pcp) path=peer/fuzz_pcp ;;
    fuzz_punch) path=peer/fuzz_punch ;;
    *) echo "unknown fuzz target $target"; exit 2 ;;
  esac
  ninja -C "$build" "$path" >/dev/null

  corpus="$build/fuzz-corpus-$target"
  mkdir -p "$corpus"
  seed() { [ -f "$corpus/$1" ] || printf "$2" > "$corpus/$1"; }
  if [ "$target" = fuzz_stun ] || [ "$target" = fuzz_turn ]; then
    # A Binding request, an Allocate, ChannelData (octal escapes, written once).
    seed binding '\000\001\000\000\041\022\244\102abcdefghijkl'
    seed allocate '\000\003\000\010\041\022\244\102abcdefghijkl\000\031\000\004\021\000\000\000'
    seed channel '\100\000\000\004data'
  elif [ "$target" = fuzz_front_door ]; then
    # A request head routed by Host, and the start of a TLS ClientHello.
    seed get 'GET / HTTP/1.1\r\nHost: home.share.example.net:80\r\n\r\n'
    seed hello '\026\003\001\000\055\001\000\000\051\003\003'
  elif [ "$target" = fuzz_pcp ]; then
    # A MAP success (version 2, R|MAP, lifetime 3600, nonce a..l, UDP, ::ffff:11.0.0.2)
    # and a NAT-PMP server's version-0 answer.
    seed map '\002\201\000\000\000\000\016\020\000\000\000\052\000\000\000\000\000\000\000\000\000\000\000\000abcdefghijkl\021\000\000\000\240\050\240\050\000\000\000\000\000\000\000\000\000\000\377\377\013\000\000\002'
    seed natpmp '\000\201\000\001\000\000\000\011'
  elif [ "$target" = fuzz_punch ]; then
    # A probe (easy -> hard) of session 0x0102030405060708, seq 0, tagged with the
    # target's all-zero key, so the fuzzer starts from a packet that passes the tag.
    seed probe '\000NFP\001\002\001\000\001\002\003\004\005\006\007\010\000\000\000\000\232\230\355\253J\301\037\256\033\352\233zLY\216\351'
  elif [ "$target" = fuzz_stream_open ]; then
    # StreamOpen to [::1]:22 and a StreamOpenResult NOT_SERVED "no".
    seed open '\305F\001\000\000\000\000\007\012\003::1\020\026'
    seed result '\305F\001\000\000\000\000\006\010\001\022\002no'
  else
    # An empty frame and a Ping Envelope (field 10, nonce 7).
    seed empty '\305F\001\000\000\000\000\000'
    seed ping '\305F\001\000\000\000\000\004R\002\010\007'
  fi

  log="$build/$target.log"
  status=0
  # Leak checks off: fuzz_turn keeps one TURN server across runs on purpose.
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ASAN_OPTIONS=detect_leaks=0 \
    "$build/$path" -max_total_time="$seconds" -max_len=2048 \
    -artifact_prefix="$build/$target-" "$corpus" >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log"
    echo "FAIL: $target found a crash (status $status); artifacts in $build/, log $log"
    # Not the fuzzer's own status: libFuzzer's crash status is 77, which meson reads
    # as a skipped test.
    exit 1
  fi
  echo "PASS: $target ran ${seconds} s: $(grep -E '^Done' "$log" || tail -n 1 "$log")"
done

#!/usr/bin/env bash
# Builds the link frame decoder fuzzer with clang (libFuzzer + ASan + UBSan)
# and runs it for a bounded time (SIDETRACE_FUZZ_SECONDS, default 20) from a
# seed corpus of valid frames. Exit 77 (ctest: skipped) when clang or
# libFuzzer is missing.
set -euo pipefail
src=${SIDETRACE_SOURCE_DIR:?}
out=${SIDETRACE_BUILD_DIR:?}/fuzz/link
seconds=${SIDETRACE_FUZZ_SECONDS:-20}
clang=$(command -v clang++ || true)
if [[ -z $clang ]]; then echo "SKIP: clang++ not installed (Debian package clang)"; exit 77; fi
if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, long){return 0;}' |
     "$clang" -x c++ -fsanitize=fuzzer - -o /dev/null 2>/dev/null; then
  echo "SKIP: clang++ has no libFuzzer runtime (Debian package libclang-rt-14-dev)"; exit 77
fi
mkdir -p "$out/corpus"
bin=$out/link_fuzz
sources=("$src/tests/orchestrator/link_fuzz.cpp" "$src/common/link/protocol.cpp")
rebuild=0
[[ -x $bin ]] || rebuild=1
for s in "${sources[@]}" "$src/common/link/protocol.h"; do [[ $s -nt $bin ]] && rebuild=1; done
if ((rebuild)); then
  echo "building $bin"
  "$clang" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -DFMT_HEADER_ONLY -DSIDETRACE_VERSION='"fuzz"' -I"$src" "${sources[@]}" -o "$bin"
fi
# Seeds: one valid frame of each type, written by the seed helper.
"${SIDETRACE_BUILD_DIR}/tests/orchestrator/orchestrator_link_seeds" "$out/corpus"
echo "fuzzing for ${seconds}s"
"$bin" -max_total_time="$seconds" -max_len=8192 -rss_limit_mb=1024 -timeout=10 \
  -error_exitcode=1 -artifact_prefix="$out/" -print_final_stats=1 "$out/corpus" 2>&1 | tail -15
exit "${PIPESTATUS[0]}"

#!/usr/bin/env bash
# kvmkit's test command: what CI runs (.ci/run) and what a developer runs.
#
#   ./scripts/test.sh                       fmt, clippy, all tests under coverage, coverage floor
#   KVMKIT_NO_COVERAGE=1 ./scripts/test.sh  fmt, clippy, plain `cargo test` (quick local run)
#
# Both end with the QMP test against QEMU's own Python client (qemu.qmp from
# PyPI, in a virtualenv under target/): tests/qmp/test_qmp.py.
#
# KVM tests need /dev/kvm: KVMKIT_REQUIRE_KVM defaults to 1 here, so a missing
# /dev/kvm fails the run instead of skipping the tests. Set it to 0 to skip.
#
# Everything the tests need is installed here, idempotently (a check first),
# because CI runs in a fresh clone and a new machine has only what this installs.
set -euo pipefail

# Debian packages the tests need, installed with apt-get when missing.
# A change that makes a test need a tool adds its package here, e.g.
#   APT_PACKAGES=(acpica-tools qemu-system-x86)
APT_PACKAGES=(acpica-tools busybox-static e2fsprogs device-tree-compiler gcc-powerpc64le-linux-gnu gcc-s390x-linux-gnu iproute2 linux-libc-dev-ppc64el-cross linux-libc-dev-s390x-cross python3-venv)

# QEMU's QMP client library, for tests/qmp/test_qmp.py; pinned, installed into
# a virtualenv under the target directory when missing.
QEMU_QMP_VERSION="0.0.6"

# cargo-tarpaulin measures coverage (STYLE.md section 7); installed when missing.
# Pinned so that CI on a new machine measures with the same tool.
TARPAULIN_VERSION="0.37.5"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# Tarpaulin builds with coverage instrumentation (different RUSTFLAGS): keep it in
# its own directory so it and plain cargo builds don't keep rebuilding each other.
COV_DIR="$TARGET_DIR/tarpaulin"
LOG="$TARGET_DIR/test-output.log"
# Output goes through tee, so decide about colour from the real stdout.
COLOR=never
[[ -t 1 && -z "${CI:-}" ]] && COLOR=always

if [[ -d "${CARGO_HOME:-$HOME/.cargo}/bin" ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
export KVMKIT_REQUIRE_KVM="${KVMKIT_REQUIRE_KVM:-1}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
COVERAGE=1
[[ "${KVMKIT_NO_COVERAGE:-0}" == 1 ]] && COVERAGE=0

STEP="start"
on_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        echo
        echo "kvmkit tests: FAILED in step '$STEP' (exit $rc, after ${SECONDS}s)"
    fi
}
trap on_exit EXIT

step() {
    STEP="$1"
    printf '\n==> %s   [%dm%02ds elapsed]\n' "$1" $((SECONDS / 60)) $((SECONDS % 60))
}

# --- prerequisites ----------------------------------------------------------

install_apt_packages() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    echo "installing Debian packages: ${missing[*]}"
    local sudo=()
    [[ $(id -u) -ne 0 ]] && sudo=(sudo)
    "${sudo[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_rust_components() {
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    echo "installing rustup components: ${missing[*]}"
    rustup component add "${missing[@]}"
}

install_tarpaulin() {
    command -v cargo-tarpaulin >/dev/null 2>&1 && return 0
    echo "installing cargo-tarpaulin $TARPAULIN_VERSION (takes a few minutes)"
    cargo install cargo-tarpaulin --version "$TARPAULIN_VERSION" --locked
}

step "prerequisites"
install_apt_packages
install_rust_components
[[ $COVERAGE == 1 ]] && install_tarpaulin
echo "KVMKIT_REQUIRE_KVM=$KVMKIT_REQUIRE_KVM; $(cargo --version)"
[[ $COVERAGE == 1 ]] && cargo tarpaulin --version

# Feature selection from coverage_config.json's crate_features (rust-vmm-ci meaning).
mapfile -t FEATURES < <(python3 scripts/coverage.py --feature-args)

# --- static checks ----------------------------------------------------------

step "cargo fmt --check"
cargo fmt --all -- --check --color "$COLOR"

step "cargo clippy"
cargo clippy --workspace --all-targets "${FEATURES[@]}" -- -D warnings

# --- tests ------------------------------------------------------------------

mkdir -p "$TARGET_DIR"
: >"$LOG"

if [[ $COVERAGE == 1 ]]; then
    # One run of every test target (lib, bins, tests, examples, benches in test
    # mode) under LLVM source-based coverage. Not tarpaulin's ptrace engine: it
    # stops the test process on every signal, including the SIGRTMIN kicks of
    # vCPU threads. Tests of code run only in child processes add no coverage.
    step "tests under coverage (cargo tarpaulin)"
    rm -f "$COV_DIR/tarpaulin-report.json"
    cargo tarpaulin --engine llvm --workspace --all-targets "${FEATURES[@]}" \
        --skip-clean --timeout 600 --no-fail-fast --color "$COLOR" \
        --target-dir "$COV_DIR" --out Json --output-dir "$COV_DIR" \
        2>&1 | tee -a "$LOG"
else
    step "tests (cargo test)"
    cargo test --workspace --all-targets --no-fail-fast "${FEATURES[@]}" --color "$COLOR" 2>&1 | tee -a "$LOG"
fi

# Doctest coverage needs a nightly rustdoc (--persist-doctests), so doctests
# run here, uninstrumented, on the stable toolchain. They are cheap.
step "doctests (cargo test --doc)"
cargo test --workspace --doc "${FEATURES[@]}" --color "$COLOR" 2>&1 | tee -a "$LOG"

# The QMP socket driven by QEMU's own client library (qemu.qmp), against the
# built VMM and the test guest. Needs /dev/kvm (KVMKIT_REQUIRE_KVM applies).
step "QMP with qemu.qmp (tests/qmp/test_qmp.py)"
QMP_VENV="$TARGET_DIR/qmp-venv"
[[ -x "$QMP_VENV/bin/python" ]] || python3 -m venv "$QMP_VENV"
if ! "$QMP_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('qemu.qmp') != '$QEMU_QMP_VERSION')" 2>/dev/null; then
    echo "installing qemu.qmp $QEMU_QMP_VERSION into $QMP_VENV"
    "$QMP_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "qemu.qmp==$QEMU_QMP_VERSION"
fi
cargo build -p kvmkit-vmm-reference --bin vmm-reference --color "$COLOR"
"$QMP_VENV/bin/python" tests/qmp/test_qmp.py --vmm "$TARGET_DIR/debug/vmm-reference" 2>&1 | tee -a "$LOG"

# Totals over every `test result:` line of the runs above.
read -r PASSED FAILED IGNORED < <(
    sed -n 's/.*test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$LOG" |
        awk '{p += $1; f += $2; i += $3} END {print p + 0, f + 0, i + 0}'
)
if [[ $FAILED -ne 0 ]]; then
    STEP="tests"
    echo "kvmkit: $PASSED passed, $FAILED failed"
    exit 1
fi
if [[ $PASSED -eq 0 ]]; then
    STEP="tests"
    echo "no test ran (no 'test result:' line found in $LOG)" >&2
    exit 1
fi

# --- coverage floor ---------------------------------------------------------

SUMMARY="coverage not measured (KVMKIT_NO_COVERAGE=1)"
if [[ $COVERAGE == 1 ]]; then
    step "coverage floor (scripts/coverage.py)"
    python3 scripts/coverage.py --report "$COV_DIR/tarpaulin-report.json" | tee "$TARGET_DIR/coverage-summary.txt"
    SUMMARY="$(tail -n 1 "$TARGET_DIR/coverage-summary.txt")"
fi

echo
echo "tests: $PASSED passed, $FAILED failed, $IGNORED skipped"
echo "(took $((SECONDS / 60))m$((SECONDS % 60))s)"
echo "kvmkit tests: all passed, $SUMMARY"

#!/usr/bin/env bash
# run-lab.sh: run lab tests (lab/tests/NAME.sh), all of them or the ones named.
#
#   bash lab/run-lab.sh                   # every test, against target/release/sbc
#   bash lab/run-lab.sh cancel prack      # a subset
#   bash lab/run-lab.sh --direct [NAME..] # no SBC: validate the SIPp scenario pairs
#   bash lab/run-lab.sh --list            # list the tests
#
# Environment: SBC_BIN (default target/release/sbc), RUST_LOG (default info),
# LAB_OUT_ROOT (default lab/out). Each test leaves its logs in lab/out/NAME/.
# Prints one PASS/FAIL line per test and, last, "N passed, M failed" (unless
# LAB_SUMMARY=0); exits non-zero if any test failed. With LAB_RESULTS=FILE, appends
# "PASS NAME" / "FAIL NAME" lines to FILE.
set -uo pipefail

LAB_DIR=$(cd "$(dirname "$0")" && pwd)
export LAB_MODE=${LAB_MODE:-sbc}

names=()
for arg in "$@"; do
    case $arg in
        --direct) LAB_MODE=direct ;;
        --list)
            for t in "$LAB_DIR"/tests/*.sh; do basename "$t" .sh; done
            exit 0
            ;;
        -h | --help)
            sed -n '2,13p' "$0"
            exit 0
            ;;
        -*)
            echo "unknown option $arg" >&2
            exit 2
            ;;
        *) names+=("${arg%.sh}") ;;
    esac
done
if ((${#names[@]} == 0)); then
    for t in "$LAB_DIR"/tests/*.sh; do names+=("$(basename "$t" .sh)"); done
fi

if [[ $(id -u) != 0 ]]; then
    echo "the lab needs root (it creates network namespaces)" >&2
    exit 2
fi
for tool in sipp ip ss timeout python3; do
    command -v "$tool" >/dev/null || {
        echo "missing $tool (bash lab/test-all.sh installs the lab's packages)" >&2
        exit 2
    }
done

passed=0
failed=0
failed_names=()
for name in "${names[@]}"; do
    script=$LAB_DIR/tests/$name.sh
    if [[ ! -f $script ]]; then
        echo "FAIL $name: no such test ($script)"
        failed=$((failed + 1))
        failed_names+=("$name")
        [[ -n ${LAB_RESULTS:-} ]] && echo "FAIL $name" >>"$LAB_RESULTS"
        continue
    fi
    # Each test bounds itself (timeout inside lab_begin); this outer bound is a backstop.
    if timeout -k 10 600 bash "$script"; then
        passed=$((passed + 1))
        [[ -n ${LAB_RESULTS:-} ]] && echo "PASS $name" >>"$LAB_RESULTS"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        [[ -n ${LAB_RESULTS:-} ]] && echo "FAIL $name" >>"$LAB_RESULTS"
    fi
done

if [[ ${LAB_SUMMARY:-1} != 0 ]]; then
    ((failed == 0)) || echo "failed: ${failed_names[*]}"
    echo "$passed passed, $failed failed"
fi
((failed == 0))

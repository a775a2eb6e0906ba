#!/usr/bin/env bash
# setup.sh: make the browser harness runnable (idempotent; run as root on a fresh Debian).
#
#   bash lab/browser/setup.sh
#
# 1. Chromium: apt-get install chromium if /usr/bin/chromium is missing (playwright-core
#    drives Debian's build; it never downloads a browser of its own).
# 2. Node 20+ and npm (apt-get nodejs npm if node is missing; playwright-core needs Node 20).
# 3. `npm ci` from the committed package-lock.json (skipped when node_modules already matches
#    it: a stamp holds the lock file's hash).
# 4. esbuild bundles JsSIP (which ships no browser build) into build/jssip.js, the global
#    `JsSIP` that page.html loads.
# Exits non-zero, with the reason, if any step fails: a missing peer is a failure.
set -euo pipefail
cd "$(dirname "$0")"

apt_install() {
    if [[ $(id -u) != 0 ]]; then
        echo "setup.sh: not root, cannot apt-get install $*" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update >/dev/null
    timeout 900 apt-get install -y --no-install-recommends "$@"
}

if [[ ! -x /usr/bin/chromium ]]; then
    echo "setup.sh: installing chromium"
    apt_install chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "setup.sh: installing nodejs npm"
    apt_install nodejs npm
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if ((major < 20)); then
    echo "setup.sh: node $(node -v) is too old (playwright-core needs 20 or later)" >&2
    exit 1
fi

stamp=node_modules/.lab-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" || ! -x node_modules/.bin/esbuild ]]; then
    echo "setup.sh: npm ci"
    timeout 600 npm ci --no-audit --no-fund --loglevel=error
    echo "$want" >"$stamp"
fi

mkdir -p build
node_modules/.bin/esbuild node_modules/jssip/lib/JsSIP.js --bundle --format=iife \
    --global-name=JsSIP --platform=browser --log-level=warning --outfile=build/jssip.js
node --input-type=module -e "import \"playwright-core\"" || { echo "setup.sh: playwright-core does not load" >&2; exit 1; }
echo "setup.sh: ready ($(/usr/bin/chromium --version 2>/dev/null | head -n 1), node $(node -v)," \
    "jssip $(node -p 'require("./node_modules/jssip/package.json").version'))"

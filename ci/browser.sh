#!/usr/bin/env bash
# Headless Chromium for the notebook tests (tests/notebooks/ render every executed notebook as
# HTML in it and check its charts): Debian's chromium package.
#
#   ci/browser.sh install   install it when missing (apt-get; as root, or through sudo); says
#                           which browser the tests will use (what `make test` calls)
#   ci/browser.sh path      print the browser's path; exit 1 when there is none
#
# The tests take $HELIOSDB_CHROMIUM if set, else `chromium` on PATH, and fail (never skip) when
# neither exists.  apt keeps the package, so a machine installs it once.
set -euo pipefail

log() { echo "browser: $*" >&2; }
die() { log "error: $*"; exit 1; }

browser() {
    local path="${HELIOSDB_CHROMIUM:-$(command -v chromium || true)}"
    [ -n "$path" ] && [ -x "$path" ] && echo "$path"
}

install() {
    local path sudo=""
    if path="$(browser)"; then
        log "using $path ($("$path" --version 2>/dev/null | head -1))"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "installing chromium needs root or sudo (apt-get install chromium)"
        sudo="sudo"
    fi
    log "installing chromium (apt-get)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
    path="$(browser)" || die "apt-get installed chromium, but there is no chromium on PATH"
    log "installed $path ($("$path" --version 2>/dev/null | head -1))"
}

case "${1:-}" in
    install) install ;;
    path) browser || die "no chromium: run ci/browser.sh install" ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

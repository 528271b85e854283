#!/usr/bin/env bash
# Installs everything emoe needs to build and test on Debian 12. Works as root
# (containers often have no sudo) and as a user (it re-runs itself through
# sudo). Used by the README quick start and by .ci/run: one package list.
# EMOE_DEPS_DRY_RUN=1 prints the commands instead of running them (tests).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then exec sudo --preserve-env=EMOE_DEPS_DRY_RUN bash "$0" "$@"; fi
    echo "install-deps: needs root: run it as root, or install sudo" >&2
    exit 1
fi
run() { if [ -n "${EMOE_DEPS_DRY_RUN:-}" ]; then echo "would run: $*" >&2; else "$@"; fi; }
run apt-get update -qq
run apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config ca-certificates curl git jq python3 \
    libmicrohttpd-dev libjansson-dev liburing-dev check libsubunit-dev \
    libinih-dev libpcre2-dev libutf8proc-dev libsystemd-dev systemd \
    clang libclang-rt-14-dev \
    libcurl4-openssl-dev nginx-light gnuplot-nox >/dev/null
# Node.js (for the openai npm client used by the server tests) where none is installed.
command -v node >/dev/null || run apt-get install -y -qq nodejs npm >/dev/null
echo "install-deps: done"

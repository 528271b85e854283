#!/usr/bin/env bash
# Installs everything emoe needs to build and test on Debian 12 (run as root).
# Used by the README quick start and by .ci/run: one package list.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" != 0 ]; then echo "install-deps: run as root (sudo)" >&2; exit 1; fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config ca-certificates curl git jq python3 \
    libmicrohttpd-dev libjansson-dev liburing-dev check libsubunit-dev \
    libinih-dev libpcre2-dev libutf8proc-dev libsystemd-dev systemd \
    clang libclang-rt-14-dev \
    libcurl4-openssl-dev nginx-light gnuplot-nox >/dev/null
# Node.js (for the openai npm client used by the server tests) where none is installed.
command -v node >/dev/null || apt-get install -y -qq nodejs npm >/dev/null
echo "install-deps: done"

#!/usr/bin/env bash
# deps.sh: install inflash's build and run dependencies (Debian packages) if
# any is missing. Uses sudo when not run as root.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libfuse3-dev fuse3 libopenblas-dev
      libsqlite3-dev libcmocka-dev libjansson-dev libpcre2-dev libxxhash-dev
      python3 python3-numpy clang libclang-rt-14-dev gnuplot-nox)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all installed"
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"

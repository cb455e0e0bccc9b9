#!/usr/bin/env bash
# System packages the app and its tests need: Fashion-MNIST (demo model data, tests) and Chromium (browser tests).
# Installs only what is missing; needs root (or sudo) the first time.
set -euo pipefail
needed=()
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || needed+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || needed+=(chromium)
[ ${#needed[@]} -eq 0 ] && exit 0
echo "installing system packages: ${needed[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${needed[@]}"

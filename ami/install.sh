#!/bin/sh
# spotctl host setup for stock Ubuntu 24.04 (run as root by cloud-init, or by `spotctl ami build`
# when baking an image): Node.js 20+ for the agent, python3 with venv and pip for the job, uv for
# projects with a uv.lock, rsync for the sync, build-essential for Python packages that compile.
# Idempotent: safe to run twice.
set -eu

# Node.js major to install when the host has none (or one older than 20). Ubuntu 24.04's own
# nodejs package is 18, too old for the agent.
NODE_MAJOR=22

export DEBIAN_FRONTEND=noninteractive
apt_get() {
  # cloud-init and unattended-upgrades may hold the dpkg lock for a while after boot.
  apt-get -o DPkg::Lock::Timeout=600 -q -y "$@"
}
apt_get update
apt_get install --no-install-recommends ca-certificates curl xz-utils rsync python3 python3-venv python3-pip build-essential

node_major() {
  if command -v node >/dev/null 2>&1; then node -p 'process.versions.node.split(".")[0]'; else echo 0; fi
}

if [ "$(node_major)" -lt 20 ]; then
  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) echo "spotctl: unsupported machine $(uname -m)" >&2; exit 1 ;;
  esac
  base="https://nodejs.org/dist/latest-v${NODE_MAJOR}.x"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL --retry 5 --retry-delay 2 -o "$tmp/SHASUMS256.txt" "$base/SHASUMS256.txt"
  file=$(grep -o "node-v[0-9.]*-linux-${arch}\.tar\.xz" "$tmp/SHASUMS256.txt" | head -n 1)
  [ -n "$file" ] || { echo "spotctl: no Node.js ${NODE_MAJOR} build for linux-${arch} listed at $base" >&2; exit 1; }
  curl -fsSL --retry 5 --retry-delay 2 -o "$tmp/$file" "$base/$file"
  # The tarball must match the checksum list published next to it.
  (cd "$tmp" && grep "  $file\$" SHASUMS256.txt | sha256sum -c -)
  tar -xJf "$tmp/$file" -C /usr/local --strip-components=1 --no-same-owner --exclude='*/CHANGELOG.md' --exclude='*/README.md' --exclude='*/LICENSE'
fi

# uv, so a project's uv.lock is honoured (uv sync --frozen) rather than skipped. Ubuntu has no
# package for it and PEP 668 forbids a system-wide pip install: it goes into its own venv, from
# PyPI (the same index the job's own dependencies come from), with a link on the PATH.
if ! command -v uv >/dev/null 2>&1; then
  python3 -m venv /opt/spotctl/uv
  /opt/spotctl/uv/bin/pip install --disable-pip-version-check -q 'uv>=0.5,<1'
  ln -sf /opt/spotctl/uv/bin/uv /usr/local/bin/uv
fi

node --version
python3 --version
uv --version
rsync --version | head -n 1
# The controller waits for cloud-init to finish; this marks that the setup itself succeeded.
mkdir -p /var/lib/spotctl
date -u +%Y-%m-%dT%H:%M:%SZ > /var/lib/spotctl/installed

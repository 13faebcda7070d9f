#!/bin/sh
# Install what `npm run bench` needs on a fresh Debian/Ubuntu machine. Idempotent: installs only
# what is missing. The bench itself needs root (it creates network namespaces).
set -eu

need=""
have() { command -v "$1" >/dev/null 2>&1; }
have iperf3   || need="$need iperf3"
have openvpn  || need="$need openvpn"
have wireguard-go || need="$need wireguard-go"
have wg || need="$need wireguard-tools"
have ip       || need="$need iproute2"
have iptables || need="$need iptables"
have ping     || need="$need iputils-ping"
have openssl  || need="$need openssl"
have sysctl   || need="$need procps"
have conntrack || need="$need conntrack"

if [ -n "$need" ]; then
  echo "bench/setup.sh: installing:$need"
  # iperf3's debconf question (run as a daemon?) must not block: the bench starts its own server.
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  # shellcheck disable=SC2086
  apt-get install -y --no-install-recommends $need
else
  echo "bench/setup.sh: everything is installed"
fi

node -e 'if (+process.versions.node.split(".")[0] < 20) { console.error("bench: Node >= 20 needed, have " + process.version); process.exit(1) }'
[ "$(id -u)" = 0 ] || echo "bench/setup.sh: note: run the bench as root (network namespaces)"

#!/usr/bin/env bash
# Prepare a fresh Debian machine for agent's demo, tests and benchmark: the system tools they
# drive (iproute2, iptables, ipset (the node's admission set), conntrack, ping, iperf3, tshark, openvpn and wireguard-go as the benchmark's
# baseline, python3-cryptography for the ESP interop test, etcd and etcdctl for the fleet roster's tests,
# systemd-analyze to verify the systemd unit), the npm dependencies (which builds the TUN addon with node-gyp), and the build.
# Idempotent: installs only what is missing. Needs root, as the agent itself does.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root: the agent creates TUN devices, routes and firewall rules" >&2
  exit 1
fi
node -e 'if (+process.versions.node.split(".")[0] < 20) { console.error("setup: Node.js >= 20 is needed, this is " + process.version); process.exit(1) }'

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)
have iptables-restore || need+=(iptables)
# The node admits its clients as members of an ipset that its FORWARD chain matches.
have ipset || need+=(ipset)
have nft || need+=(nftables)
have conntrack || need+=(conntrack)
have ping || need+=(iputils-ping)
have sysctl || need+=(procps)
have iperf3 || need+=(iperf3)
have tshark || need+=(tshark)
# test/integration/ipsec.test.ts captures with tcpdump (raw pcap for a replay).
have tcpdump || need+=(tcpdump)
have openvpn || need+=(openvpn)
have wireguard-go || need+=(wireguard-go)
have wg || need+=(wireguard-tools)
have openssl || need+=(openssl)
have make || need+=(make)
have g++ || need+=(g++)
# The addon is C (cc), and test/unit/checksum.test.ts builds a C harness with it.
have cc || need+=(gcc)
# The fuzzer (npm run fuzz, and its bounded run in npm test) preloads gcc's AddressSanitizer
# runtime into the node: cc -print-file-name=libasan.so must name a file (libgcc-N-dev has it).
if have gcc; then
  asan=$(gcc -print-file-name=libasan.so)
  [ "${asan#/}" != "$asan" ] && [ -e "$asan" ] || need+=("libgcc-$(gcc -dumpversion | cut -d. -f1)-dev")
elif [[ " ${need[*]} " != *" gcc "* ]]; then
  need+=(gcc)
fi
have python3 || need+=(python3)
# test/unit/service-unit.test.ts checks the shipped unit with systemd-analyze verify (package
# systemd; installing it does not make systemd PID 1 in a container).
have systemd-analyze || need+=(systemd)
# test/integration/systemd-notify.test.ts runs a node with only the unit's capabilities (setpriv).
have setpriv || need+=(util-linux)
# The fleet's roster lives in etcd (3.4 on Debian 12); tests start their own clusters in the testbed.
have etcd || need+=(etcd-server)
have etcdctl || need+=(etcd-client)
# The metrics test checks each scrape with promtool, which comes with Debian's prometheus.
have promtool || need+=(prometheus)
# The ESP interop test seals packets with Debian's Python and its cryptography package.
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import cryptography' 2>/dev/null || need+=(python3-cryptography)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  # tshark and iperf3 ask debconf questions; the defaults are what we want.
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # prometheus (for promtool) would start a server on :9090 that nothing here uses: keep
  # every package's service from starting while we install (policy-rc.d), then disable it.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [[ " ${need[*]} " == *" prometheus "* ]] && [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && own_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [ "$own_policy" = 1 ]; then
    rm -f "$policy"
    trap - EXIT
  fi
  if [[ " ${need[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  # The package enables a system etcd on localhost:2379; the tests never use it, so do not leave it running.
  if [[ " ${need[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build

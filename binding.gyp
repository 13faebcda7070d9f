{
  # agent_tun: the Linux TUN backend (src/core/tun/native/tun.c), plain C against node_api.h.
  # Loaded by src/core/tun/linux.ts from build/Release/agent_tun.node.
  # Both addons build in src/core/native/poller.c: the poll, lifetime, ring and callback code
  # they share (each .node gets its own copy).
  "targets": [
    {
      "target_name": "agent_tun",
      "defines": ["NAPI_VERSION=8"],
      "include_dirs": ["src/core/native"],
      "cflags_c": ["-std=c11"],
      "configurations": {
        "Release": {
          # Node's common.gypi asks for -O3; -O2 is plenty for a syscall loop.
          "cflags!": ["-O3"],
          "cflags": ["-O2"]
        }
      },
      "conditions": [
        # Only Linux has /dev/net/tun; elsewhere the target builds nothing worth loading.
        ["OS=='linux'", {"sources": ["src/core/tun/native/tun.c", "src/core/native/poller.c"]}]
      ]
    },
    {
      # agent_net: the carrier sockets of the datagram transports (src/core/carrier/native/net.c:
      # UDP and raw IPv4 with recvmmsg/sendmmsg). Loaded by src/core/carrier/datagram.ts from
      # build/Release/agent_net.node.
      "target_name": "agent_net",
      "defines": ["NAPI_VERSION=8"],
      "include_dirs": ["src/core/native"],
      "cflags_c": ["-std=c11"],
      "configurations": {
        "Release": {
          "cflags!": ["-O3"],
          "cflags": ["-O2"]
        }
      },
      "conditions": [
        ["OS=='linux'", {"sources": ["src/core/carrier/native/net.c", "src/core/native/poller.c"]}]
      ]
    }
  ]
}

{
  # agent_native: our one N-API addon, plain C against node_api.h, loaded from
  # build/Release/agent_native.node by src/core/native/load.ts. Four parts (src/core/native/agent.h):
  #   tun  the Linux TUN device              src/core/tun/native/tun.c
  #   net  UDP and raw IPv4 carrier sockets   src/core/carrier/native/net.c
  #   fast the native fast path over both    src/core/device/native/fastpath.c (workers.c: the
  #        node's worker threads)
  #   stream the tls data channel's records  src/core/carrier/native/stream.c
  #   notify the service manager's readiness datagram (sd_notify) src/core/native/notify.c
  # tun and net share the poll, lifetime, ring and callback code in src/core/native/poller.c.
  "targets": [
    {
      "target_name": "agent_native",
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
        # Only Linux has /dev/net/tun, recvmmsg and sendmmsg; elsewhere nothing worth loading.
        ["OS=='linux'", {"sources": [
          "src/core/native/addon.c",
          "src/core/native/poller.c",
          "src/core/native/args.c",
          "src/core/native/notify.c",
          "src/core/tun/native/tun.c",
          "src/core/carrier/native/net.c",
          "src/core/carrier/native/stream.c",
          "src/core/device/native/fastpath.c",
          "src/core/device/native/workers.c",
          "src/core/device/native/esp.c",
          "src/core/device/native/coalesce.c"
        ]}]
      ]
    }
  ]
}

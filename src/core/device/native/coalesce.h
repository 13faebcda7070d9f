/*
 * Writing decapsulated packets to a TUN device, with TCP segments of one flow coalesced into a
 * single GSO packet when the device has a virtio_net_hdr (IFF_VNET_HDR), as Linux GRO would.
 *
 * Why: most of the node's time went into the TUN write, where the kernel forwards, conntracks
 * and NATs every packet in the agent's context. A run of 40 MSS-sized segments written as one
 * GSO packet crosses that path once, and leaves the machine as one TSO burst. wireguard-go does
 * the same (its tcp_offload_linux.go).
 */
#ifndef AGENT_COALESCE_H
#define AGENT_COALESCE_H

#include <stdbool.h>
#include <stdint.h>

/* One inner IPv4 packet ready for the TUN. */
typedef struct inner_packet {
  const uint8_t *p;
  uint32_t len;
} inner_packet;

/*
 * Writes pkts[0, n) to fd in order. With vnet (the device has a virtio_net_hdr), runs of
 * consecutive TCP segments of one flow are written as one GSO packet; without, one write each.
 * Returns how many packets the kernel refused (queue full, device gone), counted per packet;
 * adds the GSO packets written, and the segments they carried, to the two counters.
 */
uint32_t tun_write_packets(int fd, bool vnet, const inner_packet *pkts, uint32_t n, uint64_t *gso_packets,
                           uint64_t *gso_segments);

#endif

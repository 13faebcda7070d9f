/*
 * ESP (RFC 4303) tunnel mode with AES-256-GCM (RFC 4106) and extended sequence numbers, for
 * the fast path's esp-gcm-in-gre codec: byte for byte what plugins/ipsec-over-gre/src/esp.ts
 * seals and opens (docs/esp-wire.md), with the RFC 6479 replay window of its replay.ts.
 *
 * The sequence counter and the replay window are not copies: they point into the typed arrays
 * the plugin's EspSealer.counter and ReplayWindow.state are, so JavaScript (keepalives, the
 * unusual packet) and C never use one sequence number twice or accept one packet twice.
 * Everything runs on the main thread.
 *
 * AES-GCM is Node's own OpenSSL (its libcrypto symbols are exported to addons); each SA keeps
 * one EVP context keyed once, so a packet costs a nonce change, not a key schedule.
 */
#ifndef AGENT_ESP_H
#define AGENT_ESP_H

#include <stdbool.h>
#include <stdint.h>

#define ESP_KEY_MATERIAL 36 /* AES-256 key + 4-byte salt (RFC 4106 8.1) */
#define ESP_HEADROOM 36     /* outer IPv4 (20) + SPI, sequence (8) + IV (8) */
#define ESP_TAILROOM 21     /* padding (<= 3) + pad length + next header + ICV (16) */

typedef struct esp_sa {
  uint32_t spi;
  void *ctx; /* EVP_CIPHER_CTX, keyed */
  uint8_t salt[4];
  /* Outbound: [high, low] of the last sequence number used. Inbound: the replay window's
   * state, [top high, top low, 2 * blocks words]. Owned by JS (kept alive by a reference). */
  uint32_t *state;
  uint32_t window_size; /* inbound */
  uint32_t blocks;      /* inbound: 64-bit blocks in the ring */
} esp_sa;

/* Keys sa (encrypting or not) with key material; false if OpenSSL fails. */
bool esp_sa_init(esp_sa *sa, uint32_t spi, const uint8_t *key_material, bool encrypt);
void esp_sa_free(esp_sa *sa);
/* The replay window's block count for a window size, as ReplayWindow computes it. */
uint32_t esp_window_blocks(uint32_t size);

typedef enum {
  ESP_SEALED,    /* *out is the outer packet */
  ESP_REFUSED,   /* nothing written, no sequence number used: the packet is as it was */
  ESP_CONSUMED,  /* OpenSSL failed midway: the packet is garbage and its number used; drop it */
} esp_seal_result;

/*
 * Seals the IPv4 packet pkt[0, len) in place: outer IPv4 (src -> dst) and ESP header into the
 * ESP_HEADROOM bytes before it, trailer and ICV into up to ESP_TAILROOM after it (pkt + len +
 * ESP_TAILROOM must be writable). Refused if the counter is exhausted or the outer packet would
 * exceed 65535 bytes.
 */
esp_seal_result esp_seal(esp_sa *sa, uint32_t src, uint32_t dst, uint8_t *pkt, uint32_t len, uint8_t **out,
                         uint32_t *out_len);

/* What esp_open found, for esp_accept or esp_reject. */
typedef struct esp_opened {
  uint8_t *inner;
  uint32_t inner_len;
  uint8_t *ct;
  uint32_t ct_len;
  uint32_t hi, lo;
  uint8_t nonce[12];
} esp_opened;

typedef enum {
  ESP_OPENED,   /* o->inner is an IPv4 packet: esp_accept or esp_reject it */
  ESP_NOT_OURS, /* p is unchanged: a packet JS must look at (malformed, a replay, odd trailer) */
  ESP_FORGED,   /* p is unchanged: its ICV does not verify, so nobody with the key sent it */
} esp_open_result;

/*
 * Checks, authenticates and decrypts in place the outer packet p[0, len) (outer IPv4 + ESP)
 * with sa, in EspOpener.open's order. ESP_OPENED: the replay window is NOT updated yet: call
 * esp_accept to take it or esp_reject to give the packet back as it came.
 */
esp_open_result esp_open(esp_sa *sa, uint8_t *p, uint32_t len, esp_opened *o);
/* The packet is taken: its sequence number is marked in the window. */
void esp_accept(esp_sa *sa, const esp_opened *o);
/* The packet is not taken after all: re-encrypts it, so p is again what arrived. */
void esp_reject(esp_sa *sa, const esp_opened *o);

#endif

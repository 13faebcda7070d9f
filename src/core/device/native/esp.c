/* ESP with AES-256-GCM for the fast path; see esp.h. */
#include "esp.h"

#include <openssl/evp.h>
#include <string.h>

#define IPPROTO_ESP_ 50
#define ESP_NEXT_HEADER_IPV4 4
#define OUTER_IPV4 20
#define ESP_HEADER 16 /* SPI, sequence low, IV */
#define ICV 16
#define TWO_32 4294967296LL

static uint32_t be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

bool esp_sa_init(esp_sa *sa, uint32_t spi, const uint8_t *key_material, bool encrypt) {
  memset(sa, 0, sizeof *sa);
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (ctx == NULL) return false;
  int ok = encrypt ? EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key_material, NULL)
                   : EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key_material, NULL);
  if (ok != 1) {
    EVP_CIPHER_CTX_free(ctx);
    return false;
  }
  sa->spi = spi;
  sa->ctx = ctx;
  memcpy(sa->salt, key_material + 32, 4);
  return true;
}

void esp_sa_free(esp_sa *sa) {
  if (sa->ctx != NULL) EVP_CIPHER_CTX_free(sa->ctx); /* also wipes the key schedule */
  memset(sa, 0, sizeof *sa);
}

uint32_t esp_window_blocks(uint32_t size) {
  uint32_t needed = (size + 63) / 64 + 1, blocks = 1;
  while (blocks < needed) blocks <<= 1;
  return blocks;
}

static void nonce_and_aad(const esp_sa *sa, uint32_t hi, uint32_t lo, const uint8_t *iv, uint8_t nonce[12],
                          uint8_t aad[12]) {
  memcpy(nonce, sa->salt, 4);
  memcpy(nonce + 4, iv, 8);
  put32(aad, sa->spi); /* RFC 4106 5, ESN: SPI | seq high | seq low */
  put32(aad + 4, hi);
  put32(aad + 8, lo);
}

esp_seal_result esp_seal(esp_sa *sa, uint32_t src, uint32_t dst, uint8_t *pkt, uint32_t len, uint8_t **out,
                         uint32_t *out_len) {
  uint32_t *ctr = sa->state;
  if (ctr[0] == 0xffffffffu && ctr[1] == 0xffffffffu) return ESP_REFUSED; /* RFC 4303 3.3.3: never wrap */
  const uint32_t pad = (4 - ((len + 2) & 3)) & 3;
  const uint32_t pt_len = len + pad + 2;
  const uint32_t total = ESP_HEADROOM + pt_len + ICV;
  if (total > 0xffff) return ESP_REFUSED;
  uint32_t lo = ctr[1] + 1, hi = ctr[0] + (lo == 0 ? 1 : 0);
  ctr[0] = hi;
  ctr[1] = lo;

  uint8_t *t = pkt + len; /* trailer: 1, 2, 3..., pad length, next header */
  for (uint32_t i = 1; i <= pad; i++) *t++ = (uint8_t)i;
  t[0] = (uint8_t)pad;
  t[1] = ESP_NEXT_HEADER_IPV4;

  uint8_t *h = pkt - ESP_HEADROOM; /* outer IPv4: no options, id 0, DF, TTL 64, ESP */
  h[0] = 0x45;
  h[1] = 0;
  h[2] = (uint8_t)(total >> 8);
  h[3] = (uint8_t)total;
  h[4] = h[5] = 0;
  h[6] = 0x40;
  h[7] = 0;
  h[8] = 64;
  h[9] = IPPROTO_ESP_;
  h[10] = h[11] = 0;
  put32(h + 12, src);
  put32(h + 16, dst);
  uint32_t sum = 0;
  for (int i = 0; i < OUTER_IPV4; i += 2) sum += ((uint32_t)h[i] << 8) | h[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  sum = ~sum & 0xffff;
  h[10] = (uint8_t)(sum >> 8);
  h[11] = (uint8_t)sum;

  uint8_t *esp = h + OUTER_IPV4; /* SPI, low half, IV = the whole 64-bit number */
  put32(esp, sa->spi);
  put32(esp + 4, lo);
  put32(esp + 8, hi);
  put32(esp + 12, lo);

  uint8_t nonce[12], aad[12];
  int n;
  nonce_and_aad(sa, hi, lo, esp + 8, nonce, aad);
  EVP_CIPHER_CTX *ctx = sa->ctx;
  /* The number is used whatever happens next: on a failure the packet is dropped, not resent. */
  if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 || EVP_EncryptUpdate(ctx, NULL, &n, aad, 12) != 1 ||
      EVP_EncryptUpdate(ctx, pkt, &n, pkt, (int)pt_len) != 1 || EVP_EncryptFinal_ex(ctx, pkt + pt_len, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, ICV, pkt + pt_len) != 1) {
    return ESP_CONSUMED;
  }
  *out = h;
  *out_len = total;
  return ESP_SEALED;
}

/* ---------- the replay window (replay.ts, RFC 6479) ---------- */

static int64_t infer_high(const esp_sa *sa, uint32_t lo) {
  const uint32_t th = sa->state[0], tl = sa->state[1], w = sa->window_size;
  if (tl >= w - 1) return lo >= tl - w + 1 ? (int64_t)th : (int64_t)th + 1;
  return (int64_t)lo >= (int64_t)tl - w + 1 + TWO_32 ? (int64_t)th - 1 : (int64_t)th;
}

static bool replay_check(const esp_sa *sa, uint32_t hi, uint32_t lo) {
  const uint32_t th = sa->state[0], tl = sa->state[1];
  const uint32_t *words = sa->state + 2;
  if (hi > th || (hi == th && lo > tl)) return true;
  const int64_t d_hi = (int64_t)th - hi;
  if (d_hi > 1 || d_hi * TWO_32 + tl - lo >= (int64_t)sa->window_size) return false;
  return (words[(lo >> 5) & (sa->blocks * 2 - 1)] & (1u << (lo & 31))) == 0;
}

static void replay_update(esp_sa *sa, uint32_t hi, uint32_t lo) {
  uint32_t *st = sa->state, *words = st + 2;
  const uint32_t th = st[0], tl = st[1];
  if (hi > th || (hi == th && lo > tl)) {
    const int64_t d_hi = (int64_t)hi - th;
    const int64_t d_blocks = d_hi > 1 ? INT64_MAX : d_hi * (TWO_32 / 64) + (lo >> 6) - (tl >> 6);
    if (d_blocks >= (int64_t)sa->blocks) {
      memset(words, 0, sizeof *words * sa->blocks * 2);
    } else {
      const uint32_t mask = sa->blocks - 1, first = tl >> 6;
      for (int64_t i = 1; i <= d_blocks; i++) {
        uint32_t b = ((first + (uint32_t)i) & mask) << 1;
        words[b] = words[b + 1] = 0;
      }
    }
    st[0] = hi;
    st[1] = lo;
  }
  words[(lo >> 5) & (sa->blocks * 2 - 1)] |= 1u << (lo & 31);
}

/* ---------- opening ---------- */

static bool checksum_ok(const uint8_t *h) {
  uint32_t sum = 0;
  for (int i = 0; i < OUTER_IPV4; i += 2) sum += ((uint32_t)h[i] << 8) | h[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum == 0xffff;
}

/* GCM's keystream is its own inverse: running it again over the bytes restores them. */
static void rerun_keystream(esp_sa *sa, const uint8_t nonce[12], uint8_t *p, uint32_t len) {
  int n;
  EVP_CIPHER_CTX *ctx = sa->ctx;
  if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) == 1) EVP_DecryptUpdate(ctx, p, &n, p, (int)len);
}

esp_open_result esp_open(esp_sa *sa, uint8_t *p, uint32_t len, esp_opened *o) {
  if (len < OUTER_IPV4 || p[0] != 0x45) return ESP_NOT_OURS;
  if ((((uint32_t)p[2] << 8) | p[3]) != len || !checksum_ok(p)) return ESP_NOT_OURS;
  if ((p[6] & 0x3f) != 0 || p[7] != 0 || p[9] != IPPROTO_ESP_) return ESP_NOT_OURS;
  uint8_t *esp = p + OUTER_IPV4;
  if (len < OUTER_IPV4 + ESP_HEADER + ICV + 4) return ESP_NOT_OURS;
  const uint32_t ct_len = len - OUTER_IPV4 - ESP_HEADER - ICV;
  if ((ct_len & 3) != 0 || be32(esp) != sa->spi) return ESP_NOT_OURS;
  const uint32_t lo = be32(esp + 4);
  const int64_t hi = infer_high(sa, lo);
  if (hi < 0 || hi > 0xffffffffLL || !replay_check(sa, (uint32_t)hi, lo)) return ESP_NOT_OURS;

  uint8_t *ct = esp + ESP_HEADER;
  uint8_t aad[12];
  int n;
  nonce_and_aad(sa, (uint32_t)hi, lo, esp + 8, o->nonce, aad);
  EVP_CIPHER_CTX *ctx = sa->ctx;
  if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, o->nonce) != 1 || EVP_DecryptUpdate(ctx, NULL, &n, aad, 12) != 1) {
    return ESP_NOT_OURS;
  }
  if (EVP_DecryptUpdate(ctx, ct, &n, ct, (int)ct_len) != 1) {
    rerun_keystream(sa, o->nonce, ct, ct_len);
    return ESP_NOT_OURS;
  }
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, ICV, ct + ct_len) != 1 ||
      EVP_DecryptFinal_ex(ctx, ct + ct_len, &n) != 1) {
    rerun_keystream(sa, o->nonce, ct, ct_len);
    return ESP_FORGED;
  }
  o->ct = ct;
  o->ct_len = ct_len;
  o->hi = (uint32_t)hi;
  o->lo = lo;
  /* The trailer, as EspOpener checks it; an IPv6 inner packet is JS's to refuse. */
  const uint32_t pad = ct[ct_len - 2];
  const uint8_t next = ct[ct_len - 1];
  if (pad + 2 >= ct_len || next != ESP_NEXT_HEADER_IPV4 || ct[0] >> 4 != 4) {
    esp_reject(sa, o);
    return ESP_NOT_OURS;
  }
  const uint32_t inner_len = ct_len - 2 - pad;
  for (uint32_t i = 1; i <= pad; i++) {
    if (ct[inner_len + i - 1] != i) {
      esp_reject(sa, o);
      return ESP_NOT_OURS;
    }
  }
  o->inner = ct;
  o->inner_len = inner_len;
  return ESP_OPENED;
}

void esp_accept(esp_sa *sa, const esp_opened *o) {
  replay_update(sa, o->hi, o->lo);
}

void esp_reject(esp_sa *sa, const esp_opened *o) {
  rerun_keystream(sa, o->nonce, o->ct, o->ct_len);
}

/* TUN echo in plain C: the floor for one wake-up of an idle process. See run.mjs. */
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <stdlib.h>
#include <poll.h>
static unsigned short cs(unsigned char *b, int n) { unsigned long s = 0; for (int i = 0; i + 1 < n; i += 2) s += (b[i] << 8) | b[i + 1]; if (n & 1) s += b[n - 1] << 8; while (s >> 16) s = (s & 0xffff) + (s >> 16); return ~s & 0xffff; }
int main() {
  int fd = open("/dev/net/tun", O_RDWR); struct ifreq r; memset(&r, 0, sizeof r); r.ifr_flags = IFF_TUN | IFF_NO_PI; strcpy(r.ifr_name, "e0"); ioctl(fd, TUNSETIFF, &r);
  system("ip addr add 10.77.0.1/24 dev e0; ip link set e0 up");
  unsigned char b[2048]; struct pollfd p = {fd, POLLIN, 0};
  for (;;) { poll(&p, 1, -1); int n = read(fd, b, sizeof b); if (n < 28 || b[9] != 1) continue;
    for (int j = 0; j < 4; j++) { unsigned char t = b[12 + j]; b[12 + j] = b[16 + j]; b[16 + j] = t; }
    b[20] = 0; b[22] = b[23] = 0; unsigned short c = cs(b + 20, n - 20); b[22] = c >> 8; b[23] = c & 255; write(fd, b, n); }
}

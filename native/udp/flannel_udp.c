/*
 * The udp backend's data path: a TUN device and a UDP socket joined by two native threads, so packets never pass
 * through the JavaScript event loop (which only edits the peer table and reads counters). Wire format as upstream
 * flannel's udp backend: the UDP payload is the inner IPv4 packet, unchanged except for its TTL.
 *
 *   openTun(name)                      -> { fd, name }    IFF_TUN | IFF_NO_PI, non-blocking, close-on-exec
 *   startProxy({ tunFd, localAddr, port, mtu }) -> handle   (takes ownership of tunFd: closes it when it throws)
 *   setRoute(handle, network, prefixLen, peerAddr, peerPort)          addresses as uint32 in host order
 *   deleteRoute(handle, network, prefixLen)
 *   stats(handle)                       -> counters (numbers)
 *   stopProxy(handle)                   joins the threads, closes the socket and the TUN fd (removing the device)
 *
 * Errors thrown carry the errno's own name as `code` (EPERM, ENODEV, EBUSY...) and the failed call as `syscall`.
 *
 * Queues are the kernel's: the socket buffers (bounded by SO_SNDBUF/SO_RCVBUF) and the TUN device's. Sends are
 * non-blocking, so a slow or vanished peer costs a counted drop, never a stalled thread.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <node_api.h>
#include "../common/napi_errors.h"
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#define BATCH 64
#define MAX_PACKET 65536
#define SOCKET_BUFFER_BYTES (4 * 1024 * 1024)
#define VNET_HDR sizeof(struct virtio_net_hdr)
/* One UDP send carries at most this much (an IPv4 datagram's limit less its headers), and UDP GSO at most 64
   segments per call on older kernels. */
#define MAX_GSO_BYTES 65000
#define MAX_GSO_SEGMENTS 64

/* ---- peer table: one open-addressing hash per prefix length present, guarded by a rwlock ---- */

struct route {
  uint32_t network; /* host order, masked */
  uint32_t peer;    /* host order */
  uint16_t port;
  uint8_t used;     /* 0 empty, 1 live, 2 deleted (tombstone) */
};

struct prefix_table {
  struct route *slots;
  uint32_t capacity; /* power of two */
  uint32_t live;
  uint32_t filled; /* live + tombstones */
};

struct table {
  pthread_rwlock_t lock;
  struct prefix_table by_len[33];
  /* Prefix lengths with live routes, longest first, so a lookup tries the most specific match first. */
  uint8_t lens[33];
  int nlens;
};

static uint32_t mask_of(int len) { return len == 0 ? 0 : 0xffffffffu << (32 - len); }

static uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

static struct route *find_slot(struct prefix_table *t, uint32_t network, int for_insert) {
  if (t->capacity == 0) return NULL;
  uint32_t i = hash32(network) & (t->capacity - 1);
  struct route *tomb = NULL;
  for (uint32_t n = 0; n < t->capacity; n++, i = (i + 1) & (t->capacity - 1)) {
    struct route *r = &t->slots[i];
    if (r->used == 0) return for_insert ? (tomb ? tomb : r) : NULL;
    if (r->used == 2) {
      if (!tomb) tomb = r;
      continue;
    }
    if (r->network == network) return r;
  }
  return for_insert ? tomb : NULL;
}

static int grow(struct prefix_table *t) {
  uint32_t capacity = t->capacity ? t->capacity * 2 : 64;
  /* Rehashing also drops tombstones, so a table churned by adds and deletes does not fill up with them. */
  if (t->live * 2 < t->capacity) capacity = t->capacity;
  struct route *slots = calloc(capacity, sizeof(struct route));
  if (!slots) return -1;
  struct prefix_table next = { slots, capacity, 0, 0 };
  for (uint32_t i = 0; i < t->capacity; i++) {
    if (t->slots[i].used != 1) continue;
    struct route *r = find_slot(&next, t->slots[i].network, 1);
    *r = t->slots[i];
    next.live++;
    next.filled++;
  }
  free(t->slots);
  *t = next;
  return 0;
}

static void refresh_lens(struct table *tab) {
  tab->nlens = 0;
  for (int len = 32; len >= 0; len--) if (tab->by_len[len].live > 0) tab->lens[tab->nlens++] = (uint8_t)len;
}

static int table_set(struct table *tab, uint32_t network, int len, uint32_t peer, uint16_t port) {
  struct prefix_table *t = &tab->by_len[len];
  network &= mask_of(len);
  if ((t->filled + 1) * 4 > t->capacity * 3 && grow(t) != 0) return -1;
  struct route *r = find_slot(t, network, 1);
  if (!r) return -1;
  if (r->used != 1) {
    if (r->used == 0) t->filled++;
    t->live++;
  }
  r->network = network;
  r->peer = peer;
  r->port = port;
  r->used = 1;
  refresh_lens(tab);
  return 0;
}

static int table_delete(struct table *tab, uint32_t network, int len) {
  struct prefix_table *t = &tab->by_len[len];
  struct route *r = find_slot(t, network & mask_of(len), 0);
  if (!r) return 0;
  r->used = 2;
  t->live--;
  refresh_lens(tab);
  return 1;
}

/* Caller holds the read lock. */
static const struct route *table_lookup(struct table *tab, uint32_t dst) {
  for (int i = 0; i < tab->nlens; i++) {
    int len = tab->lens[i];
    struct route *r = find_slot(&tab->by_len[len], dst & mask_of(len), 0);
    if (r) return r;
  }
  return NULL;
}

/* ---- counters: each written by one thread, read by JavaScript with relaxed atomics ---- */

enum counter {
  C_TUN_RX_PACKETS, /* read from the TUN device */
  C_TX_PACKETS,     /* sent to peers */
  C_TX_BYTES,
  C_RX_PACKETS,     /* received from peers */
  C_RX_BYTES,
  C_TUN_TX_PACKETS, /* written to the TUN device */
  C_ICMP_SENT,      /* net unreachable written back into the TUN device */
  C_DROP_NO_ROUTE,
  C_DROP_QUEUE_FULL,
  C_DROP_SEND_ERROR,
  C_DROP_TTL_EXPIRED,
  C_DROP_MALFORMED,
  C_DROP_NOT_IPV4,
  C_DROP_TUN_WRITE,
  C_TUN_READ_ERRORS,
  C_SOCKET_ERRORS,
  C_COUNT
};

static const char *counter_names[C_COUNT] = {
  "tunRxPackets", "txPackets", "txBytes", "rxPackets", "rxBytes", "tunTxPackets", "icmpSent",
  "dropNoRoute", "dropQueueFull", "dropSendError", "dropTtlExpired", "dropMalformed", "dropNotIpv4", "dropTunWrite",
  "tunReadErrors", "socketErrors",
};

struct proxy {
  int tun;
  int sock;
  int stop; /* eventfd */
  int mtu;
  uint16_t port;
  struct table table;
  pthread_t to_peers, from_peers;
  int threads;
  uint64_t counters[C_COUNT];
  int stopped;
  /* The threads' buffers, allocated before they start so a thread has nothing left that can fail once running. */
  uint8_t *tun_buf;   /* to_peers: one read from the TUN device, virtio header first */
  uint8_t *gso_out;   /* to_peers: segments of one TSO packet laid end to end */
  uint8_t *recv_bufs; /* from_peers: BATCH datagrams of MAX_PACKET bytes */
  uint8_t *merge_buf; /* from_peers: the packet being coalesced */
};

static inline void bump(struct proxy *p, enum counter c, uint64_t n) {
  __atomic_fetch_add(&p->counters[c], n, __ATOMIC_RELAXED);
}

/* RFC 1624 incremental update: TTL is the high byte of the 16-bit word it shares with the protocol. */
static int decrement_ttl(struct iphdr *ip) {
  if (ip->ttl <= 1) return 0;
  ip->ttl--;
  uint32_t sum = (uint32_t)ntohs(ip->check) + 0x0100;
  sum = (sum & 0xffff) + (sum >> 16);
  ip->check = htons((uint16_t)sum);
  return 1;
}

/* Sum of 16-bit big-endian words, unfolded. */
static uint32_t sum16(const uint8_t *b, size_t len, uint32_t sum) {
  for (size_t i = 0; i + 1 < len; i += 2) sum += (uint32_t)(b[i] << 8 | b[i + 1]);
  if (len & 1) sum += (uint32_t)(b[len - 1] << 8);
  return sum;
}

static uint16_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

/* The Internet checksum of `len` bytes, ready to store in a header field. */
static uint16_t checksum(const void *data, size_t len) {
  return htons(fold(sum16(data, len, 0)));
}

/* A TCP segment's pseudo-header (addresses, protocol, length), unfolded. */
static uint32_t pseudo_sum(const struct iphdr *ip, size_t tcp_len) {
  uint32_t sum = sum16((const uint8_t *)&ip->saddr, 4, 0);
  sum = sum16((const uint8_t *)&ip->daddr, 4, sum);
  return sum + IPPROTO_TCP + (uint32_t)tcp_len;
}

/* One packet into the TUN device behind its virtio header; false when the kernel did not take it whole. */
static int write_tun(struct proxy *p, const struct virtio_net_hdr *vh, const void *pkt, size_t len) {
  struct iovec out[2] = { { (void *)vh, sizeof(*vh) }, { (void *)pkt, len } };
  return writev(p->tun, out, 2) == (ssize_t)(sizeof(*vh) + len);
}

static const struct virtio_net_hdr NO_OFFLOAD = { 0 };

/* Returns the IPv4 header when `len` bytes hold a well-formed one whose total length fits, else NULL. */
static struct iphdr *ipv4_header(uint8_t *pkt, ssize_t len) {
  if (len < (ssize_t)sizeof(struct iphdr)) return NULL;
  struct iphdr *ip = (struct iphdr *)pkt;
  if (ip->version != 4 || ip->ihl < 5 || (ssize_t)ip->ihl * 4 > len || ntohs(ip->tot_len) > len) return NULL;
  return ip;
}

/* ICMP "net unreachable" for a packet we have no peer for, written back into the TUN device (as upstream). */
static void send_net_unreachable(struct proxy *p, const uint8_t *offender, size_t offender_len) {
  const struct iphdr *in = (const struct iphdr *)offender;
  if (in->protocol == IPPROTO_ICMP) return;           /* never an error about an error */
  if ((ntohs(in->frag_off) & 0x1fff) != 0) return;    /* only about first fragments */
  uint8_t buf[sizeof(struct iphdr) + 8 + 60 + 8];
  size_t quoted = in->ihl * 4 + 8;
  if (quoted > offender_len) quoted = offender_len;
  size_t total = sizeof(struct iphdr) + 8 + quoted;
  memset(buf, 0, sizeof(buf));
  struct iphdr *ip = (struct iphdr *)buf;
  ip->version = 4;
  ip->ihl = 5;
  ip->tot_len = htons((uint16_t)total);
  ip->ttl = 64;
  ip->protocol = IPPROTO_ICMP;
  /* From the unreachable destination, as upstream: our own TUN address would be a martian (a local source
     arriving from outside) and the kernel would drop the error before it reached the sender. */
  ip->saddr = in->daddr;
  ip->daddr = in->saddr;
  ip->check = checksum(ip, sizeof(struct iphdr));
  uint8_t *icmp = buf + sizeof(struct iphdr);
  icmp[0] = ICMP_DEST_UNREACH;
  icmp[1] = ICMP_NET_UNREACH;
  memcpy(icmp + 8, offender, quoted);
  uint16_t sum = checksum(icmp, 8 + quoted);
  memcpy(icmp + 2, &sum, 2);
  if (write_tun(p, &NO_OFFLOAD, buf, total)) bump(p, C_ICMP_SENT, 1);
}

static int wait_readable(struct proxy *p, int fd) {
  struct pollfd fds[2] = { { fd, POLLIN, 0 }, { p->stop, POLLIN, 0 } };
  for (;;) {
    int n = poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (fds[1].revents & POLLIN)) return 0;
    if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      /* The device went away under us: nothing more will come; wait for stop. */
      if (fds[0].revents & POLLNVAL) return 0;
      struct pollfd only_stop = { p->stop, POLLIN, 0 };
      poll(&only_stop, 1, -1);
      return 0;
    }
    if (fds[0].revents & POLLIN) return 1;
  }
}

/* The kernel left a checksum for us to finish (TUN_F_CSUM): the field holds the pseudo-header sum. */
static void finish_checksum(uint8_t *pkt, size_t len, const struct virtio_net_hdr *vh) {
  size_t start = vh->csum_start, at = start + vh->csum_offset;
  if (start >= len || at + 2 > len) return;
  uint16_t sum = fold(sum16(pkt + start, len - start, 0));
  pkt[at] = (uint8_t)(sum >> 8);
  pkt[at + 1] = (uint8_t)sum;
}

static uint16_t tcp_checksum(const struct iphdr *ip, const uint8_t *tcp, size_t tcp_len) {
  return fold(sum16(tcp, tcp_len, pseudo_sum(ip, tcp_len)));
}

struct sender {
  struct proxy *p;
  uint8_t *out;                 /* segments laid end to end for one UDP GSO send */
  struct sockaddr_in dest;
  int gso_ok;                   /* cleared if the kernel refuses UDP_SEGMENT: then one datagram per send */
};

static void count_send_error(struct proxy *p, int err, uint64_t packets) {
  bump(p, err == EAGAIN || err == ENOBUFS ? C_DROP_QUEUE_FULL : C_DROP_SEND_ERROR, packets);
}

/* Sends `count` datagrams of `seg` bytes each (the last may be shorter) laid end to end in `buf`. */
static void send_segments(struct sender *s, const uint8_t *buf, size_t total, size_t seg, int count) {
  struct proxy *p = s->p;
  if (count > 1 && s->gso_ok) {
    char control[CMSG_SPACE(sizeof(uint16_t))];
    memset(control, 0, sizeof(control));
    struct iovec iov = { (void *)buf, total };
    struct msghdr msg = { &s->dest, sizeof(s->dest), &iov, 1, control, sizeof(control), 0 };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t gso = (uint16_t)seg;
    memcpy(CMSG_DATA(cm), &gso, sizeof(gso));
    for (;;) {
      ssize_t r = sendmsg(p->sock, &msg, MSG_DONTWAIT);
      if (r >= 0) {
        bump(p, C_TX_PACKETS, (uint64_t)count);
        bump(p, C_TX_BYTES, (uint64_t)r);
        return;
      }
      if (errno == EINTR) continue;
      if (errno == EIO || errno == EINVAL || errno == EOPNOTSUPP) {
        s->gso_ok = 0; /* no UDP GSO here: fall through to one datagram per send */
        break;
      }
      count_send_error(p, errno, (uint64_t)count);
      return;
    }
  }
  struct mmsghdr msgs[MAX_GSO_SEGMENTS];
  struct iovec iovs[MAX_GSO_SEGMENTS];
  for (int i = 0; i < count; i++) {
    size_t off = (size_t)i * seg;
    iovs[i].iov_base = (void *)(buf + off);
    iovs[i].iov_len = i == count - 1 ? total - off : seg;
    memset(&msgs[i], 0, sizeof(msgs[i]));
    msgs[i].msg_hdr.msg_name = &s->dest;
    msgs[i].msg_hdr.msg_namelen = sizeof(s->dest);
    msgs[i].msg_hdr.msg_iov = &iovs[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  int done = 0;
  while (done < count) {
    int sent = sendmmsg(p->sock, msgs + done, (unsigned)(count - done), MSG_DONTWAIT);
    if (sent > 0) {
      for (int i = done; i < done + sent; i++) bump(p, C_TX_BYTES, msgs[i].msg_len);
      bump(p, C_TX_PACKETS, (uint64_t)sent);
      done += sent;
      continue;
    }
    if (errno == EINTR) continue;
    count_send_error(p, errno, 1);
    done++;
  }
}

/*
 * Cuts a TCP packet the kernel built for a TSO-capable device into packets of `mss` payload bytes, as the NIC
 * would: each gets its own IP length, id and checksum, sequence number, and TCP checksum; FIN and PSH only on the
 * last, CWR only on the first. Sent in runs of as many as one UDP GSO call takes.
 */
static void send_tso(struct sender *s, uint8_t *pkt, size_t len, size_t mss) {
  struct iphdr *ip = (struct iphdr *)pkt;
  size_t iphl = ip->ihl * 4u;
  if (len < iphl + sizeof(struct tcphdr) || ip->protocol != IPPROTO_TCP) {
    bump(s->p, C_DROP_MALFORMED, 1);
    return;
  }
  struct tcphdr *tcp = (struct tcphdr *)(pkt + iphl);
  size_t hl = iphl + tcp->doff * 4u;
  if (tcp->doff < 5 || hl > len || mss == 0) {
    bump(s->p, C_DROP_MALFORMED, 1);
    return;
  }
  size_t payload = len - hl, seg = hl + mss;
  int per_send = (int)(MAX_GSO_BYTES / seg);
  if (per_send > MAX_GSO_SEGMENTS) per_send = MAX_GSO_SEGMENTS;
  if (per_send < 1) per_send = 1;
  uint32_t seq = ntohl(tcp->seq);
  uint16_t id = ntohs(ip->id);
  size_t off = 0;
  int index = 0;
  while (off < payload) {
    int count = 0;
    size_t total = 0;
    while (count < per_send && off < payload) {
      size_t n = payload - off < mss ? payload - off : mss;
      uint8_t *o = s->out + total;
      memcpy(o, pkt, hl);
      memcpy(o + hl, pkt + hl + off, n);
      struct iphdr *oip = (struct iphdr *)o;
      struct tcphdr *otcp = (struct tcphdr *)(o + iphl);
      int last = off + n >= payload;
      oip->tot_len = htons((uint16_t)(hl + n));
      oip->id = htons((uint16_t)(id + index));
      oip->check = 0;
      oip->check = checksum(oip, iphl);
      otcp->seq = htonl(seq + (uint32_t)off);
      uint8_t *flags = o + iphl + 13; /* FIN 0x01, PSH 0x08, CWR 0x80 */
      if (index > 0) *flags &= (uint8_t)~0x80;
      if (!last) *flags &= (uint8_t)~(0x01 | 0x08);
      otcp->check = 0;
      otcp->check = htons(tcp_checksum(oip, (const uint8_t *)otcp, hl - iphl + n));
      total += hl + n;
      off += n;
      count++;
      index++;
    }
    send_segments(s, s->out, total, seg, count);
  }
}

/* TUN -> peers: read what the kernel routed into the device, look up the peer, send. */
static void *run_to_peers(void *arg) {
  struct proxy *p = arg;
  uint8_t *buf = p->tun_buf;
  struct sender s = { p, p->gso_out, { 0 }, 1 };
  uint8_t *pkt = buf + VNET_HDR;
  while (wait_readable(p, p->tun)) {
    /* Bounded: the device is drained, then poll again (so stop is seen between bursts). */
    for (int round = 0; round < 256; round++) {
      ssize_t got = read(p->tun, buf, VNET_HDR + MAX_PACKET);
      if (got < 0) {
        if (errno != EAGAIN && errno != EINTR) bump(p, C_TUN_READ_ERRORS, 1);
        break;
      }
      bump(p, C_TUN_RX_PACKETS, 1);
      if (got < (ssize_t)VNET_HDR) {
        bump(p, C_DROP_MALFORMED, 1);
        continue;
      }
      struct virtio_net_hdr vh;
      memcpy(&vh, buf, sizeof(vh));
      size_t len = (size_t)got - VNET_HDR;
      int gso = (vh.gso_type & ~VIRTIO_NET_HDR_GSO_ECN) == VIRTIO_NET_HDR_GSO_TCPV4;
      /* A TSO packet's header is checked by send_tso; only its version and header length matter here. */
      struct iphdr *ip = gso ? (len >= sizeof(struct iphdr) && pkt[0] >> 4 == 4 && (pkt[0] & 15) >= 5 ? (struct iphdr *)pkt : NULL)
                             : ipv4_header(pkt, (ssize_t)len);
      if (!ip) {
        /* IPv6 the kernel sends on any up device (router solicitations, MLD) is not ours to carry. */
        bump(p, len > 0 && (pkt[0] >> 4) == 6 ? C_DROP_NOT_IPV4 : C_DROP_MALFORMED, 1);
        continue;
      }
      uint32_t dst = ntohl(ip->daddr);
      pthread_rwlock_rdlock(&p->table.lock);
      const struct route *r = table_lookup(&p->table, dst);
      uint32_t peer = r ? r->peer : 0;
      uint16_t port = r ? r->port : 0;
      pthread_rwlock_unlock(&p->table.lock);
      if (!r) {
        bump(p, C_DROP_NO_ROUTE, 1);
        send_net_unreachable(p, pkt, len);
        continue;
      }
      if (!decrement_ttl(ip)) {
        bump(p, C_DROP_TTL_EXPIRED, 1);
        continue;
      }
      s.dest.sin_family = AF_INET;
      s.dest.sin_addr.s_addr = htonl(peer);
      s.dest.sin_port = htons(port);
      if (gso) {
        send_tso(&s, pkt, len, vh.gso_size);
        continue;
      }
      if (vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) finish_checksum(pkt, len, &vh);
      send_segments(&s, pkt, len, len, 1);
    }
  }
  return NULL;
}

/*
 * Receive-side coalescing, as a NIC's GRO would do: consecutive segments of one TCP flow become one large packet
 * handed to the TUN device with a GSO header, so the kernel runs its receive path once per ~64 KiB instead of once
 * per segment. Only plain in-order data segments (ACK, PSH on the last) with identical headers merge; anything
 * else is written as it came.
 */
struct coalescer {
  struct proxy *p;
  uint8_t *buf;   /* the packet being built */
  size_t len;     /* its length so far; 0 = nothing pending */
  size_t hl;      /* IP + TCP header length */
  size_t mss;     /* payload of its first segment: every segment but the last has exactly this much */
  int segments;
  uint32_t next_seq;
};

static void write_plain(struct proxy *p, const uint8_t *pkt, size_t len) {
  bump(p, write_tun(p, &NO_OFFLOAD, pkt, len) ? C_TUN_TX_PACKETS : C_DROP_TUN_WRITE, 1);
}

static void flush(struct coalescer *c) {
  if (c->len == 0) return;
  if (c->segments == 1) {
    write_plain(c->p, c->buf, c->len);
    c->len = 0;
    return;
  }
  struct iphdr *ip = (struct iphdr *)c->buf;
  size_t iphl = ip->ihl * 4u;
  ip->tot_len = htons((uint16_t)c->len);
  ip->check = 0;
  ip->check = checksum(ip, iphl);
  /* CHECKSUM_PARTIAL: the field holds the pseudo-header sum, the kernel (or the stack that receives it) does the rest. */
  struct tcphdr *tcp = (struct tcphdr *)(c->buf + iphl);
  tcp->check = htons((uint16_t)~fold(pseudo_sum(ip, c->len - iphl)));
  struct virtio_net_hdr vh;
  memset(&vh, 0, sizeof(vh));
  vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  vh.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  vh.hdr_len = (uint16_t)c->hl;
  vh.gso_size = (uint16_t)c->mss;
  vh.csum_start = (uint16_t)iphl;
  vh.csum_offset = 16;
  bump(c->p, write_tun(c->p, &vh, c->buf, c->len) ? C_TUN_TX_PACKETS : C_DROP_TUN_WRITE, (uint64_t)c->segments);
  c->len = 0;
}

/*
 * A segment that may merge: TCP over a plain IPv4 header, not fragmented, data with ACK and at most PSH besides,
 * and a correct TCP checksum. The merged packet goes to the kernel as "checksum still to compute", which the
 * kernel's own receive path takes as verified, so a damaged segment must be caught here (as the kernel's GRO
 * does); written as it came instead, the kernel drops it.
 */
static size_t mergeable(const uint8_t *pkt, size_t len) {
  const struct iphdr *ip = (const struct iphdr *)pkt;
  if (ip->protocol != IPPROTO_TCP || ip->ihl != 5 || (ntohs(ip->frag_off) & 0x3fff) != 0) return 0;
  if (len < 20 + sizeof(struct tcphdr)) return 0;
  const struct tcphdr *tcp = (const struct tcphdr *)(pkt + 20);
  size_t hl = 20 + tcp->doff * 4u;
  uint8_t flags = pkt[20 + 13];
  if (tcp->doff < 5 || hl >= len || (flags & ~0x08) != 0x10) return 0;
  if (tcp_checksum(ip, pkt + 20, len - 20) != 0) return 0;
  return hl;
}

static void coalesce(struct coalescer *c, const uint8_t *pkt, size_t len) {
  size_t hl = mergeable(pkt, len);
  if (c->len > 0 && hl == c->hl) {
    const struct iphdr *ip = (const struct iphdr *)pkt, *first = (const struct iphdr *)c->buf;
    const struct tcphdr *tcp = (const struct tcphdr *)(pkt + 20);
    size_t payload = len - hl;
    /* Same flow, the very next bytes, same header fields (options included), not bigger than the first segment,
       and room left; PSH on the pending packet means it already ended a burst. */
    if (ip->saddr == first->saddr && ip->daddr == first->daddr && ip->tos == first->tos && ip->ttl == first->ttl &&
        memcmp(pkt + 20, c->buf + 20, 4) == 0 && ntohl(tcp->seq) == c->next_seq &&
        /* ack number, header length, flags but PSH (the segment ending a burst carries it), window */
        memcmp(pkt + 28, c->buf + 28, 5) == 0 && (pkt[33] & ~0x08) == (c->buf[33] & ~0x08) && memcmp(pkt + 34, c->buf + 34, 2) == 0 &&
        memcmp(pkt + 40, c->buf + 40, hl - 40) == 0 &&
        (c->buf[20 + 13] & 0x08) == 0 && payload <= c->mss && c->len + payload <= 65535 - 60) {
      memcpy(c->buf + c->len, pkt + hl, payload);
      c->len += payload;
      c->segments++;
      c->next_seq += (uint32_t)payload;
      c->buf[20 + 13] |= pkt[20 + 13] & 0x08;
      if (payload < c->mss) flush(c); /* a short segment ends what can follow it */
      return;
    }
  }
  flush(c);
  if (hl == 0) {
    write_plain(c->p, pkt, len);
    return;
  }
  memcpy(c->buf, pkt, len);
  c->len = len;
  c->hl = hl;
  c->mss = len - hl;
  c->segments = 1;
  c->next_seq = ntohl(((const struct tcphdr *)(pkt + 20))->seq) + (uint32_t)(len - hl);
}

/* Peers -> TUN: receive in batches (coalesced by UDP GRO where the kernel can), hand each inner packet to the
   kernel through the device. */
static void *run_from_peers(void *arg) {
  struct proxy *p = arg;
  uint8_t (*bufs)[MAX_PACKET] = (uint8_t (*)[MAX_PACKET])p->recv_bufs;
  struct mmsghdr msgs[BATCH];
  struct iovec iovs[BATCH];
  char controls[BATCH][CMSG_SPACE(sizeof(int))];
  struct coalescer c = { p, p->merge_buf, 0, 0, 0, 0, 0 };
  while (wait_readable(p, p->sock)) {
    for (int round = 0; round < 16; round++) {
      for (int i = 0; i < BATCH; i++) {
        iovs[i].iov_base = bufs[i];
        iovs[i].iov_len = MAX_PACKET;
        memset(&msgs[i], 0, sizeof(msgs[i]));
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_control = controls[i];
        msgs[i].msg_hdr.msg_controllen = sizeof(controls[i]);
      }
      int n = recvmmsg(p->sock, msgs, BATCH, MSG_DONTWAIT, NULL);
      if (n <= 0) {
        if (n < 0 && errno != EAGAIN && errno != EINTR) bump(p, C_SOCKET_ERRORS, 1);
        break;
      }
      for (int i = 0; i < n; i++) {
        size_t total = msgs[i].msg_len;
        size_t seg = total;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msgs[i].msg_hdr); cm; cm = CMSG_NXTHDR(&msgs[i].msg_hdr, cm)) {
          if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
            int size;
            memcpy(&size, CMSG_DATA(cm), sizeof(size));
            if (size > 0) seg = (size_t)size;
          }
        }
        if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
          bump(p, C_DROP_MALFORMED, 1);
          continue;
        }
        /* Bounded by the datagram: each pass consumes one coalesced datagram of `seg` bytes (the last shorter). */
        for (size_t off = 0; off < total; off += seg) {
          size_t dlen = total - off < seg ? total - off : seg;
          uint8_t *pkt = bufs[i] + off;
          bump(p, C_RX_PACKETS, 1);
          bump(p, C_RX_BYTES, (uint64_t)dlen);
          struct iphdr *ip = ipv4_header(pkt, (ssize_t)dlen);
          if (!ip) {
            bump(p, C_DROP_MALFORMED, 1);
            continue;
          }
          if (!decrement_ttl(ip)) {
            bump(p, C_DROP_TTL_EXPIRED, 1);
            continue;
          }
          coalesce(&c, pkt, ntohs(ip->tot_len));
        }
      }
      flush(&c);
      if (n < BATCH) break;
    }
  }
  return NULL;
}

/* ---- N-API glue ---- */

/* The errno's own name (EPERM, ENODEV, EBUSY...), so JavaScript can branch on `code` as on Node's system errors. */
static const char *errno_name(int err) {
#ifdef __GLIBC__
#if __GLIBC_PREREQ(2, 32)
  const char *name = strerrorname_np(err);
  if (name) return name;
#endif
#endif
  (void)err;
  return "EUNKNOWN";
}

/* Throws an Error whose `code` is the errno's name and whose `syscall` is the call that failed. */
static napi_value throw_errno(napi_env env, const char *syscall, const char *what, int err) {
  char message[256];
  snprintf(message, sizeof(message), "%s: %s", what, strerror(err));
  napi_value msg, code, call, error;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &call);
  napi_create_error(env, code, msg, &error);
  napi_set_named_property(env, error, "syscall", call);
  napi_throw(env, error);
  return NULL;
}

static int get_u32_prop(napi_env env, napi_value obj, const char *key, uint32_t *out) {
  napi_value v;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return -1;
  return napi_get_value_uint32(env, v, out) == napi_ok ? 0 : -1;
}

/* The tun device node. A container has no /dev/net/tun unless its runtime was told to add it (upstream's manifest
   asks for a privileged pod for the udp backend); containerd's default device rules do allow the tun device (c
   10:200) and its default capabilities include CAP_MKNOD, so the node is made here when it is missing. Any other
   failure, or a mknod that is refused, is reported with the open's own errno. */
static int open_tun_device(void) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd >= 0 || errno != ENOENT) return fd;
  if (mkdir("/dev/net", 0755) < 0 && errno != EEXIST) { errno = ENOENT; return -1; }
  if (mknod("/dev/net/tun", S_IFCHR | 0666, makedev(10, 200)) < 0 && errno != EEXIST) { errno = ENOENT; return -1; }
  return open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
}

/* Attaches `fd` to the TUN device `ifr->ifr_name` with our offloads; on failure returns the errno and names the
   request in `request`. */
static int configure_tun(int fd, struct ifreq *ifr, const char **request) {
  /* VNET_HDR + TSO: the kernel hands us whole TCP send windows (up to 64 KiB) in one read instead of one packet
     per read, and we cut them into MTU-sized packets ourselves, as a NIC would. */
  ifr->ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
  int vnet_size = (int)VNET_HDR;
  *request = "TUNSETIFF";
  if (ioctl(fd, TUNSETIFF, ifr) < 0) return errno;
  *request = "TUNSETVNETHDRSZ";
  if (ioctl(fd, TUNSETVNETHDRSZ, &vnet_size) < 0) return errno;
  *request = "TUNSETOFFLOAD";
  if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4) < 0) return errno;
  return 0;
}

/* { fd, name } for openTun; false (with an exception pending) when N-API fails. */
static int tun_result(napi_env env, int fd, const char *name, napi_value *result) {
  napi_value vfd, vname;
  if (napi_create_object(env, result) != napi_ok || napi_create_int32(env, fd, &vfd) != napi_ok ||
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &vname) != napi_ok ||
      napi_set_named_property(env, *result, "fd", vfd) != napi_ok || napi_set_named_property(env, *result, "name", vname) != napi_ok) {
    napi_throw_error(env, NULL, "flannel_udp: N-API call failed building openTun's result");
    return 0;
  }
  return 1;
}

static napi_value open_tun(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[IFNAMSIZ] = { 0 };
  size_t got = 0;
  /* Measured first: a longer name would be cut silently by the copy below. */
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], NULL, 0, &got) != napi_ok || got == 0 || got >= IFNAMSIZ ||
      napi_get_value_string_utf8(env, argv[0], name, sizeof(name), &got) != napi_ok) {
    napi_throw_type_error(env, NULL, "openTun(name): name must be a non-empty string shorter than 16 bytes");
    return NULL;
  }
  int fd = open_tun_device();
  if (fd < 0) return throw_errno(env, "open", "open /dev/net/tun", errno);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  memcpy(ifr.ifr_name, name, got); /* got < IFNAMSIZ: napi_get_value_string_utf8 keeps room for the NUL */
  const char *request = "";
  int err = configure_tun(fd, &ifr, &request);
  napi_value result;
  if (err == 0 && tun_result(env, fd, ifr.ifr_name, &result)) return result;
  /* Closing the descriptor also removes the device TUNSETIFF may have made. */
  close(fd);
  if (err == 0) return NULL;
  char what[64];
  snprintf(what, sizeof(what), "%s %s", request, name);
  return throw_errno(env, "ioctl", what, err);
}

/* Joins the threads that started and closes every descriptor the proxy holds (the TUN fd's close removes the device). */
static void stop_threads(struct proxy *p) {
  if (p->stopped) return;
  p->stopped = 1;
  uint64_t one = 1;
  if (p->stop >= 0 && write(p->stop, &one, sizeof(one)) < 0) { /* the threads also stop when their fds close below */ }
  if (p->threads >= 1) pthread_join(p->to_peers, NULL);
  if (p->threads >= 2) pthread_join(p->from_peers, NULL);
  if (p->sock >= 0) close(p->sock);
  if (p->tun >= 0) close(p->tun);
  if (p->stop >= 0) close(p->stop);
}

static void free_proxy(struct proxy *p) {
  stop_threads(p);
  for (int len = 0; len <= 32; len++) free(p->table.by_len[len].slots);
  pthread_rwlock_destroy(&p->table.lock);
  free(p->tun_buf);
  free(p->gso_out);
  free(p->recv_bufs);
  free(p->merge_buf);
  free(p);
}

static void finalize_proxy(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free_proxy(data);
}

static struct proxy *unwrap(napi_env env, napi_value v) {
  struct proxy *p = NULL;
  if (napi_get_value_external(env, v, (void **)&p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "not a proxy handle");
    return NULL;
  }
  return p;
}

/* A proxy owning `tun` with its descriptors all unset, so free_proxy can undo any partial start; NULL without memory
   (then `tun` is still the caller's). */
static struct proxy *new_proxy(int tun, int mtu, uint16_t port) {
  struct proxy *p = calloc(1, sizeof(struct proxy));
  if (!p) return NULL;
  p->tun = tun;
  p->sock = -1;
  p->stop = -1;
  p->mtu = mtu;
  p->port = port;
  pthread_rwlock_init(&p->table.lock, NULL);
  return p;
}

/* The UDP socket bound to local:port, the stop eventfd and the threads' buffers. Returns 0, or the errno with the
   failed call in `syscall` and what it was doing in `what`. */
static int open_proxy(struct proxy *p, uint32_t local, const char **syscall, char *what, size_t what_len) {
  *syscall = "socket";
  snprintf(what, what_len, "socket");
  p->sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (p->sock < 0) return errno;
  int size = SOCKET_BUFFER_BYTES;
  setsockopt(p->sock, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  setsockopt(p->sock, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  /* Best effort: a kernel without UDP GRO hands over one datagram per message, which the receive loop takes too. */
  int on = 1;
  setsockopt(p->sock, SOL_UDP, UDP_GRO, &on, sizeof(on));
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(local);
  addr.sin_port = htons(p->port);
  *syscall = "bind";
  snprintf(what, what_len, "bind UDP %u.%u.%u.%u:%u", local >> 24, (local >> 16) & 255, (local >> 8) & 255, local & 255, p->port);
  if (bind(p->sock, (struct sockaddr *)&addr, sizeof(addr)) < 0) return errno;
  *syscall = "eventfd";
  snprintf(what, what_len, "eventfd");
  p->stop = eventfd(0, EFD_CLOEXEC);
  if (p->stop < 0) return errno;
  *syscall = "malloc";
  snprintf(what, what_len, "allocate the proxy's packet buffers");
  p->tun_buf = malloc(VNET_HDR + MAX_PACKET);
  p->gso_out = malloc(MAX_GSO_BYTES + MAX_PACKET);
  p->recv_bufs = malloc((size_t)BATCH * MAX_PACKET);
  p->merge_buf = malloc(MAX_PACKET);
  if (!p->tun_buf || !p->gso_out || !p->recv_bufs || !p->merge_buf) return ENOMEM;
  return 0;
}

/* Starts both threads; returns 0, or pthread_create's error with the thread that did not start in `what`. */
static int start_threads(struct proxy *p, char *what, size_t what_len) {
  snprintf(what, what_len, "start the TUN-to-peers thread");
  int err = pthread_create(&p->to_peers, NULL, run_to_peers, p);
  if (err != 0) return err;
  p->threads = 1;
  snprintf(what, what_len, "start the peers-to-TUN thread");
  err = pthread_create(&p->from_peers, NULL, run_from_peers, p);
  if (err != 0) return err;
  p->threads = 2;
  return 0;
}

static napi_value start_proxy(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t tun, local, port, mtu;
  if (argc < 1 || get_u32_prop(env, argv[0], "tunFd", &tun)) {
    napi_throw_type_error(env, NULL, "startProxy({ tunFd, localAddr, port, mtu }): tunFd must be a descriptor");
    return NULL;
  }
  /* From here on the descriptor is ours: every failure closes it, so the caller never has to. */
  if (get_u32_prop(env, argv[0], "localAddr", &local) || get_u32_prop(env, argv[0], "port", &port) ||
      get_u32_prop(env, argv[0], "mtu", &mtu) || port == 0 || port > 65535 || mtu < 68) {
    close((int)tun);
    napi_throw_type_error(env, NULL, "startProxy({ tunFd, localAddr, port, mtu }): numbers expected, port 1-65535, mtu >= 68");
    return NULL;
  }
  struct proxy *p = new_proxy((int)tun, (int)mtu, (uint16_t)port);
  if (!p) {
    close((int)tun);
    return throw_errno(env, "calloc", "allocate the proxy", ENOMEM);
  }
  const char *syscall = "pthread_create";
  char what[96];
  int err = open_proxy(p, local, &syscall, what, sizeof(what));
  if (err == 0) {
    syscall = "pthread_create";
    err = start_threads(p, what, sizeof(what));
  }
  if (err != 0) {
    free_proxy(p);
    return throw_errno(env, syscall, what, err);
  }
  napi_value handle;
  if (napi_create_external(env, p, finalize_proxy, NULL, &handle) != napi_ok) {
    free_proxy(p);
    napi_throw_error(env, NULL, "napi_create_external failed");
    return NULL;
  }
  return handle;
}

static napi_value set_route(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct proxy *p = argc == 5 ? unwrap(env, argv[0]) : NULL;
  uint32_t network, len, peer, port;
  if (!p || napi_get_value_uint32(env, argv[1], &network) != napi_ok || napi_get_value_uint32(env, argv[2], &len) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &peer) != napi_ok || napi_get_value_uint32(env, argv[4], &port) != napi_ok ||
      len > 32 || port == 0 || port > 65535) {
    if (p) napi_throw_type_error(env, NULL, "setRoute(handle, network, prefixLen 0-32, peer, port 1-65535)");
    else if (argc != 5) napi_throw_type_error(env, NULL, "setRoute takes 5 arguments");
    return NULL;
  }
  pthread_rwlock_wrlock(&p->table.lock);
  int rc = table_set(&p->table, network, (int)len, peer, (uint16_t)port);
  pthread_rwlock_unlock(&p->table.lock);
  if (rc != 0) {
    napi_throw_error(env, NULL, "setRoute: out of memory");
    return NULL;
  }
  return NULL;
}

static napi_value delete_route(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct proxy *p = argc == 3 ? unwrap(env, argv[0]) : NULL;
  uint32_t network, len;
  if (!p || napi_get_value_uint32(env, argv[1], &network) != napi_ok || napi_get_value_uint32(env, argv[2], &len) != napi_ok || len > 32) {
    if (p || argc != 3) napi_throw_type_error(env, NULL, "deleteRoute(handle, network, prefixLen 0-32)");
    return NULL;
  }
  pthread_rwlock_wrlock(&p->table.lock);
  int found = table_delete(&p->table, network, (int)len);
  pthread_rwlock_unlock(&p->table.lock);
  napi_value result;
  CHECK(env, napi_get_boolean(env, found, &result));
  return result;
}

static napi_value stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct proxy *p = argc == 1 ? unwrap(env, argv[0]) : NULL;
  if (!p) return NULL;
  napi_value result;
  CHECK(env, napi_create_object(env, &result));
  for (int c = 0; c < C_COUNT; c++) {
    napi_value v;
    CHECK(env, napi_create_double(env, (double)__atomic_load_n(&p->counters[c], __ATOMIC_RELAXED), &v));
    CHECK(env, napi_set_named_property(env, result, counter_names[c], v));
  }
  napi_value routes;
  uint32_t live = 0;
  pthread_rwlock_rdlock(&p->table.lock);
  for (int len = 0; len <= 32; len++) live += p->table.by_len[len].live;
  pthread_rwlock_unlock(&p->table.lock);
  CHECK(env, napi_create_uint32(env, live, &routes));
  CHECK(env, napi_set_named_property(env, result, "routes", routes));
  return result;
}

static napi_value stop_proxy(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct proxy *p = argc == 1 ? unwrap(env, argv[0]) : NULL;
  if (p) stop_threads(p);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "openTun", NULL, open_tun, NULL, NULL, NULL, napi_default, NULL },
    { "startProxy", NULL, start_proxy, NULL, NULL, NULL, napi_default, NULL },
    { "setRoute", NULL, set_route, NULL, NULL, NULL, napi_default, NULL },
    { "deleteRoute", NULL, delete_route, NULL, NULL, NULL, napi_default, NULL },
    { "stats", NULL, stats, NULL, NULL, NULL, napi_default, NULL },
    { "stopProxy", NULL, stop_proxy, NULL, NULL, NULL, napi_default, NULL },
  };
  CHECK(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

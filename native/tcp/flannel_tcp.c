/*
 * A TCP socket prepared for a BGP session, as a small N-API addon: Node can neither sign segments with TCP-MD5
 * (RFC 2385, which routers ask for with a neighbour password) nor set a socket's TTL before it connects (eBGP
 * multihop). Both have to be set before the SYN leaves, so the socket is made here, bound to the node's address,
 * given its options, and handed to Node as a file descriptor, which Node then connects like any other.
 *
 *   open(family: 4 | 6, local: Buffer | null, peer: Buffer, md5Key: Buffer | null, ttl: number) -> fd
 *       `local` and `peer` are the raw address bytes (4 or 16); `ttl` 0 keeps the kernel's default. Throws with the
 *       errno when the kernel refuses (ENOENT/EINVAL for TCP_MD5SIG on a kernel built without it).
 *   close(fd)     for a descriptor Node never took over
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <node_api.h>
#include "../common/napi_errors.h"
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Fills `ss` from raw address bytes; the length must match the family. */
static int to_sockaddr(int family, const uint8_t *bytes, size_t len, struct sockaddr_storage *ss, socklen_t *sl) {
  memset(ss, 0, sizeof(*ss));
  if (family == 4 && len == 4) {
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    sin->sin_family = AF_INET;
    memcpy(&sin->sin_addr, bytes, 4);
    *sl = sizeof(*sin);
    return 0;
  }
  if (family == 6 && len == 16) {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    memcpy(&sin6->sin6_addr, bytes, 16);
    *sl = sizeof(*sin6);
    return 0;
  }
  return -1;
}

/* A Buffer argument, or NULL data for null/undefined. */
static int buffer_arg(napi_env env, napi_value v, const uint8_t **data, size_t *len) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return -1;
  if (t == napi_null || t == napi_undefined) {
    *data = NULL;
    *len = 0;
    return 0;
  }
  bool is_buffer = false;
  if (napi_is_buffer(env, v, &is_buffer) != napi_ok || !is_buffer) return -1;
  void *p;
  if (napi_get_buffer_info(env, v, &p, len) != napi_ok) return -1;
  *data = p;
  return 0;
}

static napi_value open_socket(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t family = 0, ttl = 0;
  const uint8_t *local, *peer, *key;
  size_t local_len, peer_len, key_len;
  if (argc != 5 || napi_get_value_int32(env, argv[0], &family) != napi_ok || buffer_arg(env, argv[1], &local, &local_len) != 0 ||
      buffer_arg(env, argv[2], &peer, &peer_len) != 0 || peer == NULL || buffer_arg(env, argv[3], &key, &key_len) != 0 ||
      napi_get_value_int32(env, argv[4], &ttl) != napi_ok || (family != 4 && family != 6) || ttl < 0 || ttl > 255 ||
      key_len > TCP_MD5SIG_MAXKEYLEN) {
    napi_throw_type_error(env, NULL, "flannel_tcp.open(family, local, peer, md5Key, ttl): bad arguments");
    return NULL;
  }
  struct sockaddr_storage peer_ss, local_ss;
  socklen_t peer_sl, local_sl;
  if (to_sockaddr(family, peer, peer_len, &peer_ss, &peer_sl) != 0 || (local && to_sockaddr(family, local, local_len, &local_ss, &local_sl) != 0)) {
    napi_throw_type_error(env, NULL, "flannel_tcp.open: an address does not match the family");
    return NULL;
  }
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) return throw_errno_error(env, "socket", errno);
  const char *failed = NULL;
  if (key) {
    struct tcp_md5sig sig;
    memset(&sig, 0, sizeof(sig));
    memcpy(&sig.tcpm_addr, &peer_ss, peer_sl);
    sig.tcpm_keylen = (uint16_t)key_len;
    memcpy(sig.tcpm_key, key, key_len);
    if (setsockopt(fd, IPPROTO_TCP, TCP_MD5SIG, &sig, sizeof(sig)) != 0) failed = "TCP_MD5SIG";
  }
  if (!failed && ttl > 0) {
    int level = family == 4 ? IPPROTO_IP : IPPROTO_IPV6, name = family == 4 ? IP_TTL : IPV6_UNICAST_HOPS;
    if (setsockopt(fd, level, name, &ttl, sizeof(ttl)) != 0) failed = family == 4 ? "IP_TTL" : "IPV6_UNICAST_HOPS";
  }
  if (!failed && local && bind(fd, (struct sockaddr *)&local_ss, local_sl) != 0) failed = "bind";
  if (failed) {
    int err = errno;
    close(fd);
    return throw_errno_error(env, failed, err);
  }
  napi_value result;
  CHECK(env, napi_create_int32(env, fd, &result));
  return result;
}

static napi_value close_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc == 1 && napi_get_value_int32(env, argv[0], &fd) == napi_ok && fd >= 0) close(fd);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "open", NULL, open_socket, NULL, NULL, NULL, napi_default, NULL },
    { "close", NULL, close_fd, NULL, NULL, NULL, napi_default, NULL },
  };
  CHECK(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

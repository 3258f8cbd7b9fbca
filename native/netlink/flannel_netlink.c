/*
 * flanneld's netlink sockets, as a small N-API addon. Node has no AF_NETLINK sockets of its own, and the `netlink`
 * npm package we used before aborts the process when a socket overruns: libuv reports the socket's pending ENOBUFS
 * as a poll error, and the package's poll handler builds the JavaScript error with a NULL string, so node-addon-api
 * throws a C++ exception out of a libuv callback (std::terminate, exit 134). Nothing in JavaScript can catch that,
 * and the package has no option to avoid it. Here an overrun is data: it is counted and handed to JavaScript, and
 * the socket keeps working.
 *
 *   open({ protocol, groups, rcvbuf, sndbuf, acceptTypes, capAck }, onData) -> handle
 *       onData(data: Buffer | null, overruns: number, fatalErrno: number), called from the event loop: `data` is
 *       every datagram read in this wake-up, each padded to 4 bytes (netlink alignment) so the messages of
 *       consecutive datagrams can be decoded as one stream; `overruns` counts the ENOBUFS (lost messages) seen;
 *       a non-zero `fatalErrno` means the socket stopped polling and must be closed. Overruns are reported only
 *       once the socket's queue has been read empty (see on_poll), never in the middle of the backlog.
 *   send(handle, buffer) -> errno (0 when sent). Netlink hands a message to the kernel inside sendmsg, so the send
 *       is synchronous and non-blocking.
 *   info(handle) -> { rcvbuf, sndbuf, rcvbufForced, portId }   (sizes as the kernel reports them, i.e. doubled)
 *   close(handle)                                              idempotent
 *
 * Reads happen on the JavaScript thread, from a uv_poll watcher, in bounded bites (MAX_DATAGRAMS_PER_WAKE,
 * MAX_BYTES_PER_WAKE): the poll is level-triggered, so what is left is read on the next turn of the loop, and a
 * flood of notifications cannot starve the rest of the daemon.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <node_api.h>
#include "../common/napi_errors.h"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif
#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif

/* The kernel never builds a netlink datagram above 32 KiB (dump skbs are capped at SKB_WITH_OVERHEAD(32768)). */
#define SCRATCH_BYTES (64 * 1024)
#define MAX_DATAGRAMS_PER_WAKE 4096
#define MAX_BYTES_PER_WAKE (1024 * 1024)
#define MAX_GROUPS 32
#define MAX_ACCEPT_TYPES 16
/* Poll errors with no socket error behind them; a few in a row are tolerated, a stream of them is a broken socket. */
#define MAX_SPURIOUS_ERRORS 16
/* An overrun waits for the queue to be read empty at most this many wake-ups (over 250,000 datagrams). */
#define MAX_WAKES_BEFORE_REPORT 64

struct nlsock {
  uv_poll_t poll; /* first member: uv handles are cast back to the struct */
  napi_env env;
  int fd;
  int closed;
  int uv_closed;
  int finalized;
  int rcvbuf_forced;
  int spurious;
  uint32_t overruns_pending; /* seen, not yet reported */
  uint32_t wakes_pending;
  int recheck; /* an overrun was reported before the queue emptied: report once more when it does */
  napi_ref callback;
  napi_ref self;
  napi_async_context async;
  uint8_t *scratch;
  uint8_t *out;
  size_t out_cap;
};

/* SO_RCVBUFFORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN; without it, SO_RCVBUF (capped by rmem_max). */
static int set_buffer(int fd, int forced_opt, int opt, int size, int *forced) {
  if (setsockopt(fd, SOL_SOCKET, forced_opt, &size, sizeof(size)) == 0) {
    if (forced) *forced = 1;
    return 0;
  }
  if (forced) *forced = 0;
  return setsockopt(fd, SOL_SOCKET, opt, &size, sizeof(size));
}

/*
 * Keeps only messages whose nlmsg_type is in `types`, in the kernel, before they are queued: the notification
 * socket wants deletions, and dropping the RTM_NEW* echoes of our own batches means they never fill its buffer.
 * Multicast notifications carry one message per datagram, so the header at offset 0 is the whole story.
 * BPF_ABS half-word loads are big-endian, hence htons.
 */
static int attach_type_filter(int fd, const uint32_t *types, uint32_t n) {
  struct sock_filter code[MAX_ACCEPT_TYPES + 3];
  uint32_t at = 0;
  code[at++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_H | BPF_ABS, offsetof(struct nlmsghdr, nlmsg_type));
  for (uint32_t i = 0; i < n; i++) {
    /* Jump over the remaining tests and the reject to the accept. */
    code[at++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htons((uint16_t)types[i]), (uint8_t)(n - i), 0);
  }
  code[at++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0);
  code[at++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0xffffffffu);
  struct sock_fprog prog = { .len = (unsigned short)at, .filter = code };
  return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
}

static void on_uv_closed(uv_handle_t *handle) {
  struct nlsock *s = (struct nlsock *)handle;
  s->uv_closed = 1;
  if (s->finalized) {
    free(s->scratch);
    free(s->out);
    free(s);
  }
}

/* Stops polling and closes the fd; the struct itself lives until both libuv and the garbage collector let go. */
static void shut(struct nlsock *s, int release_js) {
  if (s->closed) return;
  s->closed = 1;
  uv_close((uv_handle_t *)&s->poll, on_uv_closed); /* stops the watcher before the fd goes */
  close(s->fd);
  s->fd = -1;
  if (release_js) {
    if (s->callback) napi_delete_reference(s->env, s->callback);
    if (s->async) napi_async_destroy(s->env, s->async);
    if (s->self) napi_delete_reference(s->env, s->self); /* the handle may now be collected */
    s->callback = NULL;
    s->async = NULL;
    s->self = NULL;
  }
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct nlsock *s = data;
  s->finalized = 1;
  /* Only reachable after close() dropped the self reference, or at environment teardown. */
  if (!s->closed) shut(s, 0);
  else if (s->uv_closed) {
    free(s->scratch);
    free(s->out);
    free(s);
  }
}

static int append(struct nlsock *s, size_t *len, const uint8_t *data, size_t n) {
  size_t padded = (n + 3) & ~(size_t)3;
  if (*len + padded > s->out_cap) {
    size_t cap = s->out_cap ? s->out_cap : SCRATCH_BYTES;
    while (cap < *len + padded) cap *= 2;
    uint8_t *grown = realloc(s->out, cap);
    if (!grown) return -1;
    s->out = grown;
    s->out_cap = cap;
  }
  memcpy(s->out + *len, data, n);
  memset(s->out + *len + n, 0, padded - n);
  *len += padded;
  return 0;
}

/* Reads what is queued, within the per-wake budget; *empty says whether the queue was read to the end. Returns the
   fatal errno, or 0. */
static int drain(struct nlsock *s, size_t *len, uint32_t *overruns, int *empty) {
  *empty = 0;
  for (int n = 0; n < MAX_DATAGRAMS_PER_WAKE && *len < MAX_BYTES_PER_WAKE; n++) {
    struct sockaddr_nl from;
    struct iovec iov = { .iov_base = s->scratch, .iov_len = SCRATCH_BYTES };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    memset(&from, 0, sizeof(from));
    msg.msg_name = &from;
    msg.msg_namelen = sizeof(from);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    ssize_t got = recvmsg(s->fd, &msg, MSG_DONTWAIT | MSG_TRUNC);
    if (got < 0) {
      if (errno == EINTR) continue; /* bounded by n */
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        *empty = 1;
        return 0;
      }
      /* The kernel dropped messages for us; reading the error cleared it, and the socket goes on. */
      if (errno == ENOBUFS) {
        (*overruns)++;
        continue;
      }
      return errno;
    }
    s->spurious = 0;
    /* Cut short: part of what the kernel said is lost, which is an overrun as far as the reader can tell. */
    if (msg.msg_flags & MSG_TRUNC) {
      (*overruns)++;
      continue;
    }
    /* Only the kernel speaks to us; anything else (a privileged process naming our port) is ignored. */
    if (from.nl_pid != 0) continue;
    if (append(s, len, s->scratch, (size_t)got) != 0) return ENOMEM;
  }
  return 0;
}

static void deliver(struct nlsock *s, size_t len, uint32_t overruns, int fatal) {
  napi_env env = s->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[3], result;
  /* napi_make_callback wants an object as `this`; the callback ignores it. */
  if (napi_get_reference_value(env, s->callback, &cb) != napi_ok || cb == NULL || napi_get_global(env, &recv) != napi_ok) {
    napi_close_handle_scope(env, scope);
    return;
  }
  if (len > 0) {
    void *copy;
    if (napi_create_buffer_copy(env, len, s->out, &copy, &argv[0]) != napi_ok) {
      /* Out of memory for the copy: what was read is lost, which the reader must treat as an overrun. */
      napi_get_null(env, &argv[0]);
      overruns++;
    }
  } else {
    napi_get_null(env, &argv[0]);
  }
  napi_create_uint32(env, overruns, &argv[1]);
  napi_create_int32(env, fatal, &argv[2]);
  /* napi_make_callback runs the microtasks and async hooks a callback from the loop needs. An exception thrown by
     the JavaScript side is re-raised as an ordinary uncaught exception, not left pending in native code. */
  bool pending = false;
  if (napi_make_callback(env, s->async, recv, cb, 3, argv, &result) != napi_ok && napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value err;
    if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

static void on_poll(uv_poll_t *poll, int status, int events) {
  (void)events;
  struct nlsock *s = (struct nlsock *)poll;
  if (s->closed) return;
  uint32_t overruns = 0;
  int fatal = 0;
  if (status < 0) {
    /* libuv turns EPOLLERR into UV_EBADF and stops the watcher. The error behind it is the socket's: read (and so
       clear) it, then watch again. */
    int err = 0;
    socklen_t elen = sizeof(err);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) fatal = errno;
    else if (err == ENOBUFS) overruns++;
    else if (err != 0) fatal = err;
    else if (++s->spurious > MAX_SPURIOUS_ERRORS) fatal = EIO;
    if (!fatal) {
      int rc = uv_poll_start(&s->poll, UV_READABLE, on_poll);
      if (rc < 0) fatal = -rc;
    }
  }
  size_t len = 0;
  int empty = 0;
  if (!fatal) fatal = drain(s, &len, &overruns, &empty);
  if (fatal) uv_poll_stop(&s->poll);
  /*
   * After an overrun the kernel marks the socket congested and silently drops every later notice until the queue
   * has been read empty; only the first drop raises ENOBUFS. Reporting the overrun before then would let the
   * owner's resync read the kernel while notices are still being dropped unannounced. So it is held until a read
   * finds the queue empty (that read clears the congestion): whatever the resync reads comes after the last drop.
   * Under a flood that never lets the queue empty, it is reported after MAX_WAKES_BEFORE_REPORT wake-ups, and once
   * more when the queue does empty.
   */
  s->overruns_pending += overruns;
  uint32_t report = 0;
  if (s->overruns_pending > 0 || s->recheck) {
    if (empty || fatal) {
      report = s->overruns_pending > 0 ? s->overruns_pending : 1;
      s->overruns_pending = 0;
      s->wakes_pending = 0;
      s->recheck = 0;
    } else if (s->overruns_pending > 0 && ++s->wakes_pending >= MAX_WAKES_BEFORE_REPORT) {
      report = s->overruns_pending;
      s->overruns_pending = 0;
      s->wakes_pending = 0;
      s->recheck = 1;
    }
  }
  if (len > 0 || report > 0 || fatal) deliver(s, len, report, fatal);
  /* Give back a large read buffer after a burst rather than keep it for the socket's lifetime. */
  if (!s->closed && s->out_cap > 4 * SCRATCH_BYTES) {
    free(s->out);
    s->out = NULL;
    s->out_cap = 0;
  }
}

static struct nlsock *unwrap(napi_env env, napi_value v) {
  struct nlsock *s = NULL;
  if (napi_get_value_external(env, v, (void **)&s) != napi_ok || !s) {
    napi_throw_type_error(env, NULL, "not a netlink socket handle");
    return NULL;
  }
  return s;
}

static int get_u32(napi_env env, napi_value obj, const char *key, uint32_t fallback, uint32_t *out) {
  bool has = false;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok) return -1;
  if (!has) {
    *out = fallback;
    return 0;
  }
  napi_value v;
  napi_valuetype type;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok || napi_typeof(env, v, &type) != napi_ok) return -1;
  if (type == napi_undefined) {
    *out = fallback;
    return 0;
  }
  return napi_get_value_uint32(env, v, out) == napi_ok ? 0 : -1;
}

/* Reads an optional array of uint32 into `out`; returns the count, or -1 when malformed or longer than `max`. */
static int get_u32_array(napi_env env, napi_value obj, const char *key, uint32_t *out, uint32_t max) {
  bool has = false;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok) return -1;
  if (!has) return 0;
  napi_value arr;
  bool is_array = false;
  if (napi_get_named_property(env, obj, key, &arr) != napi_ok || napi_is_array(env, arr, &is_array) != napi_ok) return -1;
  if (!is_array) return -1;
  uint32_t n;
  if (napi_get_array_length(env, arr, &n) != napi_ok || n > max) return -1;
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    if (napi_get_element(env, arr, i, &v) != napi_ok || napi_get_value_uint32(env, v, &out[i]) != napi_ok) return -1;
  }
  return (int)n;
}

static napi_value open_socket(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype cbtype = napi_undefined;
  if (argc == 2) napi_typeof(env, argv[1], &cbtype);
  uint32_t protocol, rcvbuf, sndbuf, cap_ack, groups[MAX_GROUPS], types[MAX_ACCEPT_TYPES];
  int ngroups = argc == 2 ? get_u32_array(env, argv[0], "groups", groups, MAX_GROUPS) : -1;
  int ntypes = argc == 2 ? get_u32_array(env, argv[0], "acceptTypes", types, MAX_ACCEPT_TYPES) : -1;
  if (argc != 2 || cbtype != napi_function || ngroups < 0 || ntypes < 0 || get_u32(env, argv[0], "protocol", 0, &protocol) ||
      get_u32(env, argv[0], "rcvbuf", 0, &rcvbuf) || get_u32(env, argv[0], "sndbuf", 0, &sndbuf) ||
      get_u32(env, argv[0], "capAck", 0, &cap_ack) || rcvbuf > 0x3fffffff || sndbuf > 0x3fffffff) {
    napi_throw_type_error(env, NULL,
                          "open({ protocol, groups?: number[<=32], rcvbuf?, sndbuf?, acceptTypes?: number[<=16], capAck?: 0|1 }, onData)");
    return NULL;
  }
  uv_loop_t *loop;
  CHECK(env, napi_get_uv_event_loop(env, &loop));

  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, (int)protocol);
  if (fd < 0) return throw_errno_error(env, "netlink socket", errno);
  int forced = 0;
  const char *failed = NULL;
  if (rcvbuf > 0 && set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, (int)rcvbuf, &forced) != 0) failed = "SO_RCVBUF";
  if (!failed && sndbuf > 0 && set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, (int)sndbuf, NULL) != 0) failed = "SO_SNDBUF";
  int one = 1;
  if (!failed && cap_ack && setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one)) != 0) failed = "NETLINK_CAP_ACK";
  /* The filter goes on before any group is joined, so no unfiltered notification is ever queued. */
  if (!failed && ntypes > 0 && attach_type_filter(fd, types, (uint32_t)ntypes) != 0) failed = "SO_ATTACH_FILTER";
  struct sockaddr_nl addr;
  memset(&addr, 0, sizeof(addr));
  addr.nl_family = AF_NETLINK;
  if (!failed && bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) failed = "netlink bind";
  for (int i = 0; !failed && i < ngroups; i++) {
    if (setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &groups[i], sizeof(groups[i])) != 0) failed = "NETLINK_ADD_MEMBERSHIP";
  }
  if (failed) {
    int err = errno;
    close(fd);
    return throw_errno_error(env, failed, err);
  }

  struct nlsock *s = calloc(1, sizeof(struct nlsock));
  uint8_t *scratch = malloc(SCRATCH_BYTES);
  if (!s || !scratch) {
    free(s);
    free(scratch);
    close(fd);
    napi_throw_error(env, NULL, "flannel_netlink: out of memory");
    return NULL;
  }
  s->env = env;
  s->fd = fd;
  s->scratch = scratch;
  s->rcvbuf_forced = forced;
  int rc = uv_poll_init(loop, &s->poll, fd);
  if (rc < 0) {
    free(scratch);
    free(s);
    close(fd);
    return throw_errno_error(env, "uv_poll_init", -rc);
  }
  napi_value handle, resource_name;
  /* From here on the struct belongs to the handle: every failure goes through shut(), never free(). */
  if (napi_create_external(env, s, finalize, NULL, &handle) != napi_ok) {
    s->finalized = 1;
    shut(s, 0);
    napi_throw_error(env, NULL, "flannel_netlink: napi_create_external failed");
    return NULL;
  }
  if (napi_create_reference(env, argv[1], 1, &s->callback) != napi_ok ||
      napi_create_string_utf8(env, "flannel:netlink", NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_async_init(env, NULL, resource_name, &s->async) != napi_ok ||
      napi_create_reference(env, handle, 1, &s->self) != napi_ok) {
    shut(s, 1);
    napi_throw_error(env, NULL, "flannel_netlink: cannot keep the callback");
    return NULL;
  }
  rc = uv_poll_start(&s->poll, UV_READABLE, on_poll);
  if (rc < 0) {
    shut(s, 1);
    return throw_errno_error(env, "uv_poll_start", -rc);
  }
  return handle;
}

static napi_value send_message(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct nlsock *s = argc == 2 ? unwrap(env, argv[0]) : NULL;
  if (!s) {
    if (argc != 2) napi_throw_type_error(env, NULL, "send(handle, buffer)");
    return NULL;
  }
  void *data;
  size_t len;
  bool is_buffer = false;
  if (napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "send(handle, buffer): a Buffer is needed");
    return NULL;
  }
  int err = 0;
  if (s->closed) {
    err = EBADF;
  } else {
    struct sockaddr_nl kernel;
    memset(&kernel, 0, sizeof(kernel));
    kernel.nl_family = AF_NETLINK;
    ssize_t sent;
    int tries = 0;
    do {
      sent = sendto(s->fd, data, len, MSG_DONTWAIT, (struct sockaddr *)&kernel, sizeof(kernel));
    } while (sent < 0 && errno == EINTR && ++tries < 8);
    if (sent < 0) err = errno;
  }
  napi_value result;
  CHECK(env, napi_create_int32(env, err, &result));
  return result;
}

static napi_value socket_info(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct nlsock *s = argc == 1 ? unwrap(env, argv[0]) : NULL;
  if (!s) return NULL;
  if (s->closed) return throw_errno_error(env, "netlink socket info", EBADF);
  int rcv = 0, snd = 0;
  socklen_t l1 = sizeof(rcv), l2 = sizeof(snd);
  struct sockaddr_nl addr;
  socklen_t alen = sizeof(addr);
  memset(&addr, 0, sizeof(addr));
  if (getsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &rcv, &l1) != 0 || getsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &snd, &l2) != 0 ||
      getsockname(s->fd, (struct sockaddr *)&addr, &alen) != 0) {
    return throw_errno_error(env, "netlink socket info", errno);
  }
  napi_value result, v;
  CHECK(env, napi_create_object(env, &result));
  CHECK(env, napi_create_int32(env, rcv, &v));
  CHECK(env, napi_set_named_property(env, result, "rcvbuf", v));
  CHECK(env, napi_create_int32(env, snd, &v));
  CHECK(env, napi_set_named_property(env, result, "sndbuf", v));
  CHECK(env, napi_get_boolean(env, s->rcvbuf_forced, &v));
  CHECK(env, napi_set_named_property(env, result, "rcvbufForced", v));
  CHECK(env, napi_create_uint32(env, addr.nl_pid, &v));
  CHECK(env, napi_set_named_property(env, result, "portId", v));
  return result;
}

static napi_value close_socket(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct nlsock *s = argc == 1 ? unwrap(env, argv[0]) : NULL;
  if (s) shut(s, 1);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "open", NULL, open_socket, NULL, NULL, NULL, napi_default, NULL },
    { "send", NULL, send_message, NULL, NULL, NULL, napi_default, NULL },
    { "info", NULL, socket_info, NULL, NULL, NULL, napi_default, NULL },
    { "close", NULL, close_socket, NULL, NULL, NULL, napi_default, NULL },
  };
  CHECK(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

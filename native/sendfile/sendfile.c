/*
 * sendfile(2) from a file to a socket, driven by libuv: Berth's fast path for blob GETs over plain
 * HTTP/1.1 (src/http/sendfile.ts). The bytes go from the page cache to the socket inside the
 * kernel, with no copy through JavaScript buffers.
 *
 *   start(socketFd, fileFd, offset, length, callback(errno, sent)) -> transfer
 *   cancel(transfer)
 *   splice(inFd, outFd, length, callback(errno, sent), idleMs) -> transfer
 *   cancelSplice(transfer)
 *
 * splice() is the same for a blob that comes from another socket (an S3 GET over plain HTTP, whose
 * response headers Berth has read): `length` bytes go from the in socket to the out socket through a pipe
 * with splice(2), again inside the kernel. Both descriptors are dup()ed and polled, as for sendfile.
 * When no byte has moved for `idleMs` (a store that stalls mid-body; 0 or absent: no limit), the transfer
 * ends with ETIMEDOUT.
 *
 * The socket's descriptor belongs to Node's TCP handle, which libuv already watches; a second watch
 * on the same descriptor would replace libuv's own. So the transfer works on a dup() of it (the
 * same socket, a descriptor of its own) and polls that for writability. The file descriptor is
 * borrowed: the caller keeps it open until the callback has run or it has cancelled.
 * The callback runs exactly once, unless the transfer was cancelled first; then never.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <unistd.h>
#include <uv.h>

/*
 * What both kinds of transfer share: how they end. A transfer is closed once (finish), then reports
 * (errno, bytes sent) to its JavaScript callback from the event loop, unless it was cancelled.
 */
typedef struct report_s {
  int error;
  int cancelled;
  int closing;
  int open_handles;
  int64_t sent;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  void (*finish)(struct report_s*, int error);
} report_t;

static void report_init(report_t* r, napi_env env, napi_value callback, const char* name,
                        void (*finish)(report_t*, int)) {
  r->env = env;
  r->finish = finish;
  napi_create_reference(env, callback, 1, &r->callback);
  napi_value resource_name;
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &r->context);
}

/* Calls back (unless cancelled) and lets go of the callback; the caller frees the transfer. */
static void report_end(report_t* r) {
  napi_env env = r->env;
  if (!r->cancelled) {
    napi_handle_scope scope;
    napi_open_handle_scope(env, &scope);
    napi_value callback, recv, argv[2], result;
    napi_get_reference_value(env, r->callback, &callback);
    napi_get_global(env, &recv); /* napi_make_callback wants an object as `this` */
    napi_create_int32(env, r->error, &argv[0]);
    napi_create_int64(env, r->sent, &argv[1]);
    napi_make_callback(env, r->context, recv, callback, 2, argv, &result);
    napi_close_handle_scope(env, scope);
  }
  napi_delete_reference(env, r->callback);
  napi_async_destroy(env, r->context);
}

/* The handle returned to JavaScript; or, when the first poll could not start, an exception. */
static napi_value report_started(napi_env env, report_t* r, int poll_rc) {
  if (poll_rc != 0) {
    r->cancelled = 1; /* the caller hears it as an exception, not through the callback */
    r->finish(r, EIO);
    napi_throw_error(env, NULL, "uv_poll_start failed");
    return NULL;
  }
  napi_value handle;
  napi_create_external(env, r, NULL, NULL, &handle);
  return handle;
}

/* cancel(transfer) and cancelSplice(transfer): stops it; its callback is never called. */
static napi_value cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void* data = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], &data) != napi_ok || !data) return NULL;
  report_t* r = (report_t*)data;
  r->cancelled = 1;
  r->finish(r, ECANCELED);
  return NULL;
}

/* ---- file to socket ---- */

typedef struct {
  report_t r; /* first: a transfer_t* is a report_t* */
  uv_poll_t poll;
  int out_fd;
  int in_fd;
  int64_t offset;
  int64_t remaining;
} transfer_t;

static void on_close(uv_handle_t* handle) {
  transfer_t* t = (transfer_t*)handle->data;
  close(t->out_fd);
  report_end(&t->r);
  free(t);
}

static void finish(report_t* r, int error) {
  transfer_t* t = (transfer_t*)r;
  if (r->closing) return;
  r->closing = 1;
  r->error = error;
  uv_poll_stop(&t->poll);
  uv_close((uv_handle_t*)&t->poll, on_close);
}

/* Sends until the socket's buffer is full (EAGAIN), the range is done, or an error. */
static void pump(transfer_t* t) {
  while (t->remaining > 0) {
    size_t chunk = t->remaining > (1 << 30) ? (size_t)(1 << 30) : (size_t)t->remaining;
    off_t offset = (off_t)t->offset;
    ssize_t n = sendfile(t->out_fd, t->in_fd, &offset, chunk);
    if (n > 0) {
      t->offset += n;
      t->remaining -= n;
      t->r.sent += n;
      continue;
    }
    if (n == 0) return finish(&t->r, EIO); /* the file is shorter than its range */
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return; /* wait for the poll */
    return finish(&t->r, errno);
  }
  finish(&t->r, 0);
}

static void on_poll(uv_poll_t* handle, int status, int events) {
  transfer_t* t = (transfer_t*)handle->data;
  (void)events;
  if (status < 0) return finish(&t->r, -status);
  pump(t);
}

static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 5) {
    napi_throw_type_error(env, NULL, "start(socketFd, fileFd, offset, length, callback)");
    return NULL;
  }
  int32_t socket_fd, file_fd;
  int64_t offset, length;
  if (napi_get_value_int32(env, argv[0], &socket_fd) != napi_ok ||
      napi_get_value_int32(env, argv[1], &file_fd) != napi_ok ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[3], &length) != napi_ok || socket_fd < 0 || file_fd < 0 ||
      offset < 0 || length < 0) {
    napi_throw_type_error(env, NULL, "invalid arguments");
    return NULL;
  }
  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    napi_throw_error(env, NULL, "no event loop");
    return NULL;
  }
  int out_fd = fcntl(socket_fd, F_DUPFD_CLOEXEC, 0);
  if (out_fd < 0) {
    napi_throw_error(env, NULL, "dup of the socket failed");
    return NULL;
  }
  transfer_t* t = calloc(1, sizeof(transfer_t));
  if (!t) {
    close(out_fd);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  t->out_fd = out_fd;
  t->in_fd = file_fd;
  t->offset = offset;
  t->remaining = length;
  if (uv_poll_init(loop, &t->poll, out_fd) != 0) {
    close(out_fd);
    free(t);
    napi_throw_error(env, NULL, "uv_poll_init failed");
    return NULL;
  }
  t->poll.data = t;
  report_init(&t->r, env, argv[4], "berth:sendfile", finish);
  /* Always report through the callback, from the event loop: start() itself never calls back. */
  return report_started(env, &t->r, uv_poll_start(&t->poll, UV_WRITABLE | UV_DISCONNECT, on_poll));
}

/* ---- socket to socket ---- */

typedef struct {
  report_t r; /* first: a splice_t* is a report_t* */
  uv_poll_t in_poll;
  uv_poll_t out_poll;
  uv_timer_t idle; /* restarted whenever bytes move; fires after idle_ms without */
  uint64_t idle_ms;
  int in_fd;
  int out_fd;
  int pipe_r;
  int pipe_w;
  int64_t remaining; /* still to read from the in socket */
  int64_t buffered;  /* in the pipe */
} splice_t;

static void splice_closed(uv_handle_t* handle) {
  splice_t* t = (splice_t*)handle->data;
  if (--t->r.open_handles > 0) return;
  close(t->in_fd);
  close(t->out_fd);
  close(t->pipe_r);
  close(t->pipe_w);
  report_end(&t->r);
  free(t);
}

static void splice_finish(report_t* r, int error) {
  splice_t* t = (splice_t*)r;
  if (r->closing) return;
  r->closing = 1;
  r->error = error;
  uv_poll_stop(&t->in_poll);
  uv_poll_stop(&t->out_poll);
  uv_timer_stop(&t->idle);
  r->open_handles = 3;
  uv_close((uv_handle_t*)&t->in_poll, splice_closed);
  uv_close((uv_handle_t*)&t->out_poll, splice_closed);
  uv_close((uv_handle_t*)&t->idle, splice_closed);
}

static void splice_on_idle(uv_timer_t* timer) {
  splice_t* t = (splice_t*)timer->data;
  splice_finish(&t->r, ETIMEDOUT);
}

static void splice_on_poll(uv_poll_t* handle, int status, int events);

/*
 * Moves what it can: the pipe into the out socket, then the in socket into the pipe, until neither
 * moves. Then waits for the out socket to take more while the pipe holds bytes, else for the in socket.
 */
static void splice_pump(splice_t* t) {
  for (;;) {
    int moved = 0;
    if (t->buffered > 0) {
      ssize_t n = splice(t->pipe_r, NULL, t->out_fd, NULL, (size_t)t->buffered,
                         SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        t->buffered -= n;
        t->r.sent += n;
        moved = 1;
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        return splice_finish(&t->r, errno);
      }
    }
    if (t->remaining > 0) {
      size_t want = t->remaining > (1 << 20) ? (size_t)(1 << 20) : (size_t)t->remaining;
      ssize_t n = splice(t->in_fd, NULL, t->pipe_w, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        t->remaining -= n;
        t->buffered += n;
        moved = 1;
      } else if (n == 0) {
        return splice_finish(&t->r, ECONNRESET); /* the store closed before the whole body */
      } else if (errno != EAGAIN && errno != EINTR) {
        return splice_finish(&t->r, errno);
      }
    }
    if (t->remaining == 0 && t->buffered == 0) return splice_finish(&t->r, 0);
    if (!moved) break;
    if (t->idle_ms > 0) uv_timer_start(&t->idle, splice_on_idle, t->idle_ms, 0);
  }
  int rc;
  if (t->buffered > 0) {
    uv_poll_stop(&t->in_poll);
    rc = uv_poll_start(&t->out_poll, UV_WRITABLE | UV_DISCONNECT, splice_on_poll);
  } else {
    uv_poll_stop(&t->out_poll);
    rc = uv_poll_start(&t->in_poll, UV_READABLE | UV_DISCONNECT, splice_on_poll);
  }
  if (rc != 0) splice_finish(&t->r, EIO);
}

static void splice_on_poll(uv_poll_t* handle, int status, int events) {
  splice_t* t = (splice_t*)handle->data;
  (void)events;
  if (status < 0) return splice_finish(&t->r, -status);
  splice_pump(t);
}

static napi_value splice_start(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t in_fd, out_fd;
  int64_t length, idle_ms = 0;
  if (argc < 4 || napi_get_value_int32(env, argv[0], &in_fd) != napi_ok ||
      napi_get_value_int32(env, argv[1], &out_fd) != napi_ok ||
      napi_get_value_int64(env, argv[2], &length) != napi_ok || in_fd < 0 || out_fd < 0 || length < 0 ||
      (argc >= 5 && (napi_get_value_int64(env, argv[4], &idle_ms) != napi_ok || idle_ms < 0))) {
    napi_throw_type_error(env, NULL, "splice(inFd, outFd, length, callback, idleMs)");
    return NULL;
  }
  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    napi_throw_error(env, NULL, "no event loop");
    return NULL;
  }
  int pipefd[2];
  if (pipe2(pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
    napi_throw_error(env, NULL, "pipe2 failed");
    return NULL;
  }
  fcntl(pipefd[1], F_SETPIPE_SZ, 1 << 20); /* fewer turns; the default 64 KB works too */
  int in_dup = fcntl(in_fd, F_DUPFD_CLOEXEC, 0);
  int out_dup = in_dup < 0 ? -1 : fcntl(out_fd, F_DUPFD_CLOEXEC, 0);
  splice_t* t = out_dup < 0 ? NULL : calloc(1, sizeof(splice_t));
  if (!t || uv_poll_init(loop, &t->in_poll, in_dup) != 0 || uv_poll_init(loop, &t->out_poll, out_dup) != 0 ||
      uv_timer_init(loop, &t->idle) != 0) {
    /* uv_poll_init fails only for a bad descriptor, never for fresh dups of open sockets. */
    if (in_dup >= 0) close(in_dup);
    if (out_dup >= 0) close(out_dup);
    close(pipefd[0]);
    close(pipefd[1]);
    free(t);
    napi_throw_error(env, NULL, "could not set up the splice");
    return NULL;
  }
  t->in_fd = in_dup;
  t->out_fd = out_dup;
  t->pipe_r = pipefd[0];
  t->pipe_w = pipefd[1];
  t->remaining = length;
  t->in_poll.data = t;
  t->out_poll.data = t;
  t->idle.data = t;
  t->idle_ms = (uint64_t)idle_ms;
  if (t->idle_ms > 0) uv_timer_start(&t->idle, splice_on_idle, t->idle_ms, 0);
  report_init(&t->r, env, argv[3], "berth:splice", splice_finish);
  /* Start from the event loop, so that splice() never calls back itself: wait for the in socket. */
  return report_started(env, &t->r, uv_poll_start(&t->in_poll, UV_READABLE | UV_DISCONNECT, splice_on_poll));
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "start", NAPI_AUTO_LENGTH, start, NULL, &fn);
  napi_set_named_property(env, exports, "start", fn);
  napi_create_function(env, "cancel", NAPI_AUTO_LENGTH, cancel, NULL, &fn);
  napi_set_named_property(env, exports, "cancel", fn);
  napi_create_function(env, "splice", NAPI_AUTO_LENGTH, splice_start, NULL, &fn);
  napi_set_named_property(env, exports, "splice", fn);
  napi_create_function(env, "cancelSplice", NAPI_AUTO_LENGTH, cancel, NULL, &fn);
  napi_set_named_property(env, exports, "cancelSplice", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

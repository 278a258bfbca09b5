// SHA-256 by OpenSSL (SHA-NI/AVX2 code paths) whose state can leave the process: Berth's S3 uploads save
// the hash after every acknowledged chunk so that another replica can continue it (src/registry/sha256.ts).
//
// The OpenSSL is Node's own: compiled against the headers Node ships (include/node/openssl) and linked to
// nothing, the SHA256_* symbols are those of the Node process that loads the addon (Node exports them for
// addons), so the context's layout is that of the code that runs. A Node without them cannot load the
// addon, and Berth uses hash-wasm instead.
//
// A hash in progress lives in a JS Buffer holding an OpenSSL SHA256_CTX; every call copies it into an
// aligned local context, so the Buffer needs no alignment and no finalizer. save() and load() convert the
// context to and from Berth's own state format, which does not depend on OpenSSL's struct layout:
//
//   0  "BSHA"         magic
//   4  1              version
//   5  0 0 0          reserved
//   8  u64 BE         bytes hashed so far
//   16 8 x u32 BE     the chaining value H0..H7
//   48 n bytes        the bytes of the unfinished block (n = bytes hashed mod 64)
#define OPENSSL_SUPPRESS_DEPRECATED
#define NAPI_VERSION 8
#include <node_api.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#define STATE_HEADER 48

static napi_value fail(napi_env env, const char* message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

// The context held by argv[0] (a Buffer of sizeof(SHA256_CTX) bytes), copied into *ctx.
static int read_ctx(napi_env env, napi_value value, SHA256_CTX* ctx, void** data) {
  size_t length = 0;
  bool is_buffer = false;
  if (napi_is_buffer(env, value, &is_buffer) != napi_ok || !is_buffer) return 0;
  if (napi_get_buffer_info(env, value, data, &length) != napi_ok || length != sizeof(SHA256_CTX)) return 0;
  memcpy(ctx, *data, sizeof(SHA256_CTX));
  return 1;
}

static napi_value new_ctx(napi_env env, const SHA256_CTX* ctx) {
  napi_value out;
  if (napi_create_buffer_copy(env, sizeof(SHA256_CTX), ctx, NULL, &out) != napi_ok) return NULL;
  return out;
}

// init(): a fresh context.
static napi_value Init(napi_env env, napi_callback_info info) {
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  return new_ctx(env, &ctx);
}

// update(ctx, bytes): hashes a Uint8Array (a Buffer or any view) into ctx, in place.
static napi_value Update(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) return fail(env, "update(ctx, bytes)");
  SHA256_CTX ctx;
  void* stored;
  if (!read_ctx(env, argv[0], &ctx, &stored)) return fail(env, "update: not a SHA-256 context");
  bool is_typed = false;
  napi_is_typedarray(env, argv[1], &is_typed);
  if (!is_typed) return fail(env, "update: bytes must be a Uint8Array");
  napi_typedarray_type type;
  size_t length;
  void* bytes;
  if (napi_get_typedarray_info(env, argv[1], &type, &length, &bytes, NULL, NULL) != napi_ok ||
      type != napi_uint8_array)
    return fail(env, "update: bytes must be a Uint8Array");
  SHA256_Update(&ctx, bytes, length);
  memcpy(stored, &ctx, sizeof(SHA256_CTX));
  return NULL;
}

// digest(ctx): the 32-byte digest of what ctx has hashed; ctx is left as it was.
static napi_value Digest(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  SHA256_CTX ctx;
  void* stored;
  if (argc < 1 || !read_ctx(env, argv[0], &ctx, &stored)) return fail(env, "digest: not a SHA-256 context");
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256_Final(md, &ctx);
  napi_value out;
  if (napi_create_buffer_copy(env, sizeof(md), md, NULL, &out) != napi_ok) return NULL;
  return out;
}

static void put_u32(unsigned char* p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char* p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

// save(ctx): the state in Berth's format (above).
static napi_value Save(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  SHA256_CTX ctx;
  void* stored;
  if (argc < 1 || !read_ctx(env, argv[0], &ctx, &stored)) return fail(env, "save: not a SHA-256 context");
  uint64_t bits = ((uint64_t)ctx.Nh << 32) | ctx.Nl;
  uint64_t total = bits >> 3;
  unsigned int pending = ctx.num;
  if (pending != (unsigned int)(total & 63)) return fail(env, "save: inconsistent SHA-256 context");
  unsigned char out[STATE_HEADER + SHA256_CBLOCK];
  memset(out, 0, sizeof(out));
  memcpy(out, "BSHA", 4);
  out[4] = 1;
  put_u32(out + 8, (uint32_t)(total >> 32));
  put_u32(out + 12, (uint32_t)total);
  for (int i = 0; i < 8; i++) put_u32(out + 16 + 4 * i, ctx.h[i]);
  // OpenSSL keeps the unfinished block in data[] in the order the bytes came.
  memcpy(out + STATE_HEADER, (const unsigned char*)ctx.data, pending);
  napi_value result;
  if (napi_create_buffer_copy(env, STATE_HEADER + pending, out, NULL, &result) != napi_ok) return NULL;
  return result;
}

// load(state): a context from a state in Berth's format.
static napi_value Load(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool is_typed = false;
  if (argc >= 1) napi_is_typedarray(env, argv[0], &is_typed);
  if (!is_typed) return fail(env, "load: the state must be a Uint8Array");
  napi_typedarray_type type;
  size_t length;
  void* data;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_uint8_array)
    return fail(env, "load: the state must be a Uint8Array");
  const unsigned char* in = data;
  if (length < STATE_HEADER || memcmp(in, "BSHA", 4) != 0 || in[4] != 1)
    return fail(env, "load: not a Berth SHA-256 state");
  uint64_t total = ((uint64_t)get_u32(in + 8) << 32) | get_u32(in + 12);
  size_t pending = (size_t)(total & 63);
  if (length != STATE_HEADER + pending || total >= ((uint64_t)1 << 61))
    return fail(env, "load: a SHA-256 state of the wrong length");
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  for (int i = 0; i < 8; i++) ctx.h[i] = get_u32(in + 16 + 4 * i);
  uint64_t bits = total << 3;
  ctx.Nl = (SHA_LONG)bits;
  ctx.Nh = (SHA_LONG)(bits >> 32);
  memcpy((unsigned char*)ctx.data, in + STATE_HEADER, pending);
  ctx.num = (unsigned int)pending;
  return new_ctx(env, &ctx);
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"init", NULL, Init, NULL, NULL, NULL, napi_default, NULL},
      {"update", NULL, Update, NULL, NULL, NULL, napi_default, NULL},
      {"digest", NULL, Digest, NULL, NULL, NULL, napi_default, NULL},
      {"save", NULL, Save, NULL, NULL, NULL, napi_default, NULL},
      {"load", NULL, Load, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

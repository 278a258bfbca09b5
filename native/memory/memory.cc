/*
 * Gives an idle process's spare memory back to the system: Berth's workers and supervisor call it once
 * they fall idle (src/registry/idle-memory.ts).
 *
 *   release() -> undefined
 *
 * Two things that nothing in JavaScript can ask for:
 *  - V8's low-memory collection: full collections that compact the heap, shrink the young generation
 *    back to its starting size and hand the pages V8 keeps pooled for later back to the system (a gc()
 *    call does none of the last two);
 *  - glibc's malloc_trim(0): memory freed to malloc (Node's buffers, SQLite's pages, parser state) stays
 *    in the process until the top of the heap is free, which in a long-lived process it seldom is;
 *    malloc_trim returns every free page of every arena.
 * Both take milliseconds for a worker's heap, so they belong at rest, never on a request's path.
 */
#include <node_api.h>
#include <v8.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

static napi_value release(napi_env env, napi_callback_info info) {
  (void)info;
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  if (isolate != nullptr) isolate->LowMemoryNotification();
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "release", NAPI_AUTO_LENGTH, release, nullptr, &fn);
  napi_set_named_property(env, exports, "release", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

/* Not Linux: no addon functions; Berth streams blobs instead (src/http/sendfile.ts). */
#include <node_api.h>

static napi_value init(napi_env env, napi_value exports) { return exports; }

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

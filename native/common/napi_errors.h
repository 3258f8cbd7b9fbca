/*
 * What every flannel-ts N-API addon does on failure, in one place: CHECK returns from the calling function with a
 * JavaScript error naming the failed N-API call, and throw_errno_error throws "<what>: <strerror>" carrying the
 * numeric errno as `errno`, for the TypeScript side to branch on. Include after <node_api.h>; the module name comes
 * from NODE_GYP_MODULE_NAME, which scripts/build-native.mjs defines per addon.
 */
#ifndef FLANNEL_NAPI_ERRORS_H
#define FLANNEL_NAPI_ERRORS_H

#include <stdio.h>
#include <string.h>

#define FLANNEL_STR2(x) #x
#define FLANNEL_STR(x) FLANNEL_STR2(x)

#define CHECK(env, call)                                                                              \
  do {                                                                                                \
    if ((call) != napi_ok) {                                                                          \
      napi_throw_error((env), NULL, FLANNEL_STR(NODE_GYP_MODULE_NAME) ": N-API call failed: " #call); \
      return NULL;                                                                                    \
    }                                                                                                 \
  } while (0)

static inline napi_value throw_errno_error(napi_env env, const char *what, int err) {
  char message[256];
  snprintf(message, sizeof(message), "%s: %s", what, strerror(err));
  napi_value msg, error, num;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, NULL, msg, &error);
  napi_create_int32(env, err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_throw(env, error);
  return NULL;
}

#endif

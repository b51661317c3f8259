/*
 * fuzz_notif.c -- REST producer bodies: strict JSON parse, then validation of
 * a single notification and of each item of a batch, for a user token and a
 * service token.  Checks the invariants of accepted input.
 */
#include <json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ns_notif.h"
#include "ns_proto.h"

static void check(json_object *o, const ns_principal *who) {
  ns_notif_in in;
  ns_notif_err err;
  static const ns_notif_limits lim = {1780000000000LL, 4096, 7LL * 86400 * 1000};
  if (ns_notif_parse(o, who, "", &lim, &in, &err) == 0) {
    if (strlen(in.id) != 36 || !ns_proto_valid_uuid(in.id, 36) ||
        !in.app_name || !in.title || !in.body || in.priority < -2 ||
        in.priority > 2 || strlen(in.title) > 512 || !in.user_id[0] ||
        (!who->is_service && strcmp(in.user_id, who->sub) != 0))
      abort();
  } else if (err.status != 400 && err.status != 403) {
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ns_principal user, svc;
  json_object *root = NULL, *items;
  ns_proto_err perr;
  size_t i;
  memset(&user, 0, sizeof(user));
  memset(&svc, 0, sizeof(svc));
  strcpy(user.sub, "alice");
  strcpy(svc.sub, "backend");
  svc.is_service = 1;
  if (ns_proto_parse_json((const char *)data, size, &root, &perr) != 0)
    return 0;
  check(root, &user);
  check(root, &svc);
  if (json_object_is_type(root, json_type_object) &&
      json_object_object_get_ex(root, "notifications", &items) &&
      json_object_is_type(items, json_type_array))
    for (i = 0; i < json_object_array_length(items) && i < 600; i++)
      check(json_object_array_get_idx(items, i), &svc);
  json_object_put(root);
  return 0;
}

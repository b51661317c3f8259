/*
 * ns_notif.c -- validation of producer notifications (see ns_notif.h).
 */
#include "ns_notif.h"

#include <ctype.h>
#include <fcntl.h>
#include <json.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ns_common.h"
#include "ns_proto.h"

static int bad(ns_notif_err *err, int status, const char *prefix,
               const char *field, const char *msg) {
  err->status = status;
  snprintf(err->field, sizeof(err->field), "%s%s", prefix, field);
  snprintf(err->message, sizeof(err->message), "%s%s: %s", prefix, field, msg);
  return status == 403 ? NS_EFORBIDDEN : NS_EINVAL;
}

/* Reads optional/required string `key` (1..max bytes of valid UTF-8; empty
 * allowed when allow_empty).  Returns 1 present, 0 absent, -1 invalid. */
static int text_field(json_object *o, const char *key, size_t max,
                      int allow_empty, const char **out) {
  json_object *v;
  const char *s;
  size_t n;
  *out = NULL;
  if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
    return 0;
  if (!json_object_is_type(v, json_type_string))
    return -1;
  s = json_object_get_string(v);
  n = (size_t)json_object_get_string_len(v);
  if (n > max || (!allow_empty && n == 0) || strlen(s) != n ||
      !ns_proto_utf8_valid(s, n))
    return -1;
  *out = s;
  return 1;
}

static int required(json_object *o, const char *key, size_t max,
                    const char **out, const char *prefix, ns_notif_err *err) {
  char msg[96];
  int rc = text_field(o, key, max, 0, out);
  if (rc == 1)
    return 0;
  snprintf(msg, sizeof(msg), "%s (a string of 1-%zu bytes of UTF-8)",
           rc == 0 ? "is required" : "is invalid", max);
  return bad(err, 400, prefix, key, msg);
}

int ns_notif_parse(json_object *o, const ns_principal *who, const char *prefix,
                   const ns_notif_limits *lim, ns_notif_in *out,
                   ns_notif_err *err) {
  const char *s;
  json_object *v;
  int rc;
  (void)lim;
  memset(out, 0, sizeof(*out));
  if (!o || !json_object_is_type(o, json_type_object))
    return bad(err, 400, prefix, "", "must be a JSON object");
  rc = text_field(o, "id", 36, 0, &s);
  if (rc < 0 || (rc == 1 && !ns_proto_valid_uuid(s, strlen(s))))
    return bad(err, 400, prefix, "id", "must be a UUID");
  if (rc == 1) {
    size_t i;
    for (i = 0; i < 36; i++)
      out->id[i] = (char)tolower((unsigned char)s[i]);
  } else {
    ns_notif_uuid(out->id);
  }
  rc = text_field(o, "user_id", NS_SUB_MAX, 0, &s);
  if (rc < 0)
    return bad(err, 400, prefix, "user_id", "must be a string of 1-128 bytes");
  if (rc == 1 && !who->is_service && strcmp(s, who->sub) != 0)
    return bad(err, 403, prefix, "user_id",
               "a user token may only post for its own user");
  if (rc == 0 && who->is_service)
    return bad(err, 400, prefix, "user_id", "is required with a service token");
  snprintf(out->user_id, sizeof(out->user_id), "%s", rc == 1 ? s : who->sub);
  if (required(o, "app_name", 128, &out->app_name, prefix, err) ||
      required(o, "title", 512, &out->title, prefix, err))
    return err->status == 403 ? NS_EFORBIDDEN : NS_EINVAL;
  if (text_field(o, "body", 8192, 1, &out->body) != 1)
    return bad(err, 400, prefix, "body",
               "is required (a string of at most 8192 bytes of UTF-8)");
  if (text_field(o, "category", 64, 1, &out->category) < 0)
    return bad(err, 400, prefix, "category",
               "must be a string of at most 64 bytes");
  out->priority = 0;
  if (json_object_object_get_ex(o, "priority", &v) &&
      !json_object_is_type(v, json_type_null)) {
    int64_t p;
    if (!json_object_is_type(v, json_type_int))
      return bad(err, 400, prefix, "priority", "must be an integer -2..2");
    p = json_object_get_int64(v);
    if (p < -2 || p > 2)
      return bad(err, 400, prefix, "priority", "must be an integer -2..2");
    out->priority = (int)p;
  }
  rc = text_field(o, "source_device", NS_DEVICE_ID_MAX, 0, &s);
  if (rc < 0 || (rc == 1 && !ns_proto_valid_device_id(s, strlen(s))))
    return bad(err, 400, prefix, "source_device", "must be a device_id");
  if (rc == 1)
    snprintf(out->source_device, sizeof(out->source_device), "%s", s);
  return 0;
}

void ns_notif_uuid(char *out) {
  unsigned char b[16];
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  size_t i;
  ssize_t got = fd >= 0 ? read(fd, b, sizeof(b)) : -1;
  if (fd >= 0)
    close(fd);
  if (got != (ssize_t)sizeof(b)) {
    /* No entropy source: fall back to time and address bits (unique, not
     * secret: ids are not capabilities). */
    int64_t t = ns_now_ms() ^ ((int64_t)(uintptr_t)&b << 16);
    for (i = 0; i < sizeof(b); i++)
      b[i] = (unsigned char)(t >> ((i % 8) * 8)) ^ (unsigned char)(i * 37);
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  snprintf(out, 37,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
           b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
           b[11], b[12], b[13], b[14], b[15]);
}

/*
 * test_notif.c -- producer validation: every field's rule and the error
 * naming the field, user vs service tokens, id handling.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <json.h>
#include <stdio.h>
#include <string.h>

#include "ns_common.h"
#include "ns_notif.h"
#include "ns_proto.h"

static ns_principal user = {.sub = "alice"};
static ns_principal svc = {.sub = "backend", .is_service = 1};

/* The clock and settings of every check here. */
static const ns_notif_limits lim = {1780000000000LL, 4096, 7LL * 86400 * 1000};

/* Parses `text` and validates it; returns the rc, fills in/err. */
static int run(const char *text, const ns_principal *who, ns_notif_in *in,
               ns_notif_err *err, json_object **keep) {
  json_object *o = NULL;
  ns_proto_err perr;
  assert_int_equal(ns_proto_parse_json(text, strlen(text), &o, &perr), 0);
  *keep = o;
  return ns_notif_parse(o, who, "", &lim, in, err);
}

static void test_valid_minimal_and_full(void **state) {
  ns_notif_in in;
  ns_notif_err err;
  json_object *o;
  (void)state;
  assert_int_equal(run("{\"app_name\":\"mail\",\"title\":\"hi\",\"body\":\"\"}",
                       &user, &in, &err, &o), 0);
  assert_string_equal(in.user_id, "alice");
  assert_true(ns_proto_valid_uuid(in.id, strlen(in.id)));
  assert_int_equal(in.priority, 0);
  assert_null(in.category);
  assert_string_equal(in.source_device, "");
  json_object_put(o);
  assert_int_equal(
      run("{\"id\":\"0B7E1C2A-1111-4222-8333-444455556666\",\"user_id\":\"bob\","
          "\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"category\":\"c\","
          "\"priority\":-2,\"source_device\":\"phone-1\"}",
          &svc, &in, &err, &o), 0);
  assert_string_equal(in.id, "0b7e1c2a-1111-4222-8333-444455556666");
  assert_string_equal(in.user_id, "bob");
  assert_int_equal(in.priority, -2);
  assert_string_equal(in.category, "c");
  assert_string_equal(in.source_device, "phone-1");
  json_object_put(o);
}

static const struct {
  const char *body;
  int service;
  int status;
  const char *field;
} bad_cases[] = {
    {"{\"title\":\"t\",\"body\":\"b\"}", 0, 400, "app_name"},
    {"{\"app_name\":\"\",\"title\":\"t\",\"body\":\"b\"}", 0, 400, "app_name"},
    {"{\"app_name\":\"a\",\"body\":\"b\"}", 0, 400, "title"},
    {"{\"app_name\":\"a\",\"title\":5,\"body\":\"b\"}", 0, 400, "title"},
    {"{\"app_name\":\"a\",\"title\":\"t\"}", 0, 400, "body"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"priority\":3}", 0, 400, "priority"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"priority\":1.5}", 0, 400, "priority"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"priority\":\"1\"}", 0, 400, "priority"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"category\":7}", 0, 400, "category"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"id\":\"nope\"}", 0, 400, "id"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"source_device\":\"a b\"}", 0, 400, "source_device"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"user_id\":\"bob\"}", 0, 403, "user_id"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\"}", 1, 400, "user_id"},
    {"{\"app_name\":\"a\\u0000b\",\"title\":\"t\",\"body\":\"b\"}", 0, 400, "app_name"},
    {"[1]", 0, 400, ""},
};

static void test_invalid_fields_are_named(void **state) {
  size_t i;
  (void)state;
  for (i = 0; i < NS_ARRAY_SIZE(bad_cases); i++) {
    ns_notif_in in;
    ns_notif_err err;
    json_object *o;
    int rc = run(bad_cases[i].body, bad_cases[i].service ? &svc : &user, &in,
                 &err, &o);
    assert_int_not_equal(rc, 0);
    assert_int_equal(err.status, bad_cases[i].status);
    assert_string_equal(err.field, bad_cases[i].field);
    json_object_put(o);
  }
}

static void test_length_limits(void **state) {
  char body[9000 + 100], big[8200];
  ns_notif_in in;
  ns_notif_err err;
  json_object *o;
  (void)state;
  memset(big, 'x', 8192);
  big[8192] = '\0';
  snprintf(body, sizeof(body), "{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"%s\"}", big);
  assert_int_equal(run(body, &user, &in, &err, &o), 0);
  json_object_put(o);
  big[8192] = 'x';
  big[8193] = '\0';
  snprintf(body, sizeof(body), "{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"%s\"}", big);
  assert_int_not_equal(run(body, &user, &in, &err, &o), 0);
  assert_string_equal(err.field, "body");
  json_object_put(o);
}

static void test_prefix_in_batch_errors(void **state) {
  json_object *o = json_object_new_object();
  ns_notif_in in;
  ns_notif_err err;
  (void)state;
  assert_int_not_equal(ns_notif_parse(o, &user, "notifications[3].", &lim, &in, &err), 0);
  assert_string_equal(err.field, "notifications[3].app_name");
  json_object_put(o);
}

static void test_uuid_v4(void **state) {
  char a[37], b[37];
  (void)state;
  ns_notif_uuid(a);
  ns_notif_uuid(b);
  assert_true(ns_proto_valid_uuid(a, 36));
  assert_string_not_equal(a, b);
  assert_int_equal(a[14], '4');
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_minimal_and_full),
      cmocka_unit_test(test_invalid_fields_are_named),
      cmocka_unit_test(test_length_limits),
      cmocka_unit_test(test_prefix_in_batch_errors),
      cmocka_unit_test(test_uuid_v4),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

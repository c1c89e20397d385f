/* oms_traceparent_parse against W3C trace-context edge cases, as one data table:
 * each row is an input, the expected status and, when valid, the expected ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "oms/status.h"
#include "oms/trace.h"
#include "oms/util.h"

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define SID "00f067aa0ba902b7"

typedef struct {
    const char *name;
    const char *in;  /* NULL: pass NULL */
    int rc;          /* expected status */
    const char *tid; /* expected trace id hex when rc == OMS_OK */
    const char *sid;
    uint8_t flags;
} tp_case;

static const tp_case cases[] = {
    {"valid 00 sampled", "00-" TID "-" SID "-01", OMS_OK, TID, SID, 1},
    {"valid 00 not sampled", "00-" TID "-" SID "-00", OMS_OK, TID, SID, 0},
    {"valid 00 unknown flags kept", "00-" TID "-" SID "-ff", OMS_OK, TID, SID, 0xff},
    {"uppercase trace id", "00-4BF92F3577B34DA6A3CE929D0E0E4736-" SID "-01", OMS_INVALID, NULL,
     NULL, 0},
    {"uppercase span id", "00-" TID "-00F067AA0BA902B7-01", OMS_INVALID, NULL, NULL, 0},
    {"uppercase version", "0A-" TID "-" SID "-01", OMS_INVALID, NULL, NULL, 0},
    {"uppercase flags", "00-" TID "-" SID "-0A", OMS_INVALID, NULL, NULL, 0},
    {"all-zero trace id", "00-00000000000000000000000000000000-" SID "-01", OMS_INVALID, NULL, NULL,
     0},
    {"all-zero span id", "00-" TID "-0000000000000000-01", OMS_INVALID, NULL, NULL, 0},
    {"version ff", "ff-" TID "-" SID "-01", OMS_INVALID, NULL, NULL, 0},
    {"non-hex version", "0g-" TID "-" SID "-01", OMS_INVALID, NULL, NULL, 0},
    {"non-hex flags", "00-" TID "-" SID "-0x", OMS_INVALID, NULL, NULL, 0},
    {"non-hex in trace id", "00-4bf92f3577b34da6a3ce929d0e0e473z-" SID "-01", OMS_INVALID, NULL,
     NULL, 0},
    {"too short by one", "00-" TID "-" SID "-0", OMS_INVALID, NULL, NULL, 0},
    {"flags missing", "00-" TID "-" SID, OMS_INVALID, NULL, NULL, 0},
    {"trace id one short", "00-4bf92f3577b34da6a3ce929d0e0e473-" SID "-01", OMS_INVALID, NULL, NULL,
     0},
    {"trace id one long", "00-4bf92f3577b34da6a3ce929d0e0e47360-" SID "-01", OMS_INVALID, NULL,
     NULL, 0},
    {"span id one short", "00-" TID "-00f067aa0ba902b-01", OMS_INVALID, NULL, NULL, 0},
    {"version 00 with extra char", "00-" TID "-" SID "-01x", OMS_INVALID, NULL, NULL, 0},
    {"version 00 with extra field", "00-" TID "-" SID "-01-abcd", OMS_INVALID, NULL, NULL, 0},
    {"underscore separators", "00_" TID "_" SID "_01", OMS_INVALID, NULL, NULL, 0},
    {"first separator wrong", "00." TID "-" SID "-01", OMS_INVALID, NULL, NULL, 0},
    {"middle separator wrong", "00-" TID ":" SID "-01", OMS_INVALID, NULL, NULL, 0},
    {"last separator wrong", "00-" TID "-" SID " 01", OMS_INVALID, NULL, NULL, 0},
    {"leading space", " 00-" TID "-" SID "-01", OMS_INVALID, NULL, NULL, 0},
    {"future version exact length", "cc-" TID "-" SID "-01", OMS_OK, TID, SID, 1},
    {"future version extra fields", "cc-" TID "-" SID "-01-what-the-future-holds", OMS_OK, TID, SID,
     1},
    {"future version extra without dash", "cc-" TID "-" SID "-01what", OMS_INVALID, NULL, NULL, 0},
    {"empty", "", OMS_INVALID, NULL, NULL, 0},
    {"NULL", NULL, OMS_INVALID, NULL, NULL, 0},
};

static void test_traceparent_table(void **state)
{
    for (size_t i = 0; i < OMS_NELEM(cases); i++) {
        const tp_case *c = &cases[i];
        oms_trace_ctx ctx;
        memset(&ctx, 0xaa, sizeof(ctx)); /* parse must reset it on failure */
        int rc = oms_traceparent_parse(c->in, &ctx);
        if (rc != c->rc)
            fail_msg("case \"%s\": rc %d, want %d", c->name, rc, c->rc);
        if (rc != OMS_OK) {
            if (ctx.valid)
                fail_msg("case \"%s\": invalid input left a valid context", c->name);
            continue;
        }
        char tid[33], sid[17];
        oms_trace_id_hex(&ctx, tid);
        oms_span_id_hex(&ctx, sid);
        if (strcmp(tid, c->tid) != 0 || strcmp(sid, c->sid) != 0 || ctx.flags != c->flags ||
            !ctx.valid)
            fail_msg("case \"%s\": got %s %s %02x valid=%d", c->name, tid, sid, ctx.flags,
                     ctx.valid);
    }
}

/* A NULL out pointer is allowed (validation only). */
static void test_parse_null_out(void **state)
{
    assert_int_equal(oms_traceparent_parse("00-" TID "-" SID "-01", NULL), OMS_OK);
    assert_int_equal(oms_traceparent_parse("00-" TID "-" SID "-0", NULL), OMS_INVALID);
}

/* format(parse(x)) == x for version 00; a future version is re-emitted as 00. */
static void test_format_roundtrip(void **state)
{
    oms_trace_ctx ctx;
    char out[OMS_TRACEPARENT_LEN + 1];
    assert_int_equal(oms_traceparent_parse("00-" TID "-" SID "-01", &ctx), OMS_OK);
    oms_traceparent_format(&ctx, out);
    assert_string_equal(out, "00-" TID "-" SID "-01");
    assert_int_equal(oms_traceparent_parse("cc-" TID "-" SID "-01-x", &ctx), OMS_OK);
    oms_traceparent_format(&ctx, out);
    assert_string_equal(out, "00-" TID "-" SID "-01");
}

/* Generated contexts always parse back (non-zero, lowercase). */
static void test_new_root_and_child(void **state)
{
    for (int i = 0; i < 100; i++) {
        oms_trace_ctx root, child, back;
        char tp[OMS_TRACEPARENT_LEN + 1];
        oms_trace_new_root(&root);
        oms_traceparent_format(&root, tp);
        assert_int_equal(oms_traceparent_parse(tp, &back), OMS_OK);
        assert_memory_equal(back.trace_id, root.trace_id, 16);
        oms_trace_new_child(&root, &child);
        assert_memory_equal(child.trace_id, root.trace_id, 16);
        oms_traceparent_format(&child, tp);
        assert_int_equal(oms_traceparent_parse(tp, NULL), OMS_OK);
    }
}

static void test_current(void **state)
{
    char tp[OMS_TRACEPARENT_LEN + 1];
    oms_trace_ctx ctx;
    oms_trace_clear_current();
    assert_null(oms_trace_current());
    oms_trace_current_header(tp);
    assert_string_equal(tp, "");
    assert_int_equal(oms_traceparent_parse("00-" TID "-" SID "-01", &ctx), OMS_OK);
    oms_trace_set_current(&ctx);
    assert_non_null(oms_trace_current());
    oms_trace_current_header(tp);
    assert_string_equal(tp, "00-" TID "-" SID "-01");
    oms_trace_clear_current();
    assert_null(oms_trace_current());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent_table), cmocka_unit_test(test_parse_null_out),
        cmocka_unit_test(test_format_roundtrip),  cmocka_unit_test(test_new_root_and_child),
        cmocka_unit_test(test_current),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

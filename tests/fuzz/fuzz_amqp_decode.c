/* libFuzzer target: decoding of an AMQP delivery (oms_amqp_decode in common/amqp.c):
 * headers table -> message id, traceparent, x-retry-count, original exchange; body
 * copy. Any client on the broker can publish any table, so the input bytes describe
 * a table of arbitrary kinds and sizes (layout below); every string is its own
 * exact-size allocation so ASan sees any read past it.
 *
 * Layout: flags(1: bit0 headers, bit1 message_id property) [mid_len(1) mid]
 *         exch_len(1) exch  nentries(1)  entries...  body(rest)
 * entry:  key_sel(1) [key_len(1) key when key_sel >= 4]  kind(1)  value
 * value:  8 bytes for numeric kinds; len(2, little endian) + bytes for byte kinds. */
#include <amqp.h>
#include <amqp_framing.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oms/amqp.h"
#include "fuzz.h"

#define MAX_ENTRIES 16
#define MAX_ALLOCS (MAX_ENTRIES * 2 + 4)

typedef struct reader {
    const uint8_t *p;
    size_t left;
    void *allocs[MAX_ALLOCS];
    int nallocs;
} reader;

static unsigned take_u8(reader *r)
{
    if (!r->left)
        return 0;
    r->left--;
    return *r->p++;
}

/* n bytes (fewer when the input ends) as a fresh allocation of exactly that size. */
static amqp_bytes_t take_bytes(reader *r, size_t n)
{
    amqp_bytes_t b = {0, NULL};
    if (n > r->left)
        n = r->left;
    if (n == 0 || r->nallocs == MAX_ALLOCS)
        return b;
    b.bytes = malloc(n);
    if (!b.bytes)
        abort();
    memcpy(b.bytes, r->p, n);
    b.len = n;
    r->allocs[r->nallocs++] = b.bytes;
    r->p += n;
    r->left -= n;
    return b;
}

static const char *const known_keys[] = {"message-id", "traceparent", "x-retry-count",
                                         "x-original-exchange"};
static const uint8_t kinds[] = {
    AMQP_FIELD_KIND_BOOLEAN, AMQP_FIELD_KIND_I8,    AMQP_FIELD_KIND_U8,   AMQP_FIELD_KIND_I16,
    AMQP_FIELD_KIND_U16,     AMQP_FIELD_KIND_I32,   AMQP_FIELD_KIND_U32,  AMQP_FIELD_KIND_I64,
    AMQP_FIELD_KIND_U64,     AMQP_FIELD_KIND_F32,   AMQP_FIELD_KIND_F64,  AMQP_FIELD_KIND_DECIMAL,
    AMQP_FIELD_KIND_UTF8,    AMQP_FIELD_KIND_BYTES, AMQP_FIELD_KIND_VOID, AMQP_FIELD_KIND_TIMESTAMP,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {data, size, {0}, 0};
    amqp_basic_properties_t props;
    amqp_table_entry_t entries[MAX_ENTRIES];
    memset(&props, 0, sizeof(props));
    memset(entries, 0, sizeof(entries));

    unsigned flags = take_u8(&r);
    if (flags & 2) {
        props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        props.message_id = take_bytes(&r, take_u8(&r));
    }
    amqp_bytes_t exch = take_bytes(&r, take_u8(&r));
    int n = (int)(take_u8(&r) % (MAX_ENTRIES + 1));
    for (int i = 0; i < n; i++) {
        amqp_table_entry_t *e = &entries[i];
        unsigned sel = take_u8(&r);
        if (sel < 4)
            e->key = amqp_cstring_bytes(known_keys[sel]);
        else
            e->key = take_bytes(&r, take_u8(&r));
        e->value.kind = kinds[take_u8(&r) % sizeof(kinds)];
        if (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES) {
            size_t len = take_u8(&r);
            len |= (size_t)take_u8(&r) << 8;
            e->value.value.bytes = take_bytes(&r, len);
        } else {
            uint64_t v = 0;
            for (int k = 0; k < 8; k++)
                v |= (uint64_t)take_u8(&r) << (8 * k);
            e->value.value.u64 = v; /* the union's widest integer member */
        }
    }
    if (flags & 1) {
        props._flags |= AMQP_BASIC_HEADERS_FLAG;
        props.headers.num_entries = n;
        props.headers.entries = entries;
    }
    amqp_bytes_t body = take_bytes(&r, r.left);

    oms_amqp_decoded d;
    oms_amqp_decode(&props, exch.bytes, exch.len, body.bytes, body.len, &d);
    if (!d.exchange || !d.message_id || !d.traceparent || d.retry_count < 0)
        abort();
    if (d.len != body.len || !d.body || d.body[d.len] != '\0' ||
        (d.len && memcmp(d.body, body.bytes, d.len) != 0))
        abort();
    /* A non-empty string message-id header (the first one) wins over the property. */
    if (flags & 1) {
        for (int i = 0; i < n; i++) {
            const amqp_table_entry_t *e = &entries[i];
            if (e->key.len != 10 || memcmp(e->key.bytes, "message-id", 10) != 0)
                continue;
            int str =
                e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES;
            if (str && e->value.value.bytes.len > 0 &&
                (strlen(d.message_id) > e->value.value.bytes.len ||
                 memcmp(d.message_id, e->value.value.bytes.bytes, strlen(d.message_id)) != 0))
                abort();
            break;
        }
    }
    oms_amqp_decoded_free(&d);
    for (int i = 0; i < r.nallocs; i++)
        free(r.allocs[i]);
    return 0;
}

/* Table-driven configuration from the environment (oms/config.h).
 *
 * Each entry is parsed by a per-type function that either stores the value or writes
 * what was expected; the caller formats the single error line so every type reports
 * the same way: config: NAME="value": expected <what>. */
#include "oms/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "oms/status.h"
#include "oms/util.h"

/* Parses value for def; on success stores into def->target (when non-NULL) and returns
 * OMS_OK; on failure writes the expectation ("an integer in 1..64") into want. */
typedef int (*cfg_parse_fn)(const oms_cfg_def *def, const char *value, char *want, size_t wantlen);

static int is_string_type(oms_cfg_type t)
{
    return t == OMS_CFG_STR || t == OMS_CFG_ADDR || t == OMS_CFG_ENUM || t == OMS_CFG_URL;
}

static void store_string(const oms_cfg_def *def, const char *value)
{
    if (def->target)
        *(char **)def->target = oms_strdup(value);
}

static int parse_str(const oms_cfg_def *def, const char *value, char *want, size_t wantlen)
{
    store_string(def, value);
    return OMS_OK;
}

/* Whole string, optional sign then digits only: strtoll alone would accept leading
 * blanks and stop silently at trailing junk ("8080x"). */
static int parse_ll(const char *s, long long *out)
{
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return OMS_INVALID;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            return OMS_INVALID;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || !end || *end != '\0')
        return OMS_INVALID;
    *out = v;
    return OMS_OK;
}

static int parse_int(const oms_cfg_def *def, const char *value, char *want, size_t wantlen)
{
    long long v = 0;
    if (parse_ll(value, &v) != OMS_OK || v < def->min || v > def->max) {
        snprintf(want, wantlen, "an integer in %lld..%lld", def->min, def->max);
        return OMS_INVALID;
    }
    if (def->target)
        *(long long *)def->target = v;
    return OMS_OK;
}

static int parse_bool(const oms_cfg_def *def, const char *value, char *want, size_t wantlen)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < OMS_NELEM(yes); i++) {
        int b = -1;
        if (strcasecmp(value, yes[i]) == 0)
            b = 1;
        else if (strcasecmp(value, no[i]) == 0)
            b = 0;
        if (b >= 0) {
            if (def->target)
                *(int *)def->target = b;
            return OMS_OK;
        }
    }
    snprintf(want, wantlen, "a boolean (1/0, true/false, yes/no, on/off)");
    return OMS_INVALID;
}

static int has_space(const char *s)
{
    for (; *s; s++)
        if (isspace((unsigned char)*s) || iscntrl((unsigned char)*s))
            return 1;
    return 0;
}

/* host:port with the last colon as separator (so "[::1]:80" works); host non-empty. */
static int parse_addr(const oms_cfg_def *def, const char *value, char *want, size_t wantlen)
{
    const char *colon = strrchr(value, ':');
    long long port = 0;
    if (!colon || colon == value || has_space(value) || parse_ll(colon + 1, &port) != OMS_OK ||
        colon[1] == '+' || colon[1] == '-' || port < 1 || port > 65535) {
        snprintf(want, wantlen, "host:port with port 1..65535");
        return OMS_INVALID;
    }
    store_string(def, value);
    return OMS_OK;
}

/* choices is "a|b|c": value must equal one alternative exactly. */
static int parse_enum(const oms_cfg_def *def, const char *value, char *want, size_t wantlen)
{
    const char *choices = def->choices ? def->choices : "";
    size_t vl = strlen(value);
    const char *p = choices;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == vl && strncmp(p, value, n) == 0) {
            store_string(def, value);
            return OMS_OK;
        }
        if (!bar)
            break;
        p = bar + 1;
    }
    snprintf(want, wantlen, "one of %s", choices);
    return OMS_INVALID;
}

/* Empty (feature off) or http(s):// followed by at least a host. */
static int parse_url(const oms_cfg_def *def, const char *value, char *want, size_t wantlen)
{
    const char *rest = NULL;
    if (strncmp(value, "http://", 7) == 0)
        rest = value + 7;
    else if (strncmp(value, "https://", 8) == 0)
        rest = value + 8;
    if (*value != '\0' && (!rest || *rest == '\0' || *rest == '/' || has_space(value))) {
        snprintf(want, wantlen, "empty or a URL starting with http:// or https://");
        return OMS_INVALID;
    }
    store_string(def, value);
    return OMS_OK;
}

static cfg_parse_fn parser_for(oms_cfg_type t)
{
    switch (t) {
    case OMS_CFG_STR: return parse_str;
    case OMS_CFG_INT: return parse_int;
    case OMS_CFG_BOOL: return parse_bool;
    case OMS_CFG_ADDR: return parse_addr;
    case OMS_CFG_ENUM: return parse_enum;
    case OMS_CFG_URL: return parse_url;
    }
    return NULL;
}

/* Quotes value for the one-line error: ", \ and control bytes escaped so a hostile or
 * multi-line value cannot split the line. */
static void quote_value(const char *v, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return;
    for (; *v && o + 5 < outlen; v++) {
        unsigned char c = (unsigned char)*v;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

void oms_config_free(const oms_cfg_def *defs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!is_string_type(defs[i].type) || !defs[i].target)
            continue;
        char **p = defs[i].target;
        free(*p);
        *p = NULL;
    }
}

int oms_config_load(const oms_cfg_def *defs, size_t n, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    /* Targets start NULL so that a failure part-way can free exactly what was stored
     * and leave every string target NULL (oms_config_free is then still safe). */
    for (size_t i = 0; i < n; i++)
        if (is_string_type(defs[i].type) && defs[i].target)
            *(char **)defs[i].target = NULL;

    for (size_t i = 0; i < n; i++) {
        const oms_cfg_def *d = &defs[i];
        const char *var = d->name;
        const char *value = getenv(d->name);
        if (!value && d->alias) {
            value = getenv(d->alias);
            if (value)
                var = d->alias; /* the error names the variable actually read */
        }
        int from_default = 0;
        if (!value) {
            value = d->def ? d->def : "";
            from_default = 1;
        }
        cfg_parse_fn fn = parser_for(d->type);
        char want[160] = "";
        if (!fn) {
            snprintf(want, sizeof(want), "a known type (table entry has type %d)", (int)d->type);
        }
        if (!fn || fn(d, value, want, sizeof(want)) != OMS_OK) {
            /* The value is echoed, so a URL's password in it is hidden first. */
            char shown[256], quoted[256];
            oms_url_redact(value, shown, sizeof(shown));
            quote_value(shown, quoted, sizeof(quoted));
            if (err && errlen)
                snprintf(err, errlen, "config: %s=\"%s\"%s: expected %s", var, quoted,
                         from_default ? " (built-in default)" : "", want);
            oms_config_free(defs, i);
            return OMS_INVALID;
        }
    }
    return OMS_OK;
}

void oms_config_print_help(const oms_cfg_def *defs, size_t n)
{
    oms_config_print_help_to(stdout, defs, n);
}

void oms_config_print_help_to(FILE *out, const oms_cfg_def *defs, size_t n)
{
    int wname = 4, wdef = 7;
    for (size_t i = 0; i < n; i++) {
        int ln = (int)strlen(defs[i].name);
        int ld = defs[i].def && *defs[i].def ? (int)strlen(defs[i].def) : 2;
        if (ln > wname)
            wname = ln;
        if (ld > wdef)
            wdef = ld;
    }
    fprintf(out, "%-*s  %-*s  %s\n", wname, "NAME", wdef, "DEFAULT", "DESCRIPTION");
    for (size_t i = 0; i < n; i++) {
        const oms_cfg_def *d = &defs[i];
        const char *def = d->def && *d->def ? d->def : "\"\"";
        fprintf(out, "%-*s  %-*s  %s", wname, d->name, wdef, def, d->help ? d->help : "");
        if (d->type == OMS_CFG_INT)
            fprintf(out, " (%lld..%lld)", d->min, d->max);
        else if (d->type == OMS_CFG_ENUM && d->choices)
            fprintf(out, " (%s)", d->choices);
        if (d->alias)
            fprintf(out, " [alias: %s]", d->alias);
        fputc('\n', out);
    }
}

/* Configuration from environment variables only, as a table (redis createIntConfig
 * style): name, type, default, bounds. Validated at start; a bad value produces a
 * one-line error naming the variable. */
#ifndef OMS_CONFIG_H
#define OMS_CONFIG_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
    OMS_CFG_STR,  /* target: char ** (heap copy, freed by oms_config_free) */
    OMS_CFG_INT,  /* target: long long *; bounds min..max inclusive */
    OMS_CFG_BOOL, /* target: int *; accepts 1/0 true/false yes/no on/off */
    OMS_CFG_ADDR, /* target: char **; "host:port", port 1..65535 */
    OMS_CFG_ENUM, /* target: char **; value must be one of choices "a|b|c" */
    OMS_CFG_URL,  /* target: char **; must start with http:// or https:// (empty allowed) */
} oms_cfg_type;

typedef struct oms_cfg_def {
    const char *name; /* environment variable */
    oms_cfg_type type;
    const char *def;     /* default, as text; may be "" */
    long long min, max;  /* OMS_CFG_INT only */
    const char *choices; /* OMS_CFG_ENUM only */
    void *target;
    const char *alias; /* optional second variable read when name is unset (e.g. JAEGER_ADDR) */
    const char *help;  /* one line, for the README table and --help */
} oms_cfg_def;

/* One row per macro call, one line per row (redis createIntConfig): the type is in the
 * macro's name, so a row says only what differs. Defaults are text, as the variable
 * would be written; INT bounds are inclusive; ENUM choices are "a|b|c". */
#define OMS_CFG_ROW(type, name, def, min, max, choices, target, alias, help)                       \
    {                                                                                              \
        (name), (type), (def), (min), (max), (choices), (target), (alias), (help)                  \
    }
#define OMS_CFG_STR_ROW(name, def, target, help)                                                   \
    OMS_CFG_ROW(OMS_CFG_STR, name, def, 0, 0, NULL, target, NULL, help)
#define OMS_CFG_INT_ROW(name, def, min, max, target, help)                                         \
    OMS_CFG_ROW(OMS_CFG_INT, name, def, min, max, NULL, target, NULL, help)
#define OMS_CFG_BOOL_ROW(name, def, target, help)                                                  \
    OMS_CFG_ROW(OMS_CFG_BOOL, name, def, 0, 0, NULL, target, NULL, help)
#define OMS_CFG_ADDR_ROW(name, def, target, help)                                                  \
    OMS_CFG_ROW(OMS_CFG_ADDR, name, def, 0, 0, NULL, target, NULL, help)
#define OMS_CFG_URL_ROW(name, def, target, help)                                                   \
    OMS_CFG_ROW(OMS_CFG_URL, name, def, 0, 0, NULL, target, NULL, help)
#define OMS_CFG_ENUM_ROW(name, def, choices, target, help)                                         \
    OMS_CFG_ROW(OMS_CFG_ENUM, name, def, 0, 0, choices, target, NULL, help)
/* A string also read from alias (an older name) when name is unset. */
#define OMS_CFG_STR_ALIAS_ROW(name, alias, def, target, help)                                      \
    OMS_CFG_ROW(OMS_CFG_STR, name, def, 0, 0, NULL, target, alias, help)

/* Loads every entry. On failure returns OMS_INVALID and writes e.g.
 * "config: GRPC_ADDR=\"x\": expected host:port" into err. */
int oms_config_load(const oms_cfg_def *defs, size_t n, char *err, size_t errlen);
/* Frees the strings oms_config_load allocated into targets. */
void oms_config_free(const oms_cfg_def *defs, size_t n);
/* Prints "NAME  default  help" lines to stdout (for --help). */
void oms_config_print_help(const oms_cfg_def *defs, size_t n);
/* The same text to out (a test captures it in a memstream); out stays the caller's. */
void oms_config_print_help_to(FILE *out, const oms_cfg_def *defs, size_t n);

#endif

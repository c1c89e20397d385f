/* Structured logging: one JSON line per record on stderr, Zap's shape
 * (ts, level, service, caller, msg, trace_id, span_id, then fields), or a
 * human-readable line with LOG_FORMAT=console. The macros check the level before
 * evaluating their arguments (redis serverLog). Thread-safe: one write(2) per line.
 *
 * Any input makes one well-formed line: a JSON line always parses (control bytes
 * escaped, invalid UTF-8 written as U+FFFD), a console line escapes control bytes as
 * \n, \t, \xNN. A message, key or value over 1024 bytes is cut and ends in
 * "...(truncated)" (with a real ellipsis); fields that no longer fit the 8 KiB line are
 * left out and counted in fields_dropped. The password of a URL in any value or
 * message is written as *** (oms_url_redact). */
#ifndef OMS_LOG_H
#define OMS_LOG_H

#include <stddef.h> /* NULL, which the macros pass */

typedef enum { OMS_LOG_DEBUG = 0, OMS_LOG_INFO, OMS_LOG_WARN, OMS_LOG_ERROR } oms_log_level;

/* service is copied. level: lowest level written. console: 1 for LOG_FORMAT=console. */
void oms_log_init(const char *service, oms_log_level level, int console);
/* Parses "debug|info|warn|error"; returns -1 when unknown. */
int oms_log_level_parse(const char *s);
int oms_log_enabled(oms_log_level level);

/* Fields: NULL-terminated list of (const char *key, const char *value) pairs;
 * a NULL value is written as null. trace_id/span_id come from the calling thread's
 * current trace context (oms/trace.h), when one is set. */
void oms_log_write(oms_log_level level, const char *file, int line, const char *msg, ...);
/* Same, with a printf-formatted message and no fields. */
void oms_log_writef(oms_log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define OMS_LOG(level, msg, ...)                                                                   \
    do {                                                                                           \
        if (oms_log_enabled(level))                                                                \
            oms_log_write(level, __FILE__, __LINE__, msg, ##__VA_ARGS__, NULL);                    \
    } while (0)
#define OMS_LOGF(level, ...)                                                                       \
    do {                                                                                           \
        if (oms_log_enabled(level))                                                                \
            oms_log_writef(level, __FILE__, __LINE__, __VA_ARGS__);                                \
    } while (0)

#define oms_log_debug(msg, ...) OMS_LOG(OMS_LOG_DEBUG, msg, ##__VA_ARGS__)
#define oms_log_info(msg, ...) OMS_LOG(OMS_LOG_INFO, msg, ##__VA_ARGS__)
#define oms_log_warn(msg, ...) OMS_LOG(OMS_LOG_WARN, msg, ##__VA_ARGS__)
#define oms_log_error(msg, ...) OMS_LOG(OMS_LOG_ERROR, msg, ##__VA_ARGS__)
#define oms_log_debugf(...) OMS_LOGF(OMS_LOG_DEBUG, __VA_ARGS__)
#define oms_log_infof(...) OMS_LOGF(OMS_LOG_INFO, __VA_ARGS__)
#define oms_log_warnf(...) OMS_LOGF(OMS_LOG_WARN, __VA_ARGS__)
#define oms_log_errorf(...) OMS_LOGF(OMS_LOG_ERROR, __VA_ARGS__)

#endif

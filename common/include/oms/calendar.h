/* Calendar days and timestamps as the staff API writes them: "YYYY-MM-DD" days at a
 * fixed UTC offset, and RFC 3339 times. Strict parsers: a value that is not exactly
 * in the format is refused, never guessed at. */
#ifndef OMS_CALENDAR_H
#define OMS_CALENDAR_H

#include <stdint.h>

/* Bounds of a UTC offset in minutes east of UTC (UTC-14:00 .. UTC+14:00). */
#define OMS_TZ_MIN_MINUTES (-840)
#define OMS_TZ_MAX_MINUTES 840
#define OMS_MS_PER_DAY 86400000LL

/* "YYYY-MM-DD" (year 1970..9999, a real date) -> *days since 1970-01-01. OMS_OK or
 * OMS_INVALID. */
int oms_day_parse(const char *s, int64_t *days);
/* The day of unix_ms at tz_minutes east of UTC as "YYYY-MM-DD" (out >= 11 bytes). */
void oms_day_format(int64_t unix_ms, int tz_minutes, char out[11]);
/* The first millisecond of that day at tz_minutes east of UTC. */
int64_t oms_day_start_ms(int64_t days, int tz_minutes);
/* RFC 3339 "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)" ('t'/'z' and a space for
 * 'T' accepted, as the RFC allows) -> *unix_ms (fraction cut to ms). OMS_OK or
 * OMS_INVALID. */
int oms_rfc3339_parse(const char *s, int64_t *unix_ms);

#endif

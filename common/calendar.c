#include "oms/calendar.h"

#include <string.h>

#include "oms/status.h"

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil): no time zone database and no mktime, whose TZ is the process's. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* n digits at s into *v; 0 when any is not a digit. */
static int digits(const char *s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        *v = *v * 10 + (s[i] - '0');
    }
    return 1;
}

static int month_days(int y, int m)
{
    static const int len[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : len[m - 1];
}

/* The date part shared by both formats: s[0..9] is "YYYY-MM-DD". */
static int date_part(const char *s, int64_t *days)
{
    int y, m, d;
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &m) || s[7] != '-' ||
        !digits(s + 8, 2, &d))
        return OMS_INVALID;
    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > month_days(y, m))
        return OMS_INVALID;
    *days = days_from_civil(y, m, d);
    return OMS_OK;
}

int oms_day_parse(const char *s, int64_t *days)
{
    if (!s || strlen(s) != 10)
        return OMS_INVALID;
    return date_part(s, days);
}

void oms_day_format(int64_t unix_ms, int tz_minutes, char out[11])
{
    int64_t local = unix_ms + (int64_t)tz_minutes * 60000;
    int64_t days =
        local >= 0 ? local / OMS_MS_PER_DAY : -((-local + OMS_MS_PER_DAY - 1) / OMS_MS_PER_DAY);
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    if (y < 0 || y > 9999)
        y = y < 0 ? 0 : 9999;
    out[0] = (char)('0' + y / 1000);
    out[1] = (char)('0' + y / 100 % 10);
    out[2] = (char)('0' + y / 10 % 10);
    out[3] = (char)('0' + y % 10);
    out[4] = '-';
    out[5] = (char)('0' + m / 10);
    out[6] = (char)('0' + m % 10);
    out[7] = '-';
    out[8] = (char)('0' + d / 10);
    out[9] = (char)('0' + d % 10);
    out[10] = '\0';
}

int64_t oms_day_start_ms(int64_t days, int tz_minutes)
{
    return days * OMS_MS_PER_DAY - (int64_t)tz_minutes * 60000;
}

int oms_rfc3339_parse(const char *s, int64_t *unix_ms)
{
    int64_t days;
    int hh, mm, ss;
    if (!s || strlen(s) < 20 || date_part(s, &days) != OMS_OK)
        return OMS_INVALID;
    if (s[10] != 'T' && s[10] != 't' && s[10] != ' ')
        return OMS_INVALID;
    if (!digits(s + 11, 2, &hh) || s[13] != ':' || !digits(s + 14, 2, &mm) || s[16] != ':' ||
        !digits(s + 17, 2, &ss) || hh > 23 || mm > 59 || ss > 59)
        return OMS_INVALID;
    const char *p = s + 19;
    int64_t ms = 0;
    if (*p == '.') {
        int n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 3)
                ms = ms * 10 + (*p - '0');
        if (n == 0)
            return OMS_INVALID;
        for (; n < 3; n++)
            ms *= 10;
    }
    int64_t offset_min = 0;
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
        offset_min = 0;
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
        int oh, om;
        if (!digits(p + 1, 2, &oh) || !digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return OMS_INVALID;
        offset_min = (*p == '-' ? -1 : 1) * (oh * 60 + om);
    } else {
        return OMS_INVALID;
    }
    *unix_ms = days * OMS_MS_PER_DAY + ((int64_t)hh * 3600 + mm * 60 + ss) * 1000 + ms -
               offset_min * 60000;
    return OMS_OK;
}

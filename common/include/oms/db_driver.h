/* The driver vtable behind oms/db.h (curl's Curl_ssl style). Only db.c and the
 * drivers include this. */
#ifndef OMS_DB_DRIVER_H
#define OMS_DB_DRIVER_H

#include "oms/db.h"

typedef struct oms_db_conn oms_db_conn; /* driver-private */

struct oms_db_row {
    const struct oms_db_driver *drv;
    void *impl; /* driver-private row cursor */
};

typedef struct oms_db_driver {
    const char *name;
    /* url already stripped of a "sqlite:" prefix for sqlite. */
    int (*connect)(const char *url, oms_db_conn **out, oms_error *err);
    void (*disconnect)(oms_db_conn *c);
    /* begin: "BEGIN IMMEDIATE" (sqlite) / "BEGIN" (pg). */
    int (*begin)(oms_db_conn *c, oms_error *err);
    int (*commit)(oms_db_conn *c, oms_error *err);
    void (*rollback)(oms_db_conn *c);
    /* Runs a script of several statements without parameters (migrations). */
    int (*exec_script)(oms_db_conn *c, const char *sql, oms_error *err);
    int (*exec)(oms_db_conn *c, const char *sql, const oms_db_param *p, int n, long long *changes,
                oms_error *err);
    int (*query)(oms_db_conn *c, const char *sql, const oms_db_param *p, int n, oms_db_row_fn fn,
                 void *ud, long long *nrows, oms_error *err);
    const char *(*row_text)(const oms_db_row *row, int col);
    long long (*row_int)(const oms_db_row *row, int col);
    int (*row_isnull)(const oms_db_row *row, int col);
    int (*row_columns)(const oms_db_row *row);
    /* Optional: taken first in each migration transaction and held until it ends, so
     * instances starting together apply migrations one at a time (NULL: the driver
     * serialises writers anyway). */
    int (*migration_lock)(oms_db_conn *c, oms_error *err);
    /* Number of connections to open: 1 for sqlite (single writer). */
    int pool_size;
    /* 1 when transactions on other connections (other instances) run concurrently and
     * understand SELECT ... FOR UPDATE SKIP LOCKED (see oms_db_locks_rows). */
    int row_locks;
} oms_db_driver;

extern const oms_db_driver oms_db_driver_sqlite;
extern const oms_db_driver oms_db_driver_postgres;

#endif

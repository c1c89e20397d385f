/* The database layer: one API over pluggable drivers (SQLite now, PostgreSQL via
 * DATABASE_URL later), prepared statements only, migrations applied at open.
 *
 * SQL is written once in PostgreSQL's placeholder style ($1, $2, ...); the SQLite
 * driver binds by name, so the same text runs on both. Every statement runs inside
 * a transaction handle (oms_db_tx) that holds one connection until commit or
 * rollback; oms_db_begin blocks until a connection is free. With SQLite there is one
 * writer connection, so transactions are serialised (BEGIN IMMEDIATE): that is what
 * makes read-check-update sequences (stock reservations) safe. */
#ifndef OMS_DB_H
#define OMS_DB_H

#include <stddef.h>

#include "oms/status.h"

typedef struct oms_db oms_db;
typedef struct oms_db_tx oms_db_tx;
typedef struct oms_db_row oms_db_row;

typedef enum { OMS_DB_NULL = 0, OMS_DB_INT, OMS_DB_TEXT } oms_db_type;

typedef struct oms_db_param {
    oms_db_type type;
    long long i;
    const char *s; /* borrowed for the duration of the call */
} oms_db_param;

#define OMS_DB_I(v) ((oms_db_param){OMS_DB_INT, (long long)(v), NULL})
#define OMS_DB_S(v) ((oms_db_param){OMS_DB_TEXT, 0, (v)})
#define OMS_DB_NULLP ((oms_db_param){OMS_DB_NULL, 0, NULL})

/* A migration is applied once, in order, recorded by name in schema_migrations.
 * sql may hold several statements. sql_pg, when non-NULL, replaces sql on PostgreSQL. */
typedef struct oms_db_migration {
    const char *name;
    const char *sql;
    const char *sql_pg;
} oms_db_migration;

/* The pool of a database on a shared server (PostgreSQL): DB_POOL_SIZE connections per
 * process, and how long oms_db_begin waits for a free one before it answers OMS_AGAIN
 * (DB_POOL_WAIT_MS). OMS_APP_DB_CONFIG fills one from the environment (long long so a
 * config row stores into it). SQLite ignores it: its one connection is the writer lock,
 * and its callers queue on it without a bound. */
typedef struct oms_db_pool_config {
    long long size;    /* connections; 1..256 */
    long long wait_ms; /* longest wait for a free connection; >= 1 */
} oms_db_pool_config;

/* Sets the pool of every database oms_db_open opens afterwards in this process (copied);
 * NULL restores the defaults (8 connections, 5000 ms). Call before any thread opens a
 * database: the service runner calls it once at start. */
void oms_db_set_pool(const oms_db_pool_config *cfg);

/* url: "sqlite:PATH", a plain PATH (SQLite), ":memory:", or "postgres://..." /
 * "postgresql://...". Creates the file's directory if missing. Applies migrations.
 * On success *out is owned by the caller (oms_db_close). */
int oms_db_open(oms_db **out, const char *url, const oms_db_migration *migs, size_t nmigs,
                oms_error *err);
void oms_db_close(oms_db *db);
/* "sqlite" or "postgres". */
const char *oms_db_driver_name(const oms_db *db);
/* 1 when writers run concurrently (PostgreSQL: several instances share the database)
 * and a worker claiming rows must lock them (SELECT ... FOR UPDATE SKIP LOCKED, held
 * until its transaction ends); 0 when transactions are serialised (SQLite), where a
 * plain SELECT already claims and that clause does not parse. */
int oms_db_locks_rows(const oms_db *db);
/* The same, asked of an open transaction. */
int oms_db_tx_locks_rows(const oms_db_tx *tx);
/* OMS_OK when the database answers a trivial query. */
int oms_db_ping(oms_db *db, oms_error *err);

/* Starts a transaction; *tx is valid until oms_db_commit or oms_db_rollback, which
 * always release it (even when commit fails). */
int oms_db_begin(oms_db *db, oms_db_tx **tx, oms_error *err);
int oms_db_commit(oms_db_tx *tx, oms_error *err);
void oms_db_rollback(oms_db_tx *tx);

/* Runs one statement. *changes (optional) gets the number of rows changed.
 * Returns OMS_OK, OMS_CONFLICT on a unique/primary-key violation, OMS_AGAIN when the
 * database is busy/unreachable, OMS_ERR otherwise (message in err). */
int oms_db_exec(oms_db_tx *tx, const char *sql, const oms_db_param *params, int nparams,
                long long *changes, oms_error *err);
/* oms_db_exec in a transaction of its own: begun, run, committed (rolled back on error). */
int oms_db_exec_tx(oms_db *db, const char *sql, const oms_db_param *params, int nparams,
                   long long *changes, oms_error *err);

/* Row access inside a query callback; pointers are valid only during the callback. */
const char *oms_db_row_text(const oms_db_row *row, int col); /* NULL for SQL NULL */
long long oms_db_row_int(const oms_db_row *row, int col);    /* 0 for NULL */
int oms_db_row_isnull(const oms_db_row *row, int col);
int oms_db_row_columns(const oms_db_row *row);

/* Callback per row: return OMS_OK to continue; anything else stops the query and is
 * returned by oms_db_query. */
typedef int (*oms_db_row_fn)(const oms_db_row *row, void *ud);

/* Runs a query (SELECT or ... RETURNING) and calls fn for each row. fn may be NULL.
 * *nrows (optional) gets the number of rows seen. Same return codes as oms_db_exec. */
int oms_db_query(oms_db_tx *tx, const char *sql, const oms_db_param *params, int nparams,
                 oms_db_row_fn fn, void *ud, long long *nrows, oms_error *err);

#endif

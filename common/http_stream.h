/* Server-Sent Events streams of the libmicrohttpd servers (common/http.c), internal.
 *
 * A stream is a libmicrohttpd response whose content reader hands out what
 * oms_http_stream_send buffered. When the buffer is empty the reader suspends the
 * connection (libmicrohttpd 0.9.75 polls a reader that returns 0 in a busy loop), so an
 * idle stream costs a socket and a small struct, no thread and no CPU; a send resumes
 * it. The server's list of streams serves the heartbeat thread (": hb" every period,
 * which also finds clients that went away: their write fails and libmicrohttpd closes
 * the connection) and the stop, which ends every stream before the daemon stops (a
 * daemon must not stop with suspended connections).
 *
 * A stream has two references: the response's (dropped when libmicrohttpd destroys
 * it, or when the stream is never served) and its owner's (oms_http_stream_release).
 * Lock order: the list's lock, then a stream's. */
#ifndef OMS_HTTP_STREAM_H
#define OMS_HTTP_STREAM_H

#include <microhttpd.h>

#include "oms/http.h"

typedef struct http_streams http_streams;

/* max: open streams at most; heartbeat_ms: period of the comment line. Starts the
 * heartbeat thread; NULL when it cannot. */
http_streams *http_streams_new(long long max, long long heartbeat_ms);
/* Ends every stream (the reader then finishes its response) and stops the heartbeat
 * thread; new streams are refused. Call before MHD_stop_daemon. */
void http_streams_end_all(http_streams *ss);
/* Frees the list; call after MHD_stop_daemon (every response destroyed). NULL: no-op. */
void http_streams_free(http_streams *ss);
int http_streams_count(http_streams *ss);

/* A new stream on conn with its two references, or NULL at the limit or when ending. */
oms_http_stream *http_stream_new(http_streams *ss, struct MHD_Connection *conn,
                                 oms_http_stream_closed on_closed, void *arg);
/* The response serving s (owned by the caller until queued, as any MHD response), or
 * NULL when it cannot be made: then call http_stream_abandon. */
struct MHD_Response *http_stream_response(oms_http_stream *s);
/* s will not be served (the handler answered otherwise, or no response could be
 * made): ends it, runs on_closed and drops the response's reference. */
void http_stream_abandon(oms_http_stream *s);

#endif

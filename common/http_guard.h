/* Request deadline for the libmicrohttpd servers (common/http.c), internal.
 *
 * libmicrohttpd's connection timeout is an idle timeout: a client that sends one
 * header byte every few seconds (slowloris) is never dropped, and a few hundred of them
 * take every connection slot. The guard gives each request a deadline instead: from
 * the moment the server waits for a request (connection accepted, or the previous
 * response finished) until the request is complete (head and body read), at most
 * deadline_s may pass. A background thread shuts down the socket of any connection
 * past its deadline; libmicrohttpd then sees the peer gone and closes it as usual. */
#ifndef OMS_HTTP_GUARD_H
#define OMS_HTTP_GUARD_H

#include <microhttpd.h>

typedef struct http_guard http_guard;

/* Starts the watcher thread. Returns NULL when it cannot (out of threads). */
http_guard *http_guard_new(unsigned deadline_s);
/* Stops the watcher; call after MHD_stop_daemon (which reports every connection closed).
 * NULL: no-op. */
void http_guard_free(http_guard *g);

/* MHD_OPTION_NOTIFY_CONNECTION callback; cls is the guard. */
void http_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode code);
/* The current request has been read completely: no deadline while it is answered. */
void http_guard_request_read(struct MHD_Connection *conn);
/* The response is done: the clock starts for the next request on this connection. */
void http_guard_request_done(struct MHD_Connection *conn);

#endif

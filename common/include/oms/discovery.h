/* Service discovery (README "Several instances"): where a service's instances are,
 * and telling others where this one is.
 *
 * DISCOVERY=static (default): nothing registers; a client's targets are the comma
 * list from <NAME>_ADDRS (gRPC round robin over them).
 * DISCOVERY=etcd: every instance puts <ETCD_PREFIX>/services/<name>/<addr> under a
 * lease of DISCOVERY_TTL seconds that a background thread keeps alive (and re-creates
 * when it expired, e.g. after a long pause or an etcd restart); a clean stop revokes
 * the lease, so the key disappears at once, and a crash lets it expire. Clients list
 * that prefix when an etcd watch reports a change (and every DISCOVERY_POLL_MS as a
 * safety net) and, when the set of live instances changes,
 * swap their gRPC channel's target list (round robin over the live set; the channel
 * is otherwise long-lived). Talks to etcd 3.4's v3 JSON gateway with libcurl. */
#ifndef OMS_DISCOVERY_H
#define OMS_DISCOVERY_H

#include "oms/config.h"
#include "oms/grpc_client.h"
#include "oms/status.h"

typedef struct oms_discovery_config {
    char *mode;           /* "static" or "etcd" */
    char *etcd_endpoints; /* comma list of http://host:port, tried in turn */
    char *etcd_prefix;    /* key prefix, e.g. "/oms" */
    long long ttl_s;      /* lease TTL */
    long long poll_ms;    /* how often clients re-read the registry */
    char *advertise_addr; /* address registered instead of the listen address */
} oms_discovery_config;

/* Config entries for oms_discovery_config, to put in a service's table. */
// clang-format off
#define OMS_DISCOVERY_CONFIG(c) \
    OMS_CFG_ENUM_ROW("DISCOVERY", "static", "static|etcd", &(c)->mode, \
        "static: addresses from *_ADDRS; etcd: register in and resolve from etcd"), \
    OMS_CFG_STR_ROW("ETCD_ENDPOINTS", "http://127.0.0.1:2379", &(c)->etcd_endpoints, \
        "etcd v3 JSON gateway URLs (comma list) for DISCOVERY=etcd"), \
    OMS_CFG_STR_ROW("ETCD_PREFIX", "/oms", &(c)->etcd_prefix, \
        "registry key prefix (<prefix>/services/<name>/<addr>)"), \
    OMS_CFG_INT_ROW("DISCOVERY_TTL", "5", 2, 300, &(c)->ttl_s, \
        "seconds a dead instance stays registered (etcd lease TTL)"), \
    OMS_CFG_INT_ROW("DISCOVERY_POLL_MS", "30000", 100, 60000, &(c)->poll_ms, \
        "how often clients re-read the registry besides the watch (a safety net)"), \
    OMS_CFG_STR_ROW("ADVERTISE_ADDR", "", &(c)->advertise_addr, \
        "host:port others should dial (default: the gRPC listen address; 0.0.0.0 -> hostname)")
// clang-format on

typedef struct oms_discovery oms_discovery;

/* Starts discovery per cfg (borrowed; must outlive the object). For etcd this starts
 * the background thread; etcd being unreachable is not an error here (the thread keeps
 * trying). *out owned by the caller: oms_discovery_stop. */
int oms_discovery_start(oms_discovery **out, const oms_discovery_config *cfg, oms_error *err);

/* Registers this process as an instance of service at listen_addr (or ADVERTISE_ADDR).
 * No-op for static. A first attempt happens now; on failure it is logged and retried
 * by the thread, so a service still starts while etcd is briefly away. At most one
 * registration per process. */
int oms_discovery_register(oms_discovery *d, const char *service, const char *listen_addr,
                           oms_error *err);

/* A gRPC client for service: static -> static_addrs; etcd -> the live instances now
 * (static_addrs when none are registered yet), kept in step by the thread. *out is owned
 * by the caller (oms_grpc_client_free) but must be freed only after
 * oms_discovery_stop(d). */
int oms_discovery_client(oms_discovery *d, const char *service, const char *static_addrs,
                         oms_grpc_client **out, oms_error *err);

/* Stops following the registry, revokes this instance's lease (its key disappears at
 * once), frees d. Call first when shutting down, so callers stop choosing this
 * instance while it drains. NULL: no-op. */
void oms_discovery_stop(oms_discovery *d);

#endif

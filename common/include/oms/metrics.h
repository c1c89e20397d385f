/* Process-wide Prometheus metrics: counters and gauges with up to 3 labels, and
 * latency histograms. Rendered in the Prometheus text format by oms_metrics_render.
 * Thread-safe. Series are created on first use and live until exit. */
#ifndef OMS_METRICS_H
#define OMS_METRICS_H

#include <stddef.h>

/* labels: NULL or "key=\"value\",key2=\"value2\"" already escaped (use
 * oms_metrics_label to build one safely). */
void oms_metrics_counter_add(const char *name, const char *help, const char *labels, double v);
void oms_metrics_gauge_set(const char *name, const char *help, const char *labels, double v);
void oms_metrics_observe(const char *name, const char *help, const char *labels, double seconds);
/* A gauge computed at render time (outbox backlog, queue depth): fn(ud) called under
 * the metrics lock during oms_metrics_render. */
void oms_metrics_gauge_fn(const char *name, const char *help, const char *labels,
                          double (*fn)(void *ud), void *ud);
/* Appends k="v" (escaped) to buf, comma-separated; returns buf. */
char *oms_metrics_label(char *buf, size_t size, const char *key, const char *value);
/* Returns a heap string (caller frees) with every series, plus process_resident_memory_bytes
 * and process_open_fds. */
char *oms_metrics_render(size_t *len);

#endif

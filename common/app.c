#include "oms/app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/log.h"
#include "oms/util.h"

void oms_app_start(const char *service, const oms_cfg_def *defs, size_t n,
                   const oms_app_common *common, int argc, char **argv)
{
    oms_signals_block();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("oms-%s: configured by environment variables only:\n", service);
            oms_config_print_help(defs, n);
            exit(0);
        }
        fprintf(stderr, "oms-%s: unexpected argument %s (configuration is by environment; "
                        "see --help)\n", service, argv[i]);
        exit(2);
    }
    char err[512];
    if (oms_config_load(defs, n, err, sizeof(err)) != 0) {
        fprintf(stderr, "oms-%s: %s\n", service, err);
        exit(2);
    }
    int level = oms_log_level_parse(common->log_level);
    oms_log_init(service, level < 0 ? OMS_LOG_INFO : (oms_log_level)level,
                 common->log_format && strcmp(common->log_format, "console") == 0);
}

void oms_app_amqp_config(const oms_app_common *common, oms_amqp_config *out)
{
    out->host = common->rabbitmq_host;
    out->port = (int)common->rabbitmq_port;
    out->user = common->rabbitmq_user;
    out->password = common->rabbitmq_password;
    out->vhost = common->rabbitmq_vhost;
}

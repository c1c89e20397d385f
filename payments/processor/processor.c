/* The processor registry: the table PAYMENT_PROCESSOR picks from. */
#include "processor.h"

#include <stdlib.h>
#include <string.h>

#include "oms/util.h"

static const payment_processor *const processors[] = {
    &payments_processor_local,
    &payments_processor_stripe,
};

const payment_processor *payments_processor_find(const char *name)
{
    for (size_t i = 0; name && i < OMS_NELEM(processors); i++)
        if (strcmp(processors[i]->name, name) == 0)
            return processors[i];
    return NULL;
}

void payments_session_free(payments_session *s)
{
    if (!s)
        return;
    free(s->url);
    s->url = NULL;
    s->id[0] = '\0';
}

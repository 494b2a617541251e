/* Stand-in for Motr's conf/ha.h: process and service lifecycle events. */
#ifndef __MOTR_CONF_HA_H__
#define __MOTR_CONF_HA_H__
#include "lib/types.h"

enum m0_conf_ha_process_event {
	M0_CONF_HA_PROCESS_STARTING = 0,
	M0_CONF_HA_PROCESS_STARTED = 1,
	M0_CONF_HA_PROCESS_STOPPING = 2,
	M0_CONF_HA_PROCESS_STOPPED = 3,
	M0_CONF_HA_PROCESS_DTM_RECOVERED = 4,
};

enum m0_conf_ha_process_type {
	M0_CONF_HA_PROCESS_OTHER = 0,
	M0_CONF_HA_PROCESS_KERNEL = 1,
	M0_CONF_HA_PROCESS_M0MKFS = 2,
	M0_CONF_HA_PROCESS_M0D = 3,
};

/* The payload of M0_HA_MSG_EVENT_PROCESS. */
struct m0_conf_ha_process {
	uint64_t chp_event; /* enum m0_conf_ha_process_event */
	uint64_t chp_type;  /* enum m0_conf_ha_process_type */
	uint64_t chp_pid;
};

enum m0_conf_ha_service_event {
	M0_CONF_HA_SERVICE_STARTING = 0,
	M0_CONF_HA_SERVICE_STARTED = 1,
	M0_CONF_HA_SERVICE_STOPPING = 2,
	M0_CONF_HA_SERVICE_STOPPED = 3,
	M0_CONF_HA_SERVICE_FAILED = 4,
};

/* The payload of M0_HA_MSG_EVENT_SERVICE. */
struct m0_conf_ha_service {
	uint64_t chs_event; /* enum m0_conf_ha_service_event */
	uint64_t chs_type;  /* enum m0_conf_service_type */
	uint64_t chs_pid;
};
#endif

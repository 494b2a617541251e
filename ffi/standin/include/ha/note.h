/* Stand-in for Motr's ha/note.h: object states, state notes and the note vector of messages. */
#ifndef __MOTR___HA_NOTE_H__
#define __MOTR___HA_NOTE_H__
#include "fid/fid.h"

enum m0_ha_obj_state {
	M0_NC_UNKNOWN = 0,
	M0_NC_ONLINE = 1,
	M0_NC_FAILED = 2,
	M0_NC_TRANSIENT = 3,
	M0_NC_REPAIR = 4,
	M0_NC_REPAIRED = 5,
	M0_NC_REBALANCE = 6,
	M0_NC_DTM_RECOVERING = 7,
	M0_NC_NR
};

struct m0_ha_note {
	struct m0_fid no_id;
	uint32_t no_state; /* enum m0_ha_obj_state */
};

struct m0_ha_nvec {
	int32_t nv_nr;
	struct m0_ha_note *nv_note;
};

/** Largest number of notes in one message. */
enum m0_ha_state_update_defaults {
	M0_HA_STATE_UPDATE_LIMIT = 1024,
};

/* hmnv_type */
enum {
	M0_HA_NVEC_SET = 0,
	M0_HA_NVEC_GET = 1,
};

struct m0_ha_msg_nvec_array {
	struct m0_ha_note hmna_arr[M0_HA_STATE_UPDATE_LIMIT];
};

/* The payload of M0_HA_MSG_NVEC. */
struct m0_ha_msg_nvec {
	uint64_t hmnv_type; /* M0_HA_NVEC_SET or M0_HA_NVEC_GET */
	uint64_t hmnv_id_of_get;
	uint64_t hmnv_ignore_same_state;
	uint64_t hmnv_nr;
	struct m0_ha_msg_nvec_array hmnv_arr;
};
#endif

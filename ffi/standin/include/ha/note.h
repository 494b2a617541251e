/* Stand-in for Motr's ha/note.h: object states and state notes. */
#ifndef __MOTR_HA_NOTE_H__
#define __MOTR_HA_NOTE_H__
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

/** Largest number of notes in one message. */
enum { M0_HA_STATE_UPDATE_LIMIT = 1024 };

struct m0_ha_note {
	struct m0_fid no_id;
	uint32_t no_state;
};
#endif

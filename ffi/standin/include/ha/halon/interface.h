/* Stand-in for Motr's ha/halon/interface.h: the API hax uses to talk to Motr processes. */
#ifndef __MOTR_HA_HALON_INTERFACE_H__
#define __MOTR_HA_HALON_INTERFACE_H__
#include "fid/fid.h"
#include "ha/link.h"
#include "ha/msg.h"
#include "lib/thread.h"
#include "lib/types.h"

struct m0_halon_interface;

int m0_halon_interface_init(struct m0_halon_interface **hi_out, const char *build_git_rev_id,
			    const char *build_configure_opts, const char *debug_options,
			    const char *node_uuid);
void m0_halon_interface_fini(struct m0_halon_interface *hi);

int m0_halon_interface_start(
	struct m0_halon_interface *hi, const char *local_rpc_endpoint,
	const struct m0_fid *process_fid, const struct m0_fid *ha_service_fid,
	const struct m0_fid *rm_service_fid,
	void (*entrypoint_request_cb)(struct m0_halon_interface *hi,
				      const struct m0_uint128 *req_id,
				      const char *remote_rpc_endpoint,
				      const struct m0_fid *process_fid, const char *git_rev_id,
				      uint64_t pid, bool first_request),
	void (*msg_received_cb)(struct m0_halon_interface *hi, struct m0_ha_link *hl,
				const struct m0_ha_msg *msg, uint64_t tag),
	void (*msg_is_delivered_cb)(struct m0_halon_interface *hi, struct m0_ha_link *hl,
				    uint64_t tag),
	void (*msg_is_not_delivered_cb)(struct m0_halon_interface *hi, struct m0_ha_link *hl,
					uint64_t tag),
	void (*link_connected_cb)(struct m0_halon_interface *hi, const struct m0_uint128 *req_id,
				  struct m0_ha_link *link),
	void (*link_reused_cb)(struct m0_halon_interface *hi, const struct m0_uint128 *req_id,
			       struct m0_ha_link *link),
	void (*link_absent_cb)(struct m0_halon_interface *hi, const struct m0_uint128 *req_id),
	void (*link_is_disconnecting_cb)(struct m0_halon_interface *hi, struct m0_ha_link *hl),
	void (*link_disconnected_cb)(struct m0_halon_interface *hi, struct m0_ha_link *link));

void m0_halon_interface_stop(struct m0_halon_interface *hi);

void m0_halon_interface_entrypoint_reply(struct m0_halon_interface *hi,
					 const struct m0_uint128 *req_id, int rc,
					 uint32_t confd_nr, const struct m0_fid *confd_fid_data,
					 const char **confd_eps_data, uint32_t confd_quorum,
					 const struct m0_fid *rm_fid, const char *rm_eps);

void m0_halon_interface_send(struct m0_halon_interface *hi, struct m0_ha_link *hl,
			     const struct m0_ha_msg *msg, uint64_t *tag);
void m0_halon_interface_delivered(struct m0_halon_interface *hi, struct m0_ha_link *hl,
				  const struct m0_ha_msg *msg);
void m0_halon_interface_disconnect(struct m0_halon_interface *hi, struct m0_ha_link *hl);

/* M0_INTERNAL in Motr: callers define M0_INTERNAL as empty (see lib/types.h). */
M0_INTERNAL int m0_halon_interface_thread_adopt(struct m0_halon_interface *hi,
						struct m0_thread *thread);
M0_INTERNAL void m0_halon_interface_thread_shun(void);
#endif

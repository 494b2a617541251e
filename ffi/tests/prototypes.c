/*
 * prototypes.c: a compile-time check that the stand-in declares Motr's HA interface exactly as
 * Motr does (ha/halon/interface.h, ha/link.h at Motr 27e7f86).
 *
 * Each function is assigned to a function-pointer variable whose type is written out below
 * from Motr's own prototype: a different return type, parameter type or const is an
 * incompatible-pointer error under -Werror. The layout of the message types is checked with
 * static assertions (offsets and sizes of Motr's x86_64 build). The file uses only names that
 * Motr's headers provide, so it also compiles against a real Motr tree, e.g.
 *   cc -DM0_INTERNAL= -DM0_EXTERN=extern -iquote $MOTR_SRC -include config.h ... prototypes.c
 * Running it only prints what was checked.
 */
#include <stddef.h>
#include <stdio.h>

#include "conf/ha.h"
#include "fid/fid.h"
#include "ha/halon/interface.h"
#include "ha/link.h"
#include "ha/msg.h"
#include "ha/note.h"
#include "lib/thread.h"
#include "lib/types.h"
#include "stob/ioq_error.h"

static int (*const p_init)(struct m0_halon_interface **hi_out, const char *build_git_rev_id,
			   const char *build_configure_opts, const char *debug_options,
			   const char *node_uuid) = m0_halon_interface_init;

static void (*const p_fini)(struct m0_halon_interface *hi) = m0_halon_interface_fini;

static int (*const p_start)(
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
	void (*link_is_disconnecting_cb)(struct m0_halon_interface *hi, struct m0_ha_link *link),
	void (*link_disconnected_cb)(struct m0_halon_interface *hi, struct m0_ha_link *link)) =
	m0_halon_interface_start;

static void (*const p_stop)(struct m0_halon_interface *hi) = m0_halon_interface_stop;

static void (*const p_entrypoint_reply)(struct m0_halon_interface *hi,
					const struct m0_uint128 *req_id, int rc,
					uint32_t confd_nr, const struct m0_fid *confd_fid_data,
					const char **confd_eps_data, uint32_t confd_quorum,
					const struct m0_fid *rm_fid, const char *rm_eps) =
	m0_halon_interface_entrypoint_reply;

static void (*const p_send)(struct m0_halon_interface *hi, struct m0_ha_link *hl,
			    const struct m0_ha_msg *msg, uint64_t *tag) = m0_halon_interface_send;

static void (*const p_delivered)(struct m0_halon_interface *hi, struct m0_ha_link *hl,
				 const struct m0_ha_msg *msg) = m0_halon_interface_delivered;

static void (*const p_disconnect)(struct m0_halon_interface *hi, struct m0_ha_link *hl) =
	m0_halon_interface_disconnect;

static int (*const p_thread_adopt)(struct m0_halon_interface *hi, struct m0_thread *thread) =
	m0_halon_interface_thread_adopt;

static void (*const p_thread_shun)(void) = m0_halon_interface_thread_shun;

static void (*const p_rpc_endpoint)(struct m0_ha_link *hl, char *buf, m0_bcount_t buf_len) =
	m0_ha_link_rpc_endpoint;

/* Layouts (x86_64) of the types hax reads and writes. */
_Static_assert(sizeof(struct m0_fid) == 16, "m0_fid");
_Static_assert(sizeof(struct m0_uint128) == 16, "m0_uint128");
_Static_assert(sizeof(struct m0_ha_note) == 24, "m0_ha_note");
_Static_assert(sizeof(struct m0_ha_msg) == 24696, "m0_ha_msg");
_Static_assert(offsetof(struct m0_ha_msg, hm_time) == 48, "hm_time");
_Static_assert(offsetof(struct m0_ha_msg, hm_data) == 64, "hm_data");
_Static_assert(offsetof(struct m0_ha_msg, hm_tag) == 24688, "hm_tag");
_Static_assert(offsetof(struct m0_ha_msg_data, u) == 8, "hed union");
_Static_assert(offsetof(struct m0_ha_msg_nvec, hmnv_arr) == 32, "hmnv_arr");
_Static_assert(sizeof(((struct m0_ha_msg_failure_vec_rep *)0)->mfp_nr) == 4, "mfp_nr");
_Static_assert(offsetof(struct m0_ha_msg_failure_vec_rep, mfp_vec) == 40, "mfp_vec");
_Static_assert(offsetof(struct m0_stob_ioq_error, sie_opcode) == 56, "sie_opcode");
_Static_assert(offsetof(struct m0_stob_ioq_error, sie_rc) == 64, "sie_rc");
_Static_assert(offsetof(struct m0_stob_ioq_error, sie_bshift) == 88, "sie_bshift");
_Static_assert(offsetof(struct m0_ha_msg_rpc, hmr_attempts) == 0, "hmr_attempts first");
_Static_assert(offsetof(struct m0_conf_ha_process, chp_pid) == 16, "chp_pid");
_Static_assert(offsetof(struct m0_conf_ha_service, chs_pid) == 16, "chs_pid");
_Static_assert(offsetof(struct m0_be_io_err, ber_io_opcode) == 5, "ber_io_opcode");
_Static_assert(sizeof(((struct m0_ha_sns_err *)0)->hse_opcode) == 1, "hse_opcode");

int main(void)
{
	const void *fns[] = {
		(const void *)p_init,          (const void *)p_fini,
		(const void *)p_start,         (const void *)p_stop,
		(const void *)p_entrypoint_reply, (const void *)p_send,
		(const void *)p_delivered,     (const void *)p_disconnect,
		(const void *)p_thread_adopt,  (const void *)p_thread_shun,
		(const void *)p_rpc_endpoint,
	};
	size_t n = 0;

	for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
		n += fns[i] != NULL;
	printf("prototypes: %zu functions declared as in Motr; message layouts as in Motr\n", n);
	return n == sizeof fns / sizeof fns[0] ? 0 : 1;
}

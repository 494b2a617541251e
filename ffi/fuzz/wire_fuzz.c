/*
 * wire_fuzz.c: libFuzzer harness for the stand-in's C frame codec (ffi/standin/wire.c).
 *
 * The input is a byte stream as a connection delivers it. Frames are split with
 * wire_frame_peek() and each whole frame is decoded with the decoder its kind selects, as
 * the stand-in (io.c) does (both directions' kinds are tried: the stand-in decodes process frames,
 * the tests decode HA frames). Properties, besides ASan/UBSan finding no memory error:
 *   - a frame that decodes re-encodes to exactly the same bytes (the codec is strict:
 *     no NUL in strings, bounded counts, nothing trailing, so the encoding is canonical);
 *   - wire_frame_peek() never reports a frame longer than the input or outside 5..1 MiB+4.
 * Build and run: ffi/fuzz/Makefile (scripts/fuzz does both).
 */
#include "wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "wire_fuzz: property broken: %s (%s:%d)\n", \
				#cond, __FILE__, __LINE__);                           \
			abort();                                                      \
		}                                                                     \
	} while (0)

static struct m0_ha_msg msg; /* 24 KiB: not on the stack */
static struct wire_ep_req req;

static void same_bytes(struct wire_buf *b, const uint8_t *frame, size_t len)
{
	CHECK(b->len == len);
	CHECK(memcmp(b->data, frame, len) == 0);
}

static void one_frame(const uint8_t *frame, size_t len)
{
	uint8_t kind = frame[WIRE_HDR];
	const uint8_t *body = frame + WIRE_HDR + 1;
	size_t n = len - WIRE_HDR - 1;
	const char *why = NULL;
	struct wire_buf b = { 0 };
	uint64_t tag;
	int rc;

	switch (kind) {
	case WIRE_EP_REQ:
		if (wire_dec_ep_req(body, n, &req, &why) == 0) {
			CHECK(wire_enc_ep_req(&b, &req) == 0);
			same_bytes(&b, frame, len);
		} else {
			CHECK(why != NULL);
		}
		break;
	case WIRE_MSG:
	case WIRE_HA_MSG:
		if (wire_dec_msg(body, n, &tag, &msg, &why) == 0) {
			CHECK(wire_msg_check(&msg, &why) == 0);
			CHECK(wire_enc_msg(&b, kind, tag, &msg) == 0);
			same_bytes(&b, frame, len);
		} else {
			CHECK(why != NULL);
		}
		break;
	case WIRE_ACK:
	case WIRE_HA_ACK:
		if (wire_dec_ack(body, n, &tag, &why) == 0) {
			CHECK(wire_enc_ack(&b, kind, tag) == 0);
			same_bytes(&b, frame, len);
		}
		break;
	case WIRE_DROP:
		if (wire_dec_drop(body, n, &why) == 0) {
			CHECK(wire_enc_drop(&b) == 0);
			same_bytes(&b, frame, len);
		}
		break;
	case WIRE_EP_REP: {
		struct wire_ep_rep r;

		rc = wire_dec_ep_rep(body, n, &r, &why);
		if (rc == 0) {
			CHECK(r.confd_nr <= WIRE_MAX_NR);
			CHECK(wire_enc_ep_rep(&b, r.seq, r.rc, r.link, r.cookie_actual, r.confd_nr,
					      r.confd_fids, (const char *const *)r.confd_eps,
					      r.quorum, &r.rm_fid, r.rm_ep) == 0);
			same_bytes(&b, frame, len);
			/* the patch helpers rewrite in place what they say they do */
			wire_ep_rep_patch(b.data, r.seq + 1, WIRE_LINK_NONE);
			wire_ep_rep_free(&r);
			CHECK(wire_dec_ep_rep(b.data + WIRE_HDR + 1, b.len - WIRE_HDR - 1, &r,
					      &why) == 0);
			CHECK(r.link == WIRE_LINK_NONE);
		}
		wire_ep_rep_free(&r);
		break;
	}
	default:
		break;
	}
	wire_buf_fini(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	int frames = 0;

	while (off < size && frames < 10000) {
		size_t flen = 0;
		const char *why = NULL;
		int rc = wire_frame_peek(data + off, size - off, &flen, &why);

		if (rc < 0) {
			CHECK(rc == -EPROTO && why != NULL);
			break;
		}
		if (rc == 0) {
			CHECK(flen == 0 || flen > size - off);
			break;
		}
		CHECK(flen >= WIRE_HDR + 1 && flen <= WIRE_HDR + (size_t)WIRE_MAX_FRAME);
		CHECK(flen <= size - off);
		one_frame(data + off, flen);
		off += flen;
		frames++;
	}
	return 0;
}

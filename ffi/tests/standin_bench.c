/*
 * standin_bench.c: throughput of the HA-interface stand-in with many connected processes.
 *
 * Like standin_test.c the program is both the HA user and the remote processes (one reader
 * thread answers every HA message with an ACK). It measures:
 *   1. broadcast: one message sent to each of N connected peers, from the first send until
 *      the last msg_is_delivered (best and median of R rounds), and the cost of the sends;
 *   2. per-send cost on a live link with D dead (disconnected) links behind;
 *   3. VmRSS before and after the D connect/disconnect cycles.
 *
 * Usage: make bench [BENCH_ARGS="N R D"]   (defaults 1000 20 10000)
 * Only the public interface is used, so it builds against any version of the stand-in.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <dirent.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "conf/ha.h"
#include "ha/halon/interface.h"
#include "wire.h"

#define NODE_UUID "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

static struct m0_halon_interface *g_hi;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static uint64_t g_delivered;
static uint64_t g_disconnected;
static uint64_t g_last_delivered_ns;
static struct m0_ha_link *g_new_link; /* set by link_connected */
static struct m0_ha_link *g_self;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static pid_t g_main_tid;
static pid_t g_reader_tid;

/* CPU time (ns) of the main thread (the sender), the reader (the peers) and all other threads
 * (the stand-in's I/O and locality threads, which also run the trivial callbacks). */
static void thread_cpu(uint64_t out[3])
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;

	out[0] = out[1] = out[2] = 0;
	while (d != NULL && (e = readdir(d)) != NULL) {
		char path[300];
		unsigned long long ns = 0;
		FILE *f;
		pid_t tid = atoi(e->d_name);

		if (tid <= 0)
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", tid);
		f = fopen(path, "r");
		if (f == NULL)
			continue;
		if (fscanf(f, "%llu", &ns) != 1)
			ns = 0;
		fclose(f);
		out[tid == g_main_tid ? 0 : tid == g_reader_tid ? 1 : 2] += ns;
	}
	if (d != NULL)
		closedir(d);
}

static void die(const char *what)
{
	fprintf(stderr, "bench: %s (%s)\n", what, strerror(errno));
	exit(2);
}

/* ------------------------------------------------------------------ HA side */

static void reply(const struct m0_uint128 *id)
{
	struct m0_fid rm = { 0x7300000000000001ULL, 2 };

	m0_halon_interface_entrypoint_reply(g_hi, id, 0, 0, NULL, NULL, 0, &rm,
					    "inet:tcp:127.0.0.1@1");
}

static void cb_ep(struct m0_halon_interface *hi, const struct m0_uint128 *req_id, const char *ep,
		  const struct m0_fid *proc, const char *git, uint64_t pid, bool first)
{
	(void)hi, (void)ep, (void)proc, (void)git, (void)pid, (void)first;
	reply(req_id);
}

static void cb_recv(struct m0_halon_interface *hi, struct m0_ha_link *hl,
		    const struct m0_ha_msg *msg, uint64_t tag)
{
	(void)tag;
	m0_halon_interface_delivered(hi, hl, msg);
}

static void cb_deliv(struct m0_halon_interface *hi, struct m0_ha_link *hl, uint64_t tag)
{
	uint64_t t = now_ns();

	(void)hi, (void)hl, (void)tag;
	pthread_mutex_lock(&g_lock);
	g_delivered++;
	g_last_delivered_ns = t;
	pthread_cond_broadcast(&g_cv);
	pthread_mutex_unlock(&g_lock);
}

static void cb_notdeliv(struct m0_halon_interface *hi, struct m0_ha_link *hl, uint64_t tag)
{
	(void)hi, (void)hl, (void)tag;
}

static void cb_conn(struct m0_halon_interface *hi, const struct m0_uint128 *req_id,
		    struct m0_ha_link *hl)
{
	(void)hi, (void)req_id;
	pthread_mutex_lock(&g_lock);
	if (g_self == NULL)
		g_self = hl;
	else
		g_new_link = hl;
	pthread_cond_broadcast(&g_cv);
	pthread_mutex_unlock(&g_lock);
}

static void cb_reused(struct m0_halon_interface *hi, const struct m0_uint128 *req_id,
		      struct m0_ha_link *hl)
{
	(void)hi, (void)req_id, (void)hl;
}

static void cb_absent(struct m0_halon_interface *hi, const struct m0_uint128 *req_id)
{
	(void)hi, (void)req_id;
}

static void cb_discing(struct m0_halon_interface *hi, struct m0_ha_link *hl)
{
	m0_halon_interface_disconnect(hi, hl);
}

static void cb_disc(struct m0_halon_interface *hi, struct m0_ha_link *hl)
{
	(void)hi, (void)hl;
	pthread_mutex_lock(&g_lock);
	g_disconnected++;
	pthread_cond_broadcast(&g_cv);
	pthread_mutex_unlock(&g_lock);
}

static void wait_counter(uint64_t *ctr, uint64_t want)
{
	pthread_mutex_lock(&g_lock);
	while (*ctr < want)
		pthread_cond_wait(&g_cv, &g_lock);
	pthread_mutex_unlock(&g_lock);
}

static uint64_t counter(uint64_t *ctr)
{
	uint64_t v;

	pthread_mutex_lock(&g_lock);
	v = *ctr;
	pthread_mutex_unlock(&g_lock);
	return v;
}

/* ------------------------------------------------------------------ process side */

struct peer {
	int fd;
	uint8_t buf[1 << 16];
	size_t len;
	struct m0_ha_link *hl;
};

static int g_ep = -1; /* the reader thread's epoll */

static void put(int fd, struct wire_buf *b)
{
	size_t off = 0;

	while (off < b->len) {
		ssize_t k = send(fd, b->data + off, b->len - off, MSG_NOSIGNAL);

		if (k <= 0) {
			if (k < 0 && errno == EINTR)
				continue;
			break;
		}
		off += (size_t)k;
	}
	wire_buf_fini(b);
}

/* Connects a process, waits for its link (the reader thread takes the socket over). */
static struct peer *peer_connect(int port, const struct m0_fid *proc, int idx)
{
	struct peer *p = calloc(1, sizeof *p);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct wire_ep_req *r = calloc(1, sizeof *r);
	struct wire_buf b = { 0 };
	struct epoll_event ev = { .events = EPOLLIN };

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->fd < 0 || connect(p->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
		die("connect");
	r->seq = 1;
	r->first_request = true;
	r->pid = (uint64_t)idx;
	r->process = *proc;
	snprintf(r->endpoint, sizeof r->endpoint, "inet:tcp:127.0.0.1@%d", 30000 + idx % 30000);
	snprintf(r->git_rev, sizeof r->git_rev, "bench");
	pthread_mutex_lock(&g_lock);
	g_new_link = NULL;
	pthread_mutex_unlock(&g_lock);
	if (wire_enc_ep_req(&b, r) != 0)
		die("encode");
	free(r);
	put(p->fd, &b);
	pthread_mutex_lock(&g_lock);
	while (g_new_link == NULL)
		pthread_cond_wait(&g_cv, &g_lock);
	p->hl = g_new_link;
	pthread_mutex_unlock(&g_lock);
	ev.data.ptr = p;
	if (epoll_ctl(g_ep, EPOLL_CTL_ADD, p->fd, &ev) != 0)
		die("epoll_ctl");
	return p;
}

static void peer_free(struct peer *p)
{
	epoll_ctl(g_ep, EPOLL_CTL_DEL, p->fd, NULL);
	close(p->fd);
	free(p);
}

/* Reader thread: ACKs every HA message; skips EP_REP, DROP. */
static void *reader_main(void *arg)
{
	struct epoll_event evs[256];
	uint64_t tag;
	const char *why;

	(void)arg;
	__atomic_store_n(&g_reader_tid, (pid_t)syscall(SYS_gettid), __ATOMIC_SEQ_CST);
	for (;;) {
		int n = epoll_wait(g_ep, evs, 256, -1);

		for (int i = 0; i < n; i++) {
			struct peer *p = evs[i].data.ptr;
			ssize_t k;
			size_t off = 0;
			struct wire_buf acks = { 0 };

			if (p == NULL)
				return NULL;
			k = recv(p->fd, p->buf + p->len, sizeof p->buf - p->len, MSG_DONTWAIT);
			if (k <= 0) {
				if (k == 0)
					epoll_ctl(g_ep, EPOLL_CTL_DEL, p->fd, NULL);
				continue;
			}
			p->len += (size_t)k;
			for (;;) {
				size_t flen;

				if (wire_frame_peek(p->buf + off, p->len - off, &flen, &why) != 1)
					break;
				if (p->buf[off + WIRE_HDR] == WIRE_HA_MSG) {
					/* the tag is the first body field */
					memcpy(&tag, p->buf + off + WIRE_HDR + 1, 8);
					wire_enc_ack(&acks, WIRE_ACK, tag);
				}
				off += flen;
			}
			memmove(p->buf, p->buf + off, p->len - off);
			p->len -= off;
			if (acks.len > 0)
				put(p->fd, &acks);
			wire_buf_fini(&acks);
		}
	}
}

/* ------------------------------------------------------------------ helpers */

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;

	while (f != NULL && fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, "VmRSS:", 6) == 0)
			kib = atol(line + 6);
	}
	if (f != NULL)
		fclose(f);
	return kib;
}

static struct m0_ha_msg g_nvec; /* big: static */

/* One NVEC SET on the self link with a note per fid. */
static void self_notes(const struct m0_fid *fids, uint32_t nr, uint32_t state)
{
	uint64_t tag;

	memset(&g_nvec, 0, sizeof g_nvec);
	g_nvec.hm_data.hed_type = M0_HA_MSG_NVEC;
	g_nvec.hm_data.u.hed_nvec.hmnv_type = M0_HA_NVEC_SET;
	g_nvec.hm_data.u.hed_nvec.hmnv_nr = nr;
	for (uint32_t i = 0; i < nr; i++) {
		g_nvec.hm_data.u.hed_nvec.hmnv_arr.hmna_arr[i].no_id = fids[i];
		g_nvec.hm_data.u.hed_nvec.hmnv_arr.hmna_arr[i].no_state = state;
	}
	m0_halon_interface_send(g_hi, g_self, &g_nvec, &tag);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int port;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
		die("free_port");
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

int main(int argc, char **argv)
{
	int npeers = argc > 1 ? atoi(argv[1]) : 1000;
	int rounds = argc > 2 ? atoi(argv[2]) : 20;
	int ndead = argc > 3 ? atoi(argv[3]) : 10000;
	int port = free_port();
	char ep[64];
	struct m0_fid proc = { 0x7200000000000001ULL, 1 };
	struct m0_fid ha = { 0x7300000000000001ULL, 1 };
	struct m0_fid rm = { 0x7300000000000001ULL, 2 };
	struct peer **peers = calloc((size_t)npeers, sizeof *peers);
	uint64_t *lat = calloc((size_t)rounds, sizeof *lat);
	uint64_t *sendc = calloc((size_t)rounds, sizeof *sendc);
	uint64_t *cpu = calloc((size_t)rounds, sizeof *cpu);
	uint64_t *cpu_main = calloc((size_t)rounds, sizeof *cpu);
	uint64_t *cpu_standin = calloc((size_t)rounds, sizeof *cpu);
	struct m0_ha_msg *m = calloc(1, sizeof *m);
	struct rlimit rl;
	pthread_t reader;
	int wake[2];
	struct epoll_event wev = { .events = EPOLLIN, .data.ptr = NULL };

	signal(SIGPIPE, SIG_IGN);
	g_main_tid = (pid_t)syscall(SYS_gettid);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	g_ep = epoll_create1(EPOLL_CLOEXEC);
	if (g_ep < 0 || pipe(wake) != 0 || epoll_ctl(g_ep, EPOLL_CTL_ADD, wake[0], &wev) != 0)
		die("epoll");
	pthread_create(&reader, NULL, reader_main, NULL);
	snprintf(ep, sizeof ep, "inet:tcp:127.0.0.1@%d", port);
	if (m0_halon_interface_init(&g_hi, "hax-standin", "", "", NODE_UUID) != 0 ||
	    m0_halon_interface_start(g_hi, ep, &proc, &ha, &rm, cb_ep, cb_recv, cb_deliv,
				     cb_notdeliv, cb_conn, cb_reused, cb_absent, cb_discing,
				     cb_disc) != 0)
		die("start");
	/* the 6 own start events are delivered by cb_recv */

	/* 1. broadcast to npeers */
	for (int i = 0; i < npeers; i++) {
		struct m0_fid f = { 0x7200000000000100ULL, (uint64_t)i + 1 };

		peers[i] = peer_connect(port, &f, i);
	}
	memset(m, 0, sizeof *m);
	m->hm_data.hed_type = M0_HA_MSG_EVENT_RPC;
	for (int r = 0; r < rounds; r++) {
		uint64_t base = counter(&g_delivered);
		uint64_t c0 = cpu_ns();
		uint64_t t0 = now_ns();
		uint64_t t1;
		uint64_t th0[3], th1[3];

		thread_cpu(th0);

		for (int i = 0; i < npeers; i++) {
			uint64_t tag;

			m0_halon_interface_send(g_hi, peers[i]->hl, m, &tag);
		}
		t1 = now_ns();
		wait_counter(&g_delivered, base + (uint64_t)npeers);
		pthread_mutex_lock(&g_lock);
		lat[r] = g_last_delivered_ns - t0;
		pthread_mutex_unlock(&g_lock);
		sendc[r] = t1 - t0;
		cpu[r] = cpu_ns() - c0;
		thread_cpu(th1);
		cpu_main[r] = th1[0] - th0[0];
		cpu_standin[r] = th1[2] - th0[2];
	}
	qsort(lat, (size_t)rounds, sizeof *lat, cmp_u64);
	qsort(sendc, (size_t)rounds, sizeof *sendc, cmp_u64);
	qsort(cpu, (size_t)rounds, sizeof *cpu, cmp_u64);
	qsort(cpu_main, (size_t)rounds, sizeof *cpu, cmp_u64);
	qsort(cpu_standin, (size_t)rounds, sizeof *cpu, cmp_u64);
	printf("broadcast to %d peers (%d rounds): first send -> last delivered: best %.2f ms, "
	       "median %.2f ms; the %d sends: median %.2f ms (%.2f us/send)\n",
	       npeers, rounds, lat[0] / 1e6, lat[rounds / 2] / 1e6, npeers,
	       sendc[rounds / 2] / 1e6, sendc[rounds / 2] / 1e3 / npeers);
	printf("  CPU per broadcast (medians): whole process %.2f ms; sending thread %.2f ms; "
	       "stand-in threads (I/O + localities) %.2f ms\n", cpu[rounds / 2] / 1e6,
	       cpu_main[rounds / 2] / 1e6, cpu_standin[rounds / 2] / 1e6);
	/* ping-pong on one link while the other npeers - 1 are connected and idle */
	{
		enum { PINGS = 3000 };
		uint64_t th0[3], th1[3];
		uint64_t t0 = now_ns();

		thread_cpu(th0);
		for (int i = 0; i < PINGS; i++) {
			uint64_t base = counter(&g_delivered);
			struct peer *p = peers[i % 2 == 0 ? 0 : npeers - 1];
			uint64_t tag;

			m0_halon_interface_send(g_hi, p->hl, m, &tag);
			wait_counter(&g_delivered, base + 1);
		}
		thread_cpu(th1);
		printf("one message at a time (send, wait for delivered) with %d peers connected: "
		       "%.1f us/message; CPU per message: sending thread %.1f us, stand-in threads "
		       "%.1f us\n",
		       npeers, (now_ns() - t0) / 1e3 / PINGS, (th1[0] - th0[0]) / 1e3 / PINGS,
		       (th1[2] - th0[2]) / 1e3 / PINGS);
	}
	fflush(stdout);
	/* keep one peer, drop the others (FAILED notes; first notes are recorded only) */
	{
		struct m0_fid *fids = calloc((size_t)npeers, sizeof *fids);
		uint64_t base = counter(&g_disconnected);
		int nr = 0;

		for (int i = 1; i < npeers; i++)
			fids[nr++] = (struct m0_fid){ 0x7200000000000100ULL, (uint64_t)i + 1 };
		for (int i = 0; i < nr; i += 1024) {
			uint32_t k = (uint32_t)(nr - i < 1024 ? nr - i : 1024);

			self_notes(fids + i, k, M0_NC_ONLINE);
			self_notes(fids + i, k, M0_NC_FAILED);
		}
		wait_counter(&g_disconnected, base + (uint64_t)nr);
		for (int i = 1; i < npeers; i++)
			peer_free(peers[i]);
		free(fids);
	}

	/* 2. ndead connect/disconnect cycles, in batches of 100 (reusing 100 fids) */
	{
		enum { BATCH = 100 };
		struct m0_fid fids[BATCH];
		struct peer *batch[BATCH];
		long rss0 = rss_kib();
		uint64_t t0 = now_ns();

		for (int i = 0; i < BATCH; i++)
			fids[i] = (struct m0_fid){ 0x7200000000000200ULL, (uint64_t)i + 1 };
		self_notes(fids, BATCH, M0_NC_ONLINE);
		for (int done = 0; done < ndead; done += BATCH) {
			uint64_t base = counter(&g_disconnected);

			for (int i = 0; i < BATCH; i++)
				batch[i] = peer_connect(port, &fids[i], i);
			self_notes(fids, BATCH, M0_NC_FAILED);
			wait_counter(&g_disconnected, base + BATCH);
			for (int i = 0; i < BATCH; i++)
				peer_free(batch[i]);
			if (done == 0 || (done + BATCH) % 2000 == 0)
				printf("  %6d dead links: VmRSS %ld KiB\n", done + BATCH,
				       rss_kib());
		}
		printf("%d connect/disconnect cycles in %.2f s; VmRSS %ld KiB -> %ld KiB\n", ndead,
		       (now_ns() - t0) / 1e9, rss0, rss_kib());
	}
	/* per-send cost on a link made after the dead ones (the newest link: the worst case for a
	 * list walked from the oldest) */
	{
		enum { SENDS = 20000 };
		struct m0_fid f = { 0x7200000000000300ULL, 1 };
		struct peer *fresh = peer_connect(port, &f, 0);
		uint64_t base = counter(&g_delivered);
		uint64_t t0 = now_ns();
		uint64_t in_send = 0;

		for (int i = 0; i < SENDS; i++) {
			uint64_t tag;
			uint64_t s = now_ns();

			m0_halon_interface_send(g_hi, fresh->hl, m, &tag);
			in_send += now_ns() - s;
			if (i % 1000 == 999) /* do not run far ahead of the reader */
				wait_counter(&g_delivered, base + (uint64_t)i - 500);
		}
		wait_counter(&g_delivered, base + SENDS);
		printf("%d sends on one live link with %d dead links behind: %.2f us/send "
		       "(until all delivered: %.2f us/msg)\n",
		       SENDS, ndead, in_send / 1e3 / SENDS, (now_ns() - t0) / 1e3 / SENDS);
		m0_halon_interface_stop(g_hi);
		peer_free(fresh);
	}
	fflush(stdout);
	m0_halon_interface_fini(g_hi);
	if (write(wake[1], "q", 1) != 1)
		die("write");
	pthread_join(reader, NULL);
	peer_free(peers[0]);
	free(peers);
	free(lat);
	free(sendc);
	free(cpu);
	free(cpu_main);
	free(cpu_standin);
	free(m);
	return 0;
}

/*
 * A library that behaves like Debian 12's libinfinipath (pulled in by libfabric, which
 * libmotr loads): at load time its constructor installs handlers for SIGSEGV, SIGBUS, SIGILL,
 * SIGABRT, SIGINT and SIGTERM that call exit(1). Tests preload it into hax (LD_PRELOAD) to
 * prove that SIGTERM still ends in hax's own bounded shutdown.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void hostile_handler(int sig)
{
	static const char msg[] = "hostile_signals: handler called: exit(1)\n";

	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
		/* nothing to do */
	}
	exit(1);
}

__attribute__((constructor)) static void hostile_install(void)
{
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGABRT, SIGINT, SIGTERM };
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = hostile_handler;
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaction(sigs[i], &sa, NULL);
}

#include "echocli.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#define DEFAULT_PORT 9876

static void usage(const char *prog, const char *msg)
{
	fprintf(stderr, "%s: %s\nusage: %s [-addr HOST] [port]  (port 0-65535, 0 picks a free port)\n",
		prog, msg, prog);
	exit(2);
}

static long parse_port(const char *prog, const char *arg)
{
	char *end;
	long port;

	errno = 0;
	port = strtol(arg, &end, 10);
	if (*arg == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535) {
		fprintf(stderr, "%s: invalid port \"%s\": want a number in the range 0-65535\n", prog, arg);
		exit(2);
	}
	return port;
}

/* Accepts -addr HOST, -addr=HOST and the same with two dashes, like Go's flag
 * package; one optional positional port. */
static void parse_args(const char *prog, int argc, char **argv, const char **host, long *port)
{
	int have_port = 0;
	int i;

	*host = "127.0.0.1";
	*port = DEFAULT_PORT;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] == '-' && a[1] != '\0') {
			const char *name = a + 1;
			if (*name == '-')
				name++;
			if (strcmp(name, "addr") == 0) {
				if (i + 1 >= argc)
					usage(prog, "flag needs an argument: -addr");
				*host = argv[++i];
			} else if (strncmp(name, "addr=", 5) == 0) {
				*host = name + 5;
			} else if (strcmp(name, "h") == 0 || strcmp(name, "help") == 0) {
				usage(prog, "help requested");
			} else {
				fprintf(stderr, "%s: flag provided but not defined: %s\n", prog, a);
				usage(prog, "unknown flag");
			}
			continue;
		}
		if (have_port)
			usage(prog, "too many arguments: want at most one port");
		*port = parse_port(prog, a);
		have_port = 1;
	}
}

/* 1000-connection workloads need more descriptors than some shells allow. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct echo_server *s = arg;

	(void)sig;
	(void)what;
	event_base_loopbreak(s->base);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct echo_server *s = arg;
	int err = EVUTIL_SOCKET_ERROR();

	(void)l;
	fprintf(stderr, "echo: accept: %s\n", evutil_socket_error_to_string(err));
	s->status = 1;
	event_base_loopexit(s->base, NULL);
}

static void print_listening(evutil_socket_t fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	char host[NI_MAXHOST], port[NI_MAXSERV];

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
	    getnameinfo((struct sockaddr *)&ss, len, host, sizeof host, port, sizeof port,
			NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		perror("echo: getsockname");
		exit(1);
	}
	if (ss.ss_family == AF_INET6)
		fprintf(stderr, "echo: listening on [%s]:%s\n", host, port);
	else
		fprintf(stderr, "echo: listening on %s:%s\n", host, port);
	fflush(stderr);
}

void echo_server_start(struct echo_server *s, const char *prog, int argc, char **argv,
		       evconnlistener_cb cb, void *arg)
{
	struct addrinfo hints, *ai;
	const char *host;
	long port;
	char portstr[8];
	int rc;

	parse_args(prog, argc, argv, &host, &port);
	raise_nofile();
	signal(SIGPIPE, SIG_IGN);

	memset(s, 0, sizeof *s);
	s->base = event_base_new();
	if (s->base == NULL) {
		fprintf(stderr, "%s: event_base_new failed\n", prog);
		exit(1);
	}

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(portstr, sizeof portstr, "%ld", port);
	rc = getaddrinfo(host, portstr, &hints, &ai);
	if (rc != 0) {
		fprintf(stderr, "%s: address %s: %s\n", prog, host, gai_strerror(rc));
		exit(1);
	}
	s->listener = evconnlistener_new_bind(s->base, cb, arg,
					      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1,
					      ai->ai_addr, (int)ai->ai_addrlen);
	freeaddrinfo(ai);
	if (s->listener == NULL) {
		fprintf(stderr, "%s: listen %s:%ld: %s\n", prog, host, port,
			evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		exit(1);
	}
	evconnlistener_set_error_cb(s->listener, accept_error_cb);

	s->sigint = evsignal_new(s->base, SIGINT, signal_cb, s);
	s->sigterm = evsignal_new(s->base, SIGTERM, signal_cb, s);
	if (s->sigint == NULL || s->sigterm == NULL || evsignal_add(s->sigint, NULL) != 0 ||
	    evsignal_add(s->sigterm, NULL) != 0) {
		fprintf(stderr, "%s: cannot watch SIGINT/SIGTERM\n", prog);
		exit(1);
	}
	print_listening(evconnlistener_get_fd(s->listener));
}

int echo_server_run(struct echo_server *s)
{
	if (event_base_dispatch(s->base) < 0)
		s->status = 1;
	evconnlistener_free(s->listener);
	event_free(s->sigint);
	event_free(s->sigterm);
	/* Connections still open are closed with the process; their events go
	 * with the base. */
	event_base_free(s->base);
	return s->status;
}

void echo_set_nodelay(evutil_socket_t fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void bev_event_cb(struct bufferevent *bev, short events, void *ctx)
{
	(void)ctx;
	if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		bufferevent_free(bev);
}

void echo_accept_bufferevent(struct evconnlistener *listener, evutil_socket_t fd,
			     struct sockaddr *address, int socklen, void *arg)
{
	const struct echo_bev_read *read = arg;
	struct event_base *base = evconnlistener_get_base(listener);
	struct bufferevent *bev;

	(void)address;
	(void)socklen;
	echo_set_nodelay(fd);
	bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		evutil_closesocket(fd);
		return;
	}
	bufferevent_setcb(bev, read->cb, NULL, bev_event_cb, NULL);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

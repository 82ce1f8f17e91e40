/* The command line, listener and signal handling shared by the C reference
 * echo servers, so that they differ only in how a connection is served.
 * Same CLI as cmd/echo: [-addr HOST] [port], one "echo: listening on
 * HOST:PORT" line on stderr, exit 0 on SIGINT/SIGTERM. */
#ifndef BENCH_ECHOCLI_H
#define BENCH_ECHOCLI_H

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

struct echo_server {
	struct event_base *base;
	struct evconnlistener *listener;
	struct event *sigint;
	struct event *sigterm;
	int status; /* exit status once the loop ends */
};

/* Parses argv, creates the base, binds the listener with cb and prints the
 * listening line. Exits with status 2 on a usage error and 1 on any other
 * failure, as cmd/echo does. */
void echo_server_start(struct echo_server *s, const char *prog, int argc,
		       char **argv, evconnlistener_cb cb, void *arg);

/* Runs the loop until a signal or a fatal accept error, frees the listener
 * and the base, and returns the exit status. */
int echo_server_run(struct echo_server *s);

/* Sets TCP_NODELAY; the reference servers answer small messages at once. */
void echo_set_nodelay(evutil_socket_t fd);

/* The libevent book's accept callback, for echo_server_start with arg the
 * read callback (a struct echo_bev_read *): a buffer event on the socket
 * (TCP_NODELAY, BEV_OPT_CLOSE_ON_FREE), freed on EOF or an error, reading
 * and writing enabled. */
struct echo_bev_read {
	void (*cb)(struct bufferevent *bev, void *ctx);
};
void echo_accept_bufferevent(struct evconnlistener *listener, evutil_socket_t fd,
			     struct sockaddr *address, int socklen, void *arg);

#endif

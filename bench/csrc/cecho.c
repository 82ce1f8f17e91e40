/* cecho: the echo server of the libevent book ("A simple ... echo server"
 * built on evconnlistener and bufferevent), with TCP_NODELAY. It is the C
 * reference for `cmd/echo -engine bufferevent`. Its accept callback, the
 * book's, is echocli's echo_accept_bufferevent, shared with ckv. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "echocli.h"

static void echo_read_cb(struct bufferevent *bev, void *ctx)
{
	(void)ctx;
	evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

static const struct echo_bev_read serve = {echo_read_cb};

int main(int argc, char **argv)
{
	struct echo_server s;

	echo_server_start(&s, "cecho", argc, argv, echo_accept_bufferevent, (void *)&serve);
	return echo_server_run(&s);
}

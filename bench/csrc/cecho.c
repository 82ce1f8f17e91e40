/* cecho: the echo server of the libevent book ("A simple ... echo server"
 * built on evconnlistener and bufferevent), with TCP_NODELAY. It is the C
 * reference for `cmd/echo -engine bufferevent`. */
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

static void echo_event_cb(struct bufferevent *bev, short events, void *ctx)
{
	(void)ctx;
	if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		bufferevent_free(bev);
}

static void accept_conn_cb(struct evconnlistener *listener, evutil_socket_t fd,
			   struct sockaddr *address, int socklen, void *ctx)
{
	struct event_base *base = evconnlistener_get_base(listener);
	struct bufferevent *bev;

	(void)address;
	(void)socklen;
	(void)ctx;
	echo_set_nodelay(fd);
	bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		evutil_closesocket(fd);
		return;
	}
	bufferevent_setcb(bev, echo_read_cb, NULL, echo_event_cb, NULL);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

int main(int argc, char **argv)
{
	struct echo_server s;

	echo_server_start(&s, "cecho", argc, argv, accept_conn_cb, NULL);
	return echo_server_run(&s);
}

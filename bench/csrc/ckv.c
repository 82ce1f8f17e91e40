/* ckv: cmd/kv's key-value protocol in C, written the libevent book's way: a
 * bufferevent per connection whose read callback takes each whole command
 * with evbuffer_readln and answers it with bufferevent_write. The C
 * reference for cmd/kv (same commands, same replies, same limits; see
 * cmd/kv's documentation). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "echocli.h"

#define MAX_LINE (64 * 1024)
#define NBUCKETS 4096

struct entry {
	struct entry *next;
	char *key, *val;
	size_t klen, vlen, vcap;
};

static struct entry *table[NBUCKETS];

static struct entry **slot(const char *key, size_t klen)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	struct entry **e;
	size_t i;

	for (i = 0; i < klen; i++)
		h = (h ^ (unsigned char)key[i]) * 16777619u;
	for (e = &table[h % NBUCKETS]; *e; e = &(*e)->next)
		if ((*e)->klen == klen && memcmp((*e)->key, key, klen) == 0)
			break;
	return e; /* the entry, or where it would go */
}

static int set(const char *key, size_t klen, const char *val, size_t vlen)
{
	struct entry **s = slot(key, klen), *e = *s;

	if (!e) {
		if (!(e = calloc(1, sizeof *e)) || !(e->key = malloc(klen))) {
			free(e);
			return -1;
		}
		memcpy(e->key, key, klen);
		e->klen = klen;
		*s = e;
	}
	if (vlen > e->vcap) {
		char *v = realloc(e->val, vlen);
		if (!v)
			return -1;
		e->val = v;
		e->vcap = vlen;
	}
	memcpy(e->val, val, vlen);
	e->vlen = vlen;
	return 0;
}

static int del(const char *key, size_t klen)
{
	struct entry **s = slot(key, klen), *e = *s;

	if (!e)
		return 0;
	*s = e->next;
	free(e->key);
	free(e->val);
	free(e);
	return 1;
}

static void reply(struct bufferevent *bev, const char *s)
{
	bufferevent_write(bev, s, strlen(s));
}

static void exec(struct bufferevent *bev, char *line, size_t n)
{
	char *args = memchr(line, ' ', n), *val;
	size_t cmdlen = args ? (size_t)(args - line) : n, klen = 0, vlen = 0;
	char *key = NULL;

	if (args) {
		key = args + 1;
		klen = n - cmdlen - 1;
		val = memchr(key, ' ', klen);
		if (val) {
			vlen = klen - (size_t)(val - key) - 1;
			klen = (size_t)(val - key);
			val++;
		}
	} else {
		val = NULL;
	}
	if (cmdlen == 4 && memcmp(line, "PING", 4) == 0 && !args) {
		reply(bev, "+PONG\r\n");
	} else if (cmdlen == 3 && memcmp(line, "GET", 3) == 0 && klen > 0 && !val) {
		struct entry *e = *slot(key, klen);
		char head[32];
		if (!e) {
			reply(bev, "$-1\r\n");
			return;
		}
		snprintf(head, sizeof head, "$%zu\r\n", e->vlen);
		reply(bev, head);
		bufferevent_write(bev, e->val, e->vlen);
		reply(bev, "\r\n");
	} else if (cmdlen == 3 && memcmp(line, "SET", 3) == 0 && klen > 0 && val) {
		reply(bev, set(key, klen, val, vlen) == 0 ? "+OK\r\n" : "-ERR out of memory\r\n");
	} else if (cmdlen == 3 && memcmp(line, "DEL", 3) == 0 && klen > 0 && !val) {
		reply(bev, del(key, klen) ? ":1\r\n" : ":0\r\n");
	} else {
		reply(bev, "-ERR unknown command or wrong number of arguments\r\n");
	}
}

static void close_when_flushed(struct bufferevent *bev, void *ctx)
{
	(void)ctx;
	bufferevent_free(bev);
}

static void kv_read_cb(struct bufferevent *bev, void *ctx)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n;
	char *line;
	int served = 0;

	(void)ctx;
	while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) != NULL) {
		exec(bev, line, n);
		free(line);
		served = 1;
	}
	if (!served && evbuffer_get_length(in) > MAX_LINE) {
		reply(bev, "-ERR line too long\r\n");
		bufferevent_disable(bev, EV_READ);
		bufferevent_setcb(bev, NULL, close_when_flushed, NULL, NULL);
	}
}

static const struct echo_bev_read serve = {kv_read_cb};

int main(int argc, char **argv)
{
	struct echo_server s;

	echo_server_start(&s, "ckv", argc, argv, echo_accept_bufferevent, (void *)&serve);
	return echo_server_run(&s);
}

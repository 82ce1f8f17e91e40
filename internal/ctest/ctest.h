/* C code standing in for a C library that shares an event_base with Go:
 * its own timer and its own raw event, registered directly with libevent.
 * Used by tests only. */
#ifndef EVLISTENER_CTEST_H
#define EVLISTENER_CTEST_H

#include <stdint.h>
#include <event2/event.h>

struct event_base *ctest_base_new(void);
struct event_base *ctest_base_new_nolock(void);
void ctest_base_free(struct event_base *base);
int ctest_base_num_events(struct event_base *base);
int ctest_run_timer(struct event_base *base);
uint64_t ctest_thread_self(void);
int ctest_conn_setup(struct event_base *base, int fd, int n);
int ctest_conn_cycle(struct event_base *base, int fd, int n, int bev);

struct ctest_event;
struct ctest_event *ctest_timer_new(struct event_base *base, long usec, int times);
struct ctest_event *ctest_reader_new(struct event_base *base, int want);
int ctest_reader_peer(struct ctest_event *r);
int ctest_event_count(struct ctest_event *e);
uint64_t ctest_event_thread(struct ctest_event *e);
void ctest_event_free(struct ctest_event *e);

int ctest_listener_has_lock(void *lev);

void ctest_log_capture(int on);
int ctest_log_warnings(const char **last);

#endif

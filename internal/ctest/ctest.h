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

struct ctest_timer;
struct ctest_timer *ctest_timer_new(struct event_base *base, long usec, int times);
int ctest_timer_fired(struct ctest_timer *t);
uint64_t ctest_timer_thread(struct ctest_timer *t);
void ctest_timer_free(struct ctest_timer *t);

struct ctest_reader;
struct ctest_reader *ctest_reader_new(struct event_base *base, int want);
int ctest_reader_peer(struct ctest_reader *r);
int ctest_reader_got(struct ctest_reader *r);
uint64_t ctest_reader_thread(struct ctest_reader *r);
void ctest_reader_free(struct ctest_reader *r);

void ctest_log_capture(int on);
int ctest_log_warnings(const char **last);

#endif

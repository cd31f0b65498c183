// Linux interfaces the Glibc module leaves out: epoll, eventfd, splice, pipe sizes, setns, malloc_trim.
#ifndef FERRY_CLINUX_SHIM_H
#define FERRY_CLINUX_SHIM_H
#include <malloc.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FERRY_SPLICE_F_MOVE 1
#define FERRY_SPLICE_F_NONBLOCK 2
#define FERRY_F_SETPIPE_SZ 1031

/// splice(2) without offsets: moves up to `length` bytes between a socket and a pipe.
static inline long ferry_splice(int from, int to, unsigned long length) {
    return syscall(SYS_splice, from, (void *)0, to, (void *)0, length, FERRY_SPLICE_F_MOVE | FERRY_SPLICE_F_NONBLOCK);
}

/// epoll_event is packed on x86-64; these read and build it without Swift guessing its layout.
static inline unsigned long long ferry_epoll_data(const struct epoll_event *event) { return event->data.u64; }
static inline unsigned int ferry_epoll_events(const struct epoll_event *event) { return event->events; }
static inline int ferry_epoll_ctl(int epoll, int op, int fd, unsigned int events, unsigned long long data) {
    struct epoll_event event;
    event.events = events;
    event.data.u64 = data;
    return epoll_ctl(epoll, op, fd, &event);
}

/// pipe2(2) with O_NONBLOCK | O_CLOEXEC.
static inline int ferry_pipe2(int fds[2]) { return (int)syscall(SYS_pipe2, fds, 04000 | 02000000); }

/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC.
static inline int ferry_accept4(int fd, void *address, unsigned int *length) {
    return (int)syscall(SYS_accept4, fd, address, length, 04000 | 02000000);
}

/// setns(2) into a network namespace (CLONE_NEWNET): the calling thread only.
static inline int ferry_setns_net(int fd) { return (int)syscall(SYS_setns, fd, 0x40000000); }
#endif

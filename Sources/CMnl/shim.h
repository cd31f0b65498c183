// libmnl, plus the few macros Swift cannot import, as inline functions.
#ifndef FERRY_CMNL_SHIM_H
#define FERRY_CMNL_SHIM_H
#include <netinet/in.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <libmnl/libmnl.h>

static inline unsigned long ferry_mnl_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }
static inline int ferry_nlmsg_ok(const struct nlmsghdr *header, int length) { return NLMSG_OK(header, length); }
static inline struct nlmsghdr *ferry_nlmsg_next(struct nlmsghdr *header, int *length) { return NLMSG_NEXT(header, *length); }
static inline void *ferry_nlmsg_data(struct nlmsghdr *header) { return NLMSG_DATA(header); }
#endif

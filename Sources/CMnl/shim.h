// libmnl.
#ifndef FERRY_CMNL_SHIM_H
#define FERRY_CMNL_SHIM_H
#include <netinet/in.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <libmnl/libmnl.h>

#endif

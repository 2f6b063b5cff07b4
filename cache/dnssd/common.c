/* common.c - bgdnssd's pure parts: TXT records, subnets, listen addresses. */
#include <ifaddrs.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "dnssd_int.h"

void
dnssd_logf(dnssd_log_fn log, void *arg, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log(arg, "%s", line);
}

/* ---- TXT records --------------------------------------------------------- */

static bool
lower_hex(const char *s, size_t n, size_t want)
{
	return n == want && bg_is_lower_hex(s, n);
}

bool
dnssd_valid_node_id(const char *s)
{
	return s != NULL && lower_hex(s, strlen(s), BG_NODE_ID_LEN);
}

bool
dnssd_valid_key_fp(const char *s)
{
	return s != NULL && (strcmp(s, "none") == 0 || lower_hex(s, strlen(s), PEER_KEY_FP_LEN));
}

enum { SEEN_V = 1, SEEN_ID = 2, SEEN_KF = 4 };

static bool
key_is(const char *item, size_t klen, const char *key)
{
	return klen == strlen(key) && strncasecmp(item, key, klen) == 0;
}

void
dnssd_txt_item(struct dnssd_peer *p, unsigned *seen, const void *data, size_t len)
{
	const char *item = data, *eq = memchr(item, '=', len), *v;
	size_t klen, vlen;

	/* A key alone ("v") is a boolean attribute: present, but without the
	 * value asked for, so it counts as malformed.  NUL has no place in
	 * any of ours. */
	klen = eq != NULL ? (size_t)(eq - item) : len;
	v = eq != NULL ? eq + 1 : item + len;
	vlen = eq != NULL ? len - klen - 1 : 0;
	bool ok = eq != NULL && memchr(v, '\0', vlen) == NULL;

	if (key_is(item, klen, "v")) {
		if (*seen & SEEN_V)
			return;
		*seen |= SEEN_V;
		p->version = 0;
		if (!ok || vlen == 0 || vlen > 9)
			return;
		unsigned x = 0;
		for (size_t i = 0; i < vlen; i++) {
			if (v[i] < '0' || v[i] > '9')
				return;
			x = x * 10 + (unsigned)(v[i] - '0');
		}
		p->version = x;
	} else if (key_is(item, klen, "id")) {
		if (*seen & SEEN_ID)
			return;
		*seen |= SEEN_ID;
		p->node[0] = '\0';
		if (ok && lower_hex(v, vlen, BG_NODE_ID_LEN)) {
			memcpy(p->node, v, vlen);
			p->node[vlen] = '\0';
		}
	} else if (key_is(item, klen, "kf")) {
		if (*seen & SEEN_KF)
			return;
		*seen |= SEEN_KF;
		p->kf[0] = '\0';
		if (ok && (lower_hex(v, vlen, PEER_KEY_FP_LEN) ||
		           (vlen == 4 && memcmp(v, "none", 4) == 0))) {
			memcpy(p->kf, v, vlen);
			p->kf[vlen] = '\0';
		}
	}
}

/* ---- Subnets ------------------------------------------------------------- */

bool
dnssd_prefix_match(const void *a, const void *b, size_t len, unsigned prefix)
{
	const unsigned char *x = a, *y = b;
	size_t whole = prefix / 8;
	unsigned rest = prefix % 8;

	if (prefix > len * 8)
		return false;
	if (memcmp(x, y, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	unsigned char m = (unsigned char)(0xff << (8 - rest));
	return (x[whole] & m) == (y[whole] & m);
}

int
dnssd_mask_prefix(const void *mask, size_t len)
{
	const unsigned char *m = mask;
	int n = 0;
	size_t i = 0;

	for (; i < len && m[i] == 0xff; i++)
		n += 8;
	if (i == len)
		return n;
	unsigned char c = m[i];
	while (c & 0x80) {
		n++;
		c = (unsigned char)(c << 1);
	}
	if (c != 0)
		return -1;
	for (i++; i < len; i++)
		if (m[i] != 0)
			return -1;
	return n;
}

/* The address bytes of a sockaddr of family (4 or 16 of them). */
static const void *
sa_bytes(const struct sockaddr *sa, int family, size_t *len)
{
	if (sa == NULL || sa->sa_family != family)
		return NULL;
	if (family == AF_INET) {
		*len = 4;
		return &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	}
	*len = 16;
	return &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
}

bool
dnssd_same_subnet(const char *addr, int ifindex)
{
	unsigned char a[16];
	char ifname[IF_NAMESIZE];
	struct ifaddrs *ifs, *i;
	bool same = false;
	int family = strchr(addr, ':') != NULL ? AF_INET6 : AF_INET;

	if (inet_pton(family, addr, a) != 1 || if_indextoname((unsigned)ifindex, ifname) == NULL ||
	    getifaddrs(&ifs) != 0)
		return false;
	for (i = ifs; i != NULL && !same; i = i->ifa_next) {
		const void *ia, *im;
		size_t ilen, mlen;
		int prefix;

		if (strcmp(i->ifa_name, ifname) != 0 ||
		    (ia = sa_bytes(i->ifa_addr, family, &ilen)) == NULL ||
		    (im = sa_bytes(i->ifa_netmask, family, &mlen)) == NULL ||
		    (prefix = dnssd_mask_prefix(im, mlen)) < 0)
			continue;
		same = dnssd_prefix_match(a, ia, ilen, (unsigned)prefix);
	}
	freeifaddrs(ifs);
	return same;
}

/* ---- Listen addresses ---------------------------------------------------- */

/* Splits "[ADDR%SCOPE]" or "ADDR" into addr (and scope, "" when none);
 * false when it does not fit or the brackets are unbalanced. */
static bool
split_listen(const char *listen, char addr[INET6_ADDRSTRLEN], char scope[IF_NAMESIZE])
{
	size_t n;
	const char *pct;

	if (listen == NULL)
		return false;
	n = strlen(listen);
	if (n >= 2 && listen[0] == '[' && listen[n - 1] == ']') {
		listen++;
		n -= 2;
	} else if (strchr(listen, '[') != NULL || strchr(listen, ']') != NULL) {
		return false;
	}
	pct = memchr(listen, '%', n);
	size_t an = pct != NULL ? (size_t)(pct - listen) : n;
	size_t sn = pct != NULL ? n - an - 1 : 0;
	if (an == 0 || an >= INET6_ADDRSTRLEN || sn >= IF_NAMESIZE || (pct != NULL && sn == 0))
		return false;
	memcpy(addr, listen, an);
	addr[an] = '\0';
	memcpy(scope, pct != NULL ? pct + 1 : "", sn);
	scope[sn] = '\0';
	return true;
}

enum dnssd_listen_kind
dnssd_listen_kind(const char *listen, int *family)
{
	char addr[INET6_ADDRSTRLEN], scope[IF_NAMESIZE];
	struct in_addr a4;
	struct in6_addr a6;

	if (!split_listen(listen, addr, scope))
		return DNSSD_LISTEN_INVALID;
	if (scope[0] == '\0' && inet_pton(AF_INET, addr, &a4) == 1) {
		*family = AF_INET;
		uint32_t h = ntohl(a4.s_addr);
		if ((h >> 24) == 127)
			return DNSSD_LISTEN_LOOPBACK;
		return h == 0 ? DNSSD_LISTEN_WILDCARD : DNSSD_LISTEN_SPECIFIC;
	}
	if (inet_pton(AF_INET6, addr, &a6) != 1)
		return DNSSD_LISTEN_INVALID;
	*family = AF_INET6;
	if (IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127))
		return DNSSD_LISTEN_LOOPBACK;
	return IN6_IS_ADDR_UNSPECIFIED(&a6) ? DNSSD_LISTEN_WILDCARD : DNSSD_LISTEN_SPECIFIC;
}

int
dnssd_listen_ifindex(const char *listen)
{
	char addr[INET6_ADDRSTRLEN], scope[IF_NAMESIZE];
	unsigned char a[16];
	struct ifaddrs *ifs, *i;
	int family, index = 0;

	if (dnssd_listen_kind(listen, &family) == DNSSD_LISTEN_INVALID ||
	    !split_listen(listen, addr, scope))
		return 0;
	if (scope[0] != '\0') {
		char *end;
		unsigned long n = strtoul(scope, &end, 10);

		if (*end == '\0')
			return n <= INT32_MAX ? (int)n : 0;
		return (int)if_nametoindex(scope);
	}
	if (inet_pton(family, addr, a) != 1 || getifaddrs(&ifs) != 0)
		return 0;
	for (i = ifs; i != NULL && index == 0; i = i->ifa_next) {
		size_t ilen;
		const void *ia = sa_bytes(i->ifa_addr, family, &ilen);

		if (ia != NULL && memcmp(ia, a, ilen) == 0)
			index = (int)if_nametoindex(i->ifa_name);
	}
	freeifaddrs(ifs);
	return index;
}

/*
 * crl.c - the CRL cache: CRLs downloaded from distribution points and kept
 * on disk while they are current.  OpenSSL never downloads CRLs and libcurl
 * only reads a local file, so this is ours.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "net.h"
#include "net_int.h"

#define MEM_ENTRIES 8 /* parsed CRLs kept in memory (they can be tens of MB) */

static struct mem_entry {
	char *url;
	struct timespec mtime;
	off_t size;
	X509_CRL *crl;
	int64_t next_update; /* 0: see the json */
} mem[MEM_ENTRIES];
static unsigned mem_next;
static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;

static int
paths_for(const char *dir, const char *url, char *crl, char *meta, size_t len)
{
	unsigned char d[BG_SHA256_LEN];
	char hex[BG_SHA256_HEX_LEN + 1];
	int n1, n2;

	bg_sha256(url, strlen(url), d);
	bg_sha256_hex(d, hex);
	n1 = snprintf(crl, len, "%s/%s.crl", dir, hex);
	n2 = snprintf(meta, len, "%s/%s.json", dir, hex);
	return n1 < 0 || n2 < 0 || (size_t)n1 >= len || (size_t)n2 >= len ? BG_ELIMIT : 0;
}

static int64_t
unix_time(const ASN1_TIME *t)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm);
}

/* When a kept CRL stops being current. */
static int64_t
expiry_of(const json_t *meta)
{
	json_t *nu = json_object_get(meta, "next_update");
	int64_t fetched;

	if (json_is_integer(nu))
		return (int64_t)json_integer_value(nu);
	fetched = (int64_t)json_integer_value(json_object_get(meta, "fetched"));
	/* A damaged record's time cannot make a CRL current forever. */
	if (fetched > INT64_MAX - CRL_TTL_NO_NEXT_UPDATE)
		return 0;
	return fetched + CRL_TTL_NO_NEXT_UPDATE;
}

static X509_CRL *
parse_crl_file(const char *path)
{
	BIO *b = BIO_new_file(path, "rb");
	X509_CRL *crl = NULL;

	if (b == NULL)
		return NULL;
	crl = d2i_X509_CRL_bio(b, NULL);
	if (crl == NULL) {
		/* Some distribution points serve PEM. */
		(void)BIO_reset(b);
		crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL);
	}
	BIO_free(b);
	return crl;
}

int
crl_lookup(const char *dir, const char *url, X509_CRL **out, int64_t *expired_at)
{
	char crlpath[PATH_MAX], metapath[PATH_MAX];
	json_t *meta = NULL;
	struct stat sb;
	X509_CRL *crl = NULL;
	int64_t until;
	int err;

	if ((err = paths_for(dir, url, crlpath, metapath, sizeof(crlpath))) != 0)
		return err;
	if ((meta = json_load_file(metapath, 0, NULL)) == NULL || !json_is_object(meta)) {
		json_decref(meta);
		return access(metapath, F_OK) == 0 ? BG_ECORRUPT : BG_ENOENT;
	}
	until = expiry_of(meta);
	json_decref(meta);
	if (until <= (int64_t)time(NULL)) {
		if (expired_at != NULL)
			*expired_at = until;
		return BG_ETIMEDOUT;
	}
	if (stat(crlpath, &sb) != 0)
		return BG_ENOENT;

	pthread_mutex_lock(&mem_lock);
	for (size_t i = 0; i < MEM_ENTRIES; i++) {
		struct mem_entry *m = &mem[i];

		if (m->url != NULL && strcmp(m->url, url) == 0 && m->size == sb.st_size &&
		    m->mtime.tv_sec == sb.st_mtim.tv_sec && m->mtime.tv_nsec == sb.st_mtim.tv_nsec) {
			X509_CRL_up_ref(m->crl);
			crl = m->crl;
			break;
		}
	}
	pthread_mutex_unlock(&mem_lock);
	if (crl == NULL) {
		if ((crl = parse_crl_file(crlpath)) == NULL)
			return BG_ECORRUPT;
		pthread_mutex_lock(&mem_lock);
		struct mem_entry *m = &mem[mem_next++ % MEM_ENTRIES];
		free(m->url);
		X509_CRL_free(m->crl);
		m->url = strdup(url);
		m->crl = NULL;
		if (m->url != NULL) {
			X509_CRL_up_ref(crl);
			m->crl = crl;
			m->mtime = sb.st_mtim;
			m->size = sb.st_size;
		}
		pthread_mutex_unlock(&mem_lock);
	}
	*out = crl;
	return 0;
}

struct download {
	FILE *f;
	curl_off_t bytes;
	bool too_big;
};

static size_t
on_crl_data(char *p, size_t size, size_t nmemb, void *arg)
{
	struct download *d = arg;
	size_t n = size * nmemb;

	if (d->bytes + (curl_off_t)n > CRL_MAX_BYTES) {
		d->too_big = true;
		return 0;
	}
	if (fwrite(p, 1, n, d->f) != n)
		return 0;
	d->bytes += (curl_off_t)n;
	return n;
}

/* Opens a new file of its own beside path (PATH.SUFFIX.XXXXXX, 0600),
 * writing its name into tmp: fetches of the same CRL by two workers or two
 * processes never write into, or rename, each other's file. */
static int
open_temp(const char *path, const char *suffix, char *tmp, size_t len)
{
	int n = snprintf(tmp, len, "%s.%s.XXXXXX", path, suffix), fd;

	if (n < 0 || (size_t)n >= len)
		return -1;
	if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0)
		tmp[0] = '\0';
	return fd;
}

static int
write_file_atomic(const char *path, const void *data, size_t len)
{
	return bg_file_write_atomic(path, data, len, 0600);
}

int
crl_fetch(const char *dir, const char *url, const char *ca_file, char *errbuf, size_t errlen)
{
	char crlpath[PATH_MAX], metapath[PATH_MAX], tmp[PATH_MAX + 16];
	struct download d = {0};
	unsigned char *der = NULL;
	X509_CRL *crl = NULL;
	CURL *e = NULL;
	json_t *meta = NULL;
	char *metastr = NULL;
	char issuer[256] = "";
	CURLcode rc;
	long status = 0;
	int derlen, fd, err = 0;

	errbuf[0] = '\0';
	if (!url_scheme_ok(url, NULL)) {
		snprintf(errbuf, errlen, "only http and https CRL locations are fetched");
		return BG_ENOTIMPL;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		err = bg_err_from_errno(errno);
		snprintf(errbuf, errlen, "cannot create %s: %s", dir, bg_strerror(err));
		return err;
	}
	if ((err = paths_for(dir, url, crlpath, metapath, sizeof(crlpath))) != 0)
		return err;
	if ((fd = open_temp(crlpath, "download", tmp, sizeof(tmp))) < 0 ||
	    (d.f = fdopen(fd, "wb")) == NULL) {
		err = bg_err_from_errno(errno);
		snprintf(errbuf, errlen, "cannot write a file in %s: %s", dir, bg_strerror(err));
		if (fd >= 0) {
			close(fd);
			unlink(tmp);
		}
		return err;
	}
	if ((e = curl_easy_init()) == NULL) {
		err = BG_ENOMEM;
		goto out;
	}
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)CRL_MAX_REDIRS);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)CRL_CONNECT_TIMEOUT);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, (long)CRL_FETCH_TIMEOUT);
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)CRL_MAX_BYTES);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "bgcopy/" BGCOPY_VERSION);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_crl_data);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &d);
	if (ca_file != NULL)
		curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
	rc = curl_easy_perform(e);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	if (fclose(d.f) != 0 && rc == CURLE_OK) {
		d.f = NULL;
		err = BG_EIO;
		snprintf(errbuf, errlen, "cannot write %s", tmp);
		goto out;
	}
	d.f = NULL;
	if (rc != CURLE_OK || status != 200) {
		err = BG_EIO;
		if (d.too_big)
			snprintf(errbuf, errlen, "%s: CRL larger than %lld bytes", url, CRL_MAX_BYTES);
		else if (rc != CURLE_OK)
			snprintf(errbuf, errlen, "%s: %s", url, curl_easy_strerror(rc));
		else
			snprintf(errbuf, errlen, "%s: HTTP %ld", url, status);
		goto out;
	}
	if ((crl = parse_crl_file(tmp)) == NULL) {
		err = BG_EPROTO;
		snprintf(errbuf, errlen, "%s: not a CRL (DER or PEM)", url);
		goto out;
	}
	if ((derlen = i2d_X509_CRL(crl, &der)) <= 0) {
		err = BG_ENOMEM;
		goto out;
	}
	X509_NAME_oneline(X509_CRL_get_issuer(crl), issuer, sizeof(issuer));
	if ((meta = json_object()) == NULL || jset_str(meta, "url", url) != 0 ||
	    jset_int(meta, "fetched", (int64_t)time(NULL)) != 0 ||
	    jset_int(meta, "this_update", unix_time(X509_CRL_get0_lastUpdate(crl))) != 0 ||
	    jset(meta, "next_update", X509_CRL_get0_nextUpdate(crl) != NULL
	                                  ? json_integer(unix_time(X509_CRL_get0_nextUpdate(crl)))
	                                  : json_null()) != 0 ||
	    jset_str(meta, "issuer", issuer) != 0 || jset_int(meta, "bytes", derlen) != 0 ||
	    (metastr = json_dumps(meta, JSON_COMPACT)) == NULL) {
		err = BG_ENOMEM;
		goto out;
	}
	/* The CRL first, then the record that makes it count. */
	if ((err = write_file_atomic(crlpath, der, (size_t)derlen)) != 0 ||
	    (err = write_file_atomic(metapath, metastr, strlen(metastr))) != 0) {
		snprintf(errbuf, errlen, "cannot keep the CRL in %s: %s", dir, bg_strerror(err));
		goto out;
	}
out:
	if (d.f != NULL)
		fclose(d.f);
	unlink(tmp);
	curl_easy_cleanup(e);
	X509_CRL_free(crl);
	OPENSSL_free(der);
	json_decref(meta);
	free(metastr);
	if (err != 0 && errbuf[0] == '\0')
		snprintf(errbuf, errlen, "%s: %s", url, bg_strerror(err));
	return err;
}

int
crl_each(const char *dir, int (*fn)(json_t *info, void *arg), void *arg)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int err = 0;

	if (d == NULL)
		return errno == ENOENT ? 0 : bg_err_from_errno(errno);
	while ((de = readdir(d)) != NULL && err == 0) {
		size_t n = strlen(de->d_name);
		char path[PATH_MAX];
		json_t *meta;

		if (n != BG_SHA256_HEX_LEN + 5 || strcmp(de->d_name + BG_SHA256_HEX_LEN, ".json") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if ((meta = json_load_file(path, 0, NULL)) == NULL || !json_is_object(meta) ||
		    jstr(meta, "url") == NULL) {
			json_decref(meta);
			continue; /* a damaged record is skipped; refresh or clear fixes it */
		}
		jset(meta, "current", json_boolean(expiry_of(meta) > (int64_t)time(NULL)));
		err = fn(meta, arg);
		json_decref(meta);
	}
	closedir(d);
	return err;
}

int
crl_clear(const char *dir, unsigned *removed)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	unsigned n = 0;
	int err = 0;

	if (removed != NULL)
		*removed = 0;
	if (d == NULL)
		return errno == ENOENT ? 0 : bg_err_from_errno(errno);
	while ((de = readdir(d)) != NULL) {
		char path[PATH_MAX];
		const char *dot = strrchr(de->d_name, '.');

		if (de->d_name[0] == '.' || dot == NULL)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (unlink(path) != 0 && errno != ENOENT) {
			err = bg_err_from_errno(errno);
			continue;
		}
		n += strcmp(dot, ".json") == 0;
	}
	closedir(d);
	if (removed != NULL)
		*removed = n;
	return err;
}

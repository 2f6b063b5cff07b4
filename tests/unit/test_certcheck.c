/*
 * test_certcheck.c - the pure parts of client certificates and of the
 * certificate check command (agent/net/certcheck.c): the key file's mode
 * check, the command's input, and how an exit, a signal or a hang count;
 * the job record's fields and the document's view of them.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <jansson.h>

#include "check.h"
#include "jobs.h"
#include "net_int.h"
#include "record.h"

static char dir[] = "/tmp/bgcopy-certcheck-XXXXXX";

static void
path_of(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

static void
test_key_mode(void)
{
	char p[512], why[512];

	path_of(p, sizeof(p), "k.pem");
	write_file(p, "not read here\n", 0600);
	CHECK_EQ_INT(client_key_check(p, why, sizeof(why)), 0);
	chmod(p, 0400);
	CHECK_EQ_INT(client_key_check(p, why, sizeof(why)), 0);
	chmod(p, 0644);
	CHECK_EQ_INT(client_key_check(p, why, sizeof(why)), BG_EUNSAFE);
	CHECK(strstr(why, "0644") != NULL && strstr(why, p) != NULL && strchr(why, '\n') == NULL);
	chmod(p, 0640);
	CHECK_EQ_INT(client_key_check(p, why, sizeof(why)), BG_EUNSAFE);
	CHECK(strstr(why, "0640") != NULL);
	chmod(p, 0604);
	CHECK_EQ_INT(client_key_check(p, why, sizeof(why)), BG_EUNSAFE);
	chmod(p, 0610); /* any bit for group or others, not only reading */
	CHECK_EQ_INT(client_key_check(p, why, sizeof(why)), BG_EUNSAFE);
	CHECK_EQ_INT(client_key_check(dir, why, sizeof(why)), BG_EINVAL);
	path_of(p, sizeof(p), "absent.pem");
	CHECK_EQ_INT(client_key_check(p, why, sizeof(why)), BG_ENOENT);
	CHECK(strstr(why, p) != NULL);
}

static void
test_pkcs11_uri(void)
{
	CHECK(client_cert_is_pkcs11("pkcs11:token=t;object=o"));
	CHECK(!client_cert_is_pkcs11("/etc/x.pem"));
	CHECK(!client_cert_is_pkcs11("PKCS11:token=t"));
	CHECK(!client_cert_is_pkcs11(NULL));
}

static X509 *
make_cert(const char *cn)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();

	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	                           (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_sign(x, k, EVP_sha256());
	EVP_PKEY_free(k);
	return x;
}

static char *
pem_of(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p, *s;
	long n;

	PEM_write_bio_X509(b, x);
	n = BIO_get_mem_data(b, &p);
	s = strndup(p, (size_t)n);
	BIO_free(b);
	return s;
}

static void
test_input(void)
{
	STACK_OF(X509) *chain = sk_X509_new_null();
	X509 *leaf = make_cert("leaf.test"), *ca = make_cert("ca.test");
	char *in = NULL, *pl = pem_of(leaf), *pc = pem_of(ca), want[8192];
	size_t len = 0;

	sk_X509_push(chain, leaf);
	sk_X509_push(chain, ca);
	CHECK_EQ_INT(certcheck_input("example.test", 8443, chain, &in, &len), 0);
	snprintf(want, sizeof(want), "host example.test 8443\n%s%s", pl, pc);
	CHECK_EQ_STR(in, want);
	CHECK_EQ_INT(len, strlen(want));
	free(in);
	/* An empty chain still names the host. */
	sk_X509_pop_free(chain, X509_free);
	chain = sk_X509_new_null();
	CHECK_EQ_INT(certcheck_input("::1", 443, chain, &in, &len), 0);
	CHECK_EQ_STR(in, "host ::1 443\n");
	free(in);
	sk_X509_free(chain);
	free(pl);
	free(pc);
}

static void
test_run(void)
{
	char why[512], out[512], cmd[1024], got[128] = "";
	const char *yes[] = {"true", NULL};
	const char *no[] = {"sh", "-c", "exit 7", NULL};
	const char *seg[] = {"sh", "-c", "kill -SEGV $$", NULL};
	const char *hang[] = {"sh", "-c", "sleep 30 & wait", NULL};
	const char *missing[] = {"/nonexistent/bgcopy-check", NULL};
	const char *copy[] = {"sh", "-c", cmd, NULL};
	const char *deaf[] = {"true", NULL};
	static char big[1 << 20];
	FILE *f;

	CHECK_EQ_INT(certcheck_run(yes, "x\n", 2, 5000, why, sizeof(why)), 0);
	CHECK_EQ_INT(certcheck_run(no, "x\n", 2, 5000, why, sizeof(why)), 1);
	CHECK(strstr(why, "exit 7") != NULL);
	CHECK_EQ_INT(certcheck_run(seg, "x\n", 2, 5000, why, sizeof(why)), 1);
	CHECK(strstr(why, "signal 11") != NULL);
	CHECK_EQ_INT(certcheck_run(hang, "x\n", 2, 300, why, sizeof(why)), 1);
	CHECK(strstr(why, "killed") != NULL && strstr(why, "300 ms") != NULL);
	CHECK_EQ_INT(certcheck_run(missing, "x\n", 2, 5000, why, sizeof(why)), 1);
	CHECK(strstr(why, "/nonexistent/bgcopy-check") != NULL);
	/* The input arrives whole on standard input. */
	path_of(out, sizeof(out), "input");
	snprintf(cmd, sizeof(cmd), "cat > '%s'", out);
	CHECK_EQ_INT(certcheck_run(copy, "host h 1\nPEM\n", 14, 5000, why, sizeof(why)), 0);
	if ((f = fopen(out, "r")) != NULL) {
		size_t n = fread(got, 1, sizeof(got) - 1, f);

		got[n] = '\0';
		fclose(f);
	}
	CHECK_EQ_STR(got, "host h 1\nPEM\n");
	/* A command that reads nothing of a large input: its exit decides,
	 * and this process is not killed by SIGPIPE. */
	memset(big, 'A', sizeof(big));
	CHECK_EQ_INT(certcheck_run(deaf, big, sizeof(big), 5000, why, sizeof(why)), 0);
	unlink(out);
	/* A status reaped by someone else (here the kernel, SIGCHLD ignored;
	 * in a daemon, a waitpid(-1)) is lost: never taken for an acceptance. */
	signal(SIGCHLD, SIG_IGN);
	CHECK_EQ_INT(certcheck_run(yes, "x\n", 2, 5000, why, sizeof(why)), 1);
	CHECK(strstr(why, "lost") != NULL);
	signal(SIGCHLD, SIG_DFL);
}

static void
test_timeout_env(void)
{
	unsetenv("BGCOPY_CERT_CHECK_TIMEOUT_MS");
	CHECK_EQ_INT(certcheck_timeout_ms(), CERTCHECK_TIMEOUT_MS);
	setenv("BGCOPY_CERT_CHECK_TIMEOUT_MS", "1500", 1);
	CHECK_EQ_INT(certcheck_timeout_ms(), 1500);
	setenv("BGCOPY_CERT_CHECK_TIMEOUT_MS", "abc", 1);
	CHECK_EQ_INT(certcheck_timeout_ms(), CERTCHECK_TIMEOUT_MS);
	setenv("BGCOPY_CERT_CHECK_TIMEOUT_MS", "999999999", 1); /* never longer than the default */
	CHECK_EQ_INT(certcheck_timeout_ms(), CERTCHECK_TIMEOUT_MS);
	unsetenv("BGCOPY_CERT_CHECK_TIMEOUT_MS");
}

/* A record of an older build (no such fields) reads as none set, and
 * encodes as it was; set fields are written and read back; the document
 * shows paths and a PKCS#11 URI with its PIN hidden. */
static void
test_record_fields(void)
{
	json_t *o = json_pack("{s:s, s:s}", "id", "aaaaaaaa-0000-4000-8000-000000000001", "state",
	                      "QUEUED");
	const char *cmd[] = {"/usr/bin/check", "-v", NULL};
	struct job_rec r;
	json_t *d;

	CHECK_EQ_INT(job_rec_decode(o, &r), 0);
	CHECK(r.client_cert == NULL && r.client_key == NULL && r.cert_check_cmd.n == 0);
	CHECK_EQ_INT(job_rec_encode(&r, &o), 0);
	CHECK(json_object_get(o, "client_cert") == NULL);
	CHECK(json_object_get(o, "client_key") == NULL);
	CHECK(json_object_get(o, "cert_check_cmd") == NULL);
	d = job_client_cert_json(&r);
	CHECK(json_is_null(d));
	json_decref(d);

	r.client_cert = strdup("/k/c.pem");
	r.client_key = strdup("/k/c.key");
	CHECK_EQ_INT(strv_set(&r.cert_check_cmd, cmd), 0);
	CHECK_EQ_INT(job_rec_encode(&r, &o), 0);
	job_rec_clear(&r);
	CHECK_EQ_INT(job_rec_decode(o, &r), 0);
	CHECK_EQ_STR(r.client_cert, "/k/c.pem");
	CHECK_EQ_STR(r.client_key, "/k/c.key");
	CHECK_EQ_INT(r.cert_check_cmd.n, 2);
	CHECK_EQ_STR(strv_list(&r.cert_check_cmd)[1], "-v");
	d = job_client_cert_json(&r);
	CHECK_EQ_STR(json_string_value(json_object_get(d, "cert_file")), "/k/c.pem");
	CHECK_EQ_STR(json_string_value(json_object_get(d, "key_file")), "/k/c.key");
	CHECK(json_is_string(json_object_get(d, "problem"))); /* no such file here */
	json_decref(d);

	free(r.client_cert);
	free(r.client_key);
	r.client_cert = strdup("pkcs11:token=t;pin-value=1234;object=o");
	r.client_key = NULL;
	d = job_client_cert_json(&r);
	CHECK_EQ_STR(json_string_value(json_object_get(d, "pkcs11")),
	             "pkcs11:token=t;pin-value=***;object=o");
	json_decref(d);
	job_rec_clear(&r);
	json_decref(o);
}

int
main(void)
{
	char p[512];

	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_key_mode();
	test_pkcs11_uri();
	test_input();
	test_run();
	test_timeout_env();
	test_record_fields();
	path_of(p, sizeof(p), "k.pem");
	unlink(p);
	rmdir(dir);
	return check_done();
}

/*
 * record.c - job and file records: the C structs and the JSON the store
 * keeps (the one place that knows the field names).
 *
 * Encoding updates a decoded record in place, touching only what changed:
 * a chunk's commit then rewrites a few integers of the file record, with no
 * allocation, and a runner's commit leaves alone whatever a user changed in
 * the stored job record meanwhile.
 */
#include <stdlib.h>
#include <string.h>

#include "jobs_int.h"
#include "record.h"

/* ---- Names ------------------------------------------------------------- */

static const char *const caching_names[] = {
	[PEER_CACHING_OFF] = "off",
	[PEER_CACHING_CLIENT] = "client",
	[PEER_CACHING_SERVER] = "server",
	[PEER_CACHING_BOTH] = "both",
};

static const char *const lookup_names[] = {
	[PEER_LOOKUP_MISS] = "miss",         [PEER_LOOKUP_ERROR] = "error",
	[PEER_LOOKUP_STALE] = "stale",       [PEER_LOOKUP_HIT] = "hit",
	[PEER_LOOKUP_REJECTED] = "rejected", [PEER_LOOKUP_FAILED] = "failed",
};

NAME_TABLE_FUNCS(peer_caching, caching_names, "off", false)

static const char *const target_names[] = {
	[JOB_AUTH_SERVER] = "server",
	[JOB_AUTH_PROXY] = "proxy",
};

static const char *const scheme_names[] = {
	[JOB_AUTH_BASIC] = "basic",         [JOB_AUTH_DIGEST] = "digest",
	[JOB_AUTH_NTLM] = "ntlm",           [JOB_AUTH_NEGOTIATE] = "negotiate",
	[JOB_AUTH_PASSPORT] = "passport",
};

NAME_TABLE_FUNCS(job_auth_target, target_names, "?", false)

const char *
job_auth_scheme_name(enum job_auth_scheme sc)
{
	return name_at(scheme_names, NAMES_COUNT(scheme_names), sc, "?");
}

/* As NAME_TABLE_FUNCS would, but a known scheme may still be refused. */
int
job_auth_scheme_parse(const char *s, enum job_auth_scheme *out)
{
	int i = name_find(scheme_names, NAMES_COUNT(scheme_names), s, false);

	if (i < 0)
		return BG_EINVAL;
	*out = (enum job_auth_scheme)i;
	return i == JOB_AUTH_PASSPORT ? BG_ENOTIMPL : 0;
}

bool
job_http_method_valid(const char *s)
{
	/* tchar of RFC 9110 section 5.6.2. */
	static const char tchar_extra[] = "!#$%&'*+-.^_`|~";
	size_t n = s != NULL ? strlen(s) : 0;

	/* A download needs a body: HEAD never has one, CONNECT asks for a
	 * tunnel (RFC 9110 sections 9.3.2, 9.3.6). */
	if (n == 0 || n >= JOB_HTTP_METHOD_MAX || strcmp(s, "HEAD") == 0 || strcmp(s, "CONNECT") == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch != '\0' && strchr(tchar_extra, ch) != NULL)))
			return false;
	}
	return true;
}

const char *
peer_lookup_result_name(enum peer_lookup_result r)
{
	return name_at(lookup_names, NAMES_COUNT(lookup_names), r, NULL);
}

/* ---- Strings and lists ------------------------------------------------- */

int
rec_set_str(char **field, const char *s)
{
	char *copy = NULL;

	if (s != NULL && (copy = strdup(s)) == NULL)
		return BG_ENOMEM;
	free(*field);
	*field = copy;
	return 0;
}

void
strv_free(struct strv *a)
{
	for (char **p = a->v; p != NULL && *p != NULL; p++)
		free(*p);
	free(a->v);
	memset(a, 0, sizeof(*a));
}

int
strv_set(struct strv *a, const char *const *list)
{
	struct strv b = {NULL, 0};
	size_t n = 0;

	while (list != NULL && list[n] != NULL)
		n++;
	if (n > 0) {
		if ((b.v = calloc(n + 1, sizeof(*b.v))) == NULL)
			return BG_ENOMEM;
		for (; b.n < n; b.n++) {
			if ((b.v[b.n] = strdup(list[b.n])) == NULL) {
				strv_free(&b);
				return BG_ENOMEM;
			}
		}
	}
	strv_free(a);
	*a = b;
	return 0;
}

const char *const *
strv_list(const struct strv *a)
{
	static const char *const none[] = {NULL};

	return a->v != NULL ? (const char *const *)a->v : none;
}

/* The strings of a JSON array (others skipped) into *a. */
static int
strv_decode(const json_t *arr, struct strv *a)
{
	size_t n = json_array_size(arr), k = 0;
	const char **tmp;
	int err;

	if (n == 0)
		return strv_set(a, NULL);
	if ((tmp = calloc(n + 1, sizeof(*tmp))) == NULL)
		return BG_ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (json_is_string(json_array_get(arr, i)))
			tmp[k++] = json_string_value(json_array_get(arr, i));
	err = strv_set(a, tmp);
	free(tmp);
	return err;
}

json_t *
strv_json(const struct strv *a)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr != NULL && i < a->n; i++) {
		if (json_array_append_new(arr, json_string(a->v[i])) != 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

static bool
strv_matches(const json_t *arr, const struct strv *a)
{
	if (!json_is_array(arr) || json_array_size(arr) != a->n)
		return false;
	for (size_t i = 0; i < a->n; i++) {
		const char *s = json_string_value(json_array_get(arr, i));

		if (s == NULL || strcmp(s, a->v[i]) != 0)
			return false;
	}
	return true;
}

/* ---- Decoding ---------------------------------------------------------- */

static int
dstr(const json_t *o, const char *key, char **field)
{
	return rec_set_str(field, jstr(o, key));
}

static uint64_t
duint(const json_t *o, const char *key)
{
	return (uint64_t)jint(o, key, 0);
}

int
job_rec_state(const json_t *o, enum job_state *out)
{
	if (!json_is_string(json_object_get(o, "state")))
		return BG_ECORRUPT;
	/* A state of another version, or damaged: nothing runs it. */
	if (job_state_parse(jstr(o, "state"), out) != 0) {
		*out = JOB_ERROR;
		return BG_EINVAL;
	}
	return 0;
}

static int
error_decode(const json_t *e, struct job_error *out)
{
	const char *code = jstr(e, "code"), *ctx = jstr(e, "context"), *msg = jstr(e, "message");

	uint64_t hr = 0;

	/* Written as "0x%08X" (error_encode). */
	if (code != NULL && (code[0] == '0' && (code[1] == 'x' || code[1] == 'X')) &&
	    bg_parse_uint(code + 2, strlen(code + 2), 16, UINT32_MAX, &hr) != 0)
		hr = 0;
	out->outcome.hr = (uint32_t)hr;
	out->outcome.local = ctx != NULL && strcmp(ctx, "local_file") == 0;
	snprintf(out->outcome.message, sizeof(out->outcome.message), "%s", msg != NULL ? msg : "");
	out->file_index = (uint32_t)jint(e, "file_index", 0);
	return dstr(e, "url", &out->url);
}

/* The server's basic credential from "user" and "password" (where builds
 * before schemes kept the only one), the others from "credentials". */
static int
creds_decode(const json_t *o, struct job_rec *out)
{
	const json_t *arr = json_object_get(o, "credentials");
	struct job_cred *basic = &out->cred[JOB_AUTH_SERVER][JOB_AUTH_BASIC];
	int err;

	if (jstr(o, "user") != NULL &&
	    (err = job_cred_set(basic, jstr(o, "user"), jstr(o, "password"))) != 0)
		return err;
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *c = json_array_get(arr, i);
		enum job_auth_target t;
		enum job_auth_scheme sc;

		/* A target or scheme of another version is left alone. */
		if (job_auth_target_parse(jstr(c, "target"), &t) != 0 ||
		    job_auth_scheme_parse(jstr(c, "scheme"), &sc) != 0 || jstr(c, "user") == NULL ||
		    (t == JOB_AUTH_SERVER && sc == JOB_AUTH_BASIC))
			continue;
		if ((err = job_cred_set(&out->cred[t][sc], jstr(c, "user"), jstr(c, "password"))) != 0)
			return err;
	}
	return 0;
}

int
job_rec_decode(const json_t *o, struct job_rec *out)
{
	const json_t *e = json_object_get(o, "error");
	int err;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(o) || job_rec_state(o, &out->state) == BG_ECORRUPT)
		return BG_ECORRUPT;
	snprintf(out->id, sizeof(out->id), "%s", jstr(o, "id") != NULL ? jstr(o, "id") : "");
	if (job_priority_parse(jstr(o, "priority"), &out->priority) != 0)
		out->priority = JOB_PRIO_NORMAL;
	if (peer_caching_parse(jstr(o, "peer_caching"), &out->peer_caching) != 0)
		out->peer_caching = PEER_CACHING_OFF;
	out->created = jint(o, "created", 0);
	out->modified = jint(o, "modified", 0);
	out->nfiles = (uint32_t)jint(o, "nfiles", 0);
	out->generation = jint(o, "generation", 0);
	out->last_progress = jint(o, "last_progress", 0);
	out->min_retry_delay = jint(o, "min_retry_delay", JOB_MIN_RETRY_DELAY);
	out->no_progress_timeout = jint(o, "no_progress_timeout", JOB_NO_PROGRESS_TIMEOUT);
	out->transient_since = jint(o, "transient_since", 0);
	out->retry_at = jint(o, "retry_at", 0);
	out->security_flags = (uint32_t)jint(o, "security_flags", 0);
	/* Absent in records of builds before transfer policies: always. */
	out->cost_flags = (uint32_t)jint(o, "cost_flags", JOB_COST_FLAGS_ALWAYS);
	out->cache_both = jbool(o, "cache_both");
	out->no_cache = jbool(o, "no_cache");
	out->max_download_time = jint(o, "max_download_time", JOB_MAX_DOWNLOAD_TIME);
	out->download_time_used = jint(o, "download_time_used", 0);
	/* Absent in records of builds before rate limits, and while none. */
	{
		int64_t mr = jint(o, "max_rate", 0);

		out->max_rate = mr > 0 && (uint64_t)mr <= BG_RATE_MAX ? (uint64_t)mr : 0;
	}
	out->headers_write_only = jbool(o, "headers_write_only");
	out->has_error = json_is_object(e);
	if ((out->has_error && (err = error_decode(e, &out->error)) != 0) ||
	    (err = dstr(o, "name", &out->name)) != 0 || (err = dstr(o, "get_key", &out->get_key)) != 0 ||
	    (err = dstr(o, "peer_key", &out->peer_key)) != 0 ||
	    (err = dstr(o, "ca_file", &out->ca_file)) != 0 ||
	    (err = dstr(o, "proxy", &out->proxy)) != 0 ||
	    (err = dstr(o, "http_method", &out->http_method)) != 0 ||
	    (err = creds_decode(o, out)) != 0 ||
	    (err = strv_decode(json_object_get(o, "peers"), &out->peers)) != 0 ||
	    (err = strv_decode(json_object_get(o, "headers"), &out->headers)) != 0 ||
	    (err = strv_decode(json_object_get(o, "notify_cmd"), &out->notify_cmd)) != 0 ||
	    (err = dstr(o, "client_cert", &out->client_cert)) != 0 ||
	    (err = dstr(o, "client_key", &out->client_key)) != 0 ||
	    (err = strv_decode(json_object_get(o, "cert_check_cmd"), &out->cert_check_cmd)) != 0) {
		job_rec_clear(out);
		return err;
	}
	/* The method goes into the request line as it is: a damaged one is
	 * never sent. */
	if (out->http_method != NULL && !job_http_method_valid(out->http_method)) {
		job_rec_clear(out);
		return BG_ECORRUPT;
	}
	return 0;
}

static int
lookup_decode(const json_t *o, struct peer_lookup *l)
{
	int i = name_find(lookup_names, NAMES_COUNT(lookup_names), jstr(o, "result"), false);
	int err;

	l->result = i < 0 ? PEER_LOOKUP_ERROR : (enum peer_lookup_result)i;
	if ((err = dstr(o, "key", &l->key)) != 0 || (err = dstr(o, "peer", &l->peer)) != 0 ||
	    (err = dstr(o, "source", &l->source)) != 0 || (err = dstr(o, "detail", &l->detail)) != 0)
		return err;
	return 0;
}

int
file_rec_decode(const json_t *o, struct file_rec *out)
{
	const json_t *list = json_object_get(o, "peer_lookups");
	int err;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(o))
		return BG_ECORRUPT;
	out->bytes_total = jint(o, "bytes_total", -1);
	out->bytes_committed = duint(o, "bytes_committed");
	out->done = jbool(o, "done");
	out->bytes_from_origin = duint(o, "bytes_from_origin");
	out->bytes_from_peers = duint(o, "bytes_from_peers");
	out->bytes_checked = duint(o, "bytes_checked");
	out->bytes_rejected = duint(o, "bytes_rejected");
	out->bytes_from_cache = duint(o, "bytes_from_cache");
	out->fleet_elections = duint(o, "fleet_elections");
	out->fleet_follows = duint(o, "fleet_follows");
	out->fleet_takeovers = duint(o, "fleet_takeovers");
	out->blob = duint(o, "blob");
	out->crl_checked = jbool(o, "crl_checked");
	out->not_stored = jbool(o, "not_stored");
	out->has_cached = json_object_get(o, "cached") != NULL;
	out->cached = jbool(o, "cached");
	out->has_last_lookup = json_object_get(o, "peer_lookup") != NULL;
	if ((err = dstr(o, "original_url", &out->original_url)) != 0 ||
	    (err = dstr(o, "remote_url", &out->remote_url)) != 0 ||
	    (err = dstr(o, "local_path", &out->local_path)) != 0 ||
	    (err = dstr(o, "temp_path", &out->temp_path)) != 0 ||
	    (err = dstr(o, "cache_key", &out->cache_key)) != 0 ||
	    (err = dstr(o, "fleet_role", &out->fleet_role)) != 0 ||
	    (err = dstr(o, "fleet_source", &out->fleet_source)) != 0 ||
	    (err = dstr(o, "sha256", &out->sha256)) != 0 ||
	    (err = dstr(o, "expect_sha256", &out->expect_sha256)) != 0 ||
	    (err = dstr(o, "origin_sha256", &out->origin_sha256)) != 0 ||
	    (err = dstr(o, "etag", &out->etag)) != 0 ||
	    (err = dstr(o, "last_modified", &out->last_modified)) != 0 ||
	    (err = dstr(o, "date", &out->date)) != 0 ||
	    (err = dstr(o, "cache_note", &out->cache_note)) != 0 ||
	    (out->has_last_lookup &&
	     (err = lookup_decode(json_object_get(o, "peer_lookup"), &out->last_lookup)) != 0))
		goto fail;
	if (json_array_size(list) > 0) {
		if ((out->lookups = calloc(json_array_size(list), sizeof(*out->lookups))) == NULL) {
			err = BG_ENOMEM;
			goto fail;
		}
		for (; out->nlookups < json_array_size(list); out->nlookups++)
			if ((err = lookup_decode(json_array_get(list, out->nlookups),
			                         &out->lookups[out->nlookups])) != 0) {
				out->nlookups++;
				goto fail;
			}
	}
	return 0;
fail:
	file_rec_clear(out);
	return err;
}

/* ---- Encoding ---------------------------------------------------------- */

/* Each put sets o[key] to the value unless it holds that value already
 * (no allocation then); the opt_ forms leave an absent field absent while
 * the value is the default that absence means. */
static int
put_int(json_t *o, const char *key, int64_t v)
{
	json_t *old = json_object_get(o, key);

	if (json_is_integer(old)) {
		if (json_integer_value(old) != (json_int_t)v)
			json_integer_set(old, (json_int_t)v);
		return 0;
	}
	return jset_int(o, key, v);
}

static int
put_str(json_t *o, const char *key, const char *s)
{
	json_t *old = json_object_get(o, key);

	if (s == NULL ? json_is_null(old)
	              : json_is_string(old) && strcmp(json_string_value(old), s) == 0)
		return 0;
	return jset_str(o, key, s);
}

static int
put_bool(json_t *o, const char *key, bool b)
{
	json_t *old = json_object_get(o, key);

	if (b ? json_is_true(old) : json_is_false(old))
		return 0;
	return jset(o, key, json_boolean(b));
}

static int
put_strv(json_t *o, const char *key, const struct strv *a)
{
	if (strv_matches(json_object_get(o, key), a))
		return 0;
	return jset(o, key, strv_json(a));
}

static bool
absent(const json_t *o, const char *key)
{
	return json_object_get(o, key) == NULL;
}

static int
opt_int(json_t *o, const char *key, int64_t v)
{
	return v == 0 && absent(o, key) ? 0 : put_int(o, key, v);
}

static int
opt_str(json_t *o, const char *key, const char *s)
{
	return s == NULL && absent(o, key) ? 0 : put_str(o, key, s);
}

static int
opt_bool(json_t *o, const char *key, bool b)
{
	return !b && absent(o, key) ? 0 : put_bool(o, key, b);
}

static int
del(json_t *o, const char *key)
{
	if (!absent(o, key))
		json_object_del(o, key);
	return 0;
}

json_t *
job_error_json(const struct job_error *e)
{
	const struct job_outcome *oc = &e->outcome;
	json_t *o = json_object();
	char code[16], sym[48];

	if (o == NULL)
		return NULL;
	snprintf(code, sizeof(code), "0x%08X", (unsigned)oc->hr);
	if (jset_str(o, "code", code) != 0 ||
	    jset_str(o, "symbol", hr_symbol(oc->hr, sym, sizeof(sym))) != 0 ||
	    jset_str(o, "context", oc->local ? "local_file" : "remote_file") != 0 ||
	    jset_int(o, "file_index", e->file_index) != 0 || jset_str(o, "url", e->url) != 0 ||
	    jset_str(o, "message", oc->message[0] ? oc->message : hr_message(oc->hr)) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int
put_error(json_t *o, const struct job_rec *r)
{
	json_t *e;

	if (!r->has_error)
		return put_str(o, "error", NULL);
	if ((e = job_error_json(&r->error)) == NULL)
		return BG_ENOMEM;
	if (json_equal(json_object_get(o, "error"), e)) {
		json_decref(e);
		return 0;
	}
	return jset(o, "error", e);
}

/* Encodes rec with put (the fields of one kind of record) into *io. */
static int
encode(json_t **io, int (*put)(json_t *o, const void *rec), const void *rec)
{
	json_t *o = *io != NULL ? *io : json_object();
	int err;

	if (o == NULL)
		return BG_ENOMEM;
	if ((err = put(o, rec)) != 0) {
		if (*io == NULL)
			json_decref(o);
		return err;
	}
	*io = o;
	return 0;
}

/* The credentials other than the server's basic one, as "credentials":
 * [{"target", "scheme", "user", "password"}...], or no member at all. */
static int
put_creds(json_t *o, const struct job_rec *r)
{
	json_t *arr = json_array();

	if (arr == NULL)
		return BG_ENOMEM;
	for (int t = 0; t < JOB_AUTH_TARGETS; t++) {
		for (int sc = 0; sc < JOB_AUTH_SCHEMES; sc++) {
			const struct job_cred *c = &r->cred[t][sc];
			json_t *e;

			if (c->user == NULL || (t == JOB_AUTH_SERVER && sc == JOB_AUTH_BASIC))
				continue;
			if ((e = json_object()) == NULL || json_array_append_new(arr, e) != 0 ||
			    jset_str(e, "target", job_auth_target_name((enum job_auth_target)t)) != 0 ||
			    jset_str(e, "scheme", job_auth_scheme_name((enum job_auth_scheme)sc)) != 0 ||
			    jset_str(e, "user", c->user) != 0 ||
			    jset_str(e, "password", c->password != NULL ? c->password : "") != 0) {
				json_decref(arr);
				return BG_ENOMEM;
			}
		}
	}
	if (json_array_size(arr) == 0) {
		json_decref(arr);
		json_object_del(o, "credentials");
		return 0;
	}
	if (json_equal(arr, json_object_get(o, "credentials"))) {
		json_decref(arr);
		return 0;
	}
	return jset(o, "credentials", arr);
}

static int
put_job(json_t *o, const void *rec)
{
	const struct job_rec *r = rec;
	int err;

	/* In the order a new record has its fields. */
	if ((err = opt_str(o, "id", r->id[0] ? r->id : NULL)) != 0 ||
	    (err = put_str(o, "name", r->name)) != 0 || (err = put_str(o, "type", "download")) != 0 ||
	    (err = put_str(o, "state", job_state_name(r->state))) != 0 ||
	    (err = put_str(o, "priority", job_priority_name(r->priority))) != 0 ||
	    (err = put_str(o, "peer_caching", peer_caching_name(r->peer_caching))) != 0 ||
	    (err = put_int(o, "created", r->created)) != 0 ||
	    (err = put_int(o, "nfiles", r->nfiles)) != 0 ||
	    (err = put_int(o, "generation", r->generation)) != 0 ||
	    (err = put_int(o, "last_progress", r->last_progress)) != 0 ||
	    (err = put_int(o, "min_retry_delay", r->min_retry_delay)) != 0 ||
	    (err = put_int(o, "no_progress_timeout", r->no_progress_timeout)) != 0 ||
	    (err = put_error(o, r)) != 0 || (err = put_str(o, "get_key", r->get_key)) != 0 ||
	    ((r->peers.n > 0 || !absent(o, "peers")) && (err = put_strv(o, "peers", &r->peers)) != 0) ||
	    (err = put_str(o, "peer_key", r->peer_key)) != 0 ||
	    (err = put_int(o, "security_flags", r->security_flags)) != 0 ||
	    (err = put_str(o, "ca_file", r->ca_file)) != 0 ||
	    (err = put_strv(o, "headers", &r->headers)) != 0 ||
	    (err = put_bool(o, "cache_both", r->cache_both)) != 0 ||
	    (err = put_bool(o, "no_cache", r->no_cache)) != 0 ||
	    (err = opt_int(o, "modified", r->modified)) != 0 ||
	    (err = opt_int(o, "transient_since", r->transient_since)) != 0 ||
	    (err = opt_int(o, "retry_at", r->retry_at)) != 0 ||
	    (err = (r->notify_cmd.n > 0 ? put_strv(o, "notify_cmd", &r->notify_cmd)
	                                : opt_str(o, "notify_cmd", NULL))) != 0 ||
	    (err = opt_str(o, "proxy", r->proxy)) != 0 ||
	    (err = opt_str(o, "user", r->cred[JOB_AUTH_SERVER][JOB_AUTH_BASIC].user)) != 0 ||
	    (err = opt_str(o, "password", r->cred[JOB_AUTH_SERVER][JOB_AUTH_BASIC].password)) != 0)
		return err;
	/* The fields of the HTTP options: each absent at its default, so that
	 * records of jobs that set none stay as older builds wrote them. */
	if ((err = put_creds(o, r)) != 0 || (err = opt_str(o, "http_method", r->http_method)) != 0 ||
	    ((r->headers_write_only || !absent(o, "headers_write_only")) &&
	     (err = put_bool(o, "headers_write_only", r->headers_write_only)) != 0))
		return err;
	/* The maximum download time: absent while it is the default (and
	 * none used), so that records stay as older builds wrote them. */
	if (!(r->max_download_time == JOB_MAX_DOWNLOAD_TIME && absent(o, "max_download_time")) &&
	    (err = put_int(o, "max_download_time", r->max_download_time)) != 0)
		return err;
	if ((err = opt_int(o, "download_time_used", r->download_time_used)) != 0)
		return err;
	/* Only a job whose policy is not the default has the field, so that
	 * other jobs' records stay as older builds write and read them. */
	if ((r->cost_flags != JOB_COST_FLAGS_ALWAYS || !absent(o, "cost_flags")) &&
	    (err = put_int(o, "cost_flags", r->cost_flags)) != 0)
		return err;
	/* The job's own rate limit: absent while none, as older builds. */
	if ((err = opt_int(o, "max_rate", (int64_t)r->max_rate)) != 0)
		return err;
	/* Client certificate and check command: absent while unset, as the
	 * fields before them. */
	if ((err = opt_str(o, "client_cert", r->client_cert)) != 0 ||
	    (err = opt_str(o, "client_key", r->client_key)) != 0 ||
	    (err = (r->cert_check_cmd.n > 0 ? put_strv(o, "cert_check_cmd", &r->cert_check_cmd)
	                                    : opt_str(o, "cert_check_cmd", NULL))) != 0)
		return err;
	return 0;
}

int
job_rec_encode(const struct job_rec *r, json_t **io)
{
	return encode(io, put_job, r);
}

json_t *
peer_lookup_json(const struct peer_lookup *l)
{
	json_t *o = json_object();

	if (o == NULL || jset_str(o, "key", l->key) != 0 || jset_str(o, "peer", l->peer) != 0 ||
	    (l->source != NULL && jset_str(o, "source", l->source) != 0) ||
	    jset_str(o, "result", name_at(lookup_names, NAMES_COUNT(lookup_names), l->result, "error")) != 0 ||
	    jset_str(o, "detail", l->detail) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static bool
same_str(const char *a, const char *b)
{
	return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

static bool
lookup_matches(const json_t *o, const struct peer_lookup *l)
{
	return json_is_object(o) && same_str(jstr(o, "key"), l->key) &&
	       same_str(jstr(o, "peer"), l->peer) && same_str(jstr(o, "detail"), l->detail) &&
	       same_str(jstr(o, "source"), l->source) &&
	       same_str(jstr(o, "result"),
	                name_at(lookup_names, NAMES_COUNT(lookup_names), l->result, "error"));
}

static int
put_lookups(json_t *o, const struct file_rec *f)
{
	json_t *list = json_object_get(o, "peer_lookups"), *arr;
	bool same = json_array_size(list) == f->nlookups;

	if (f->nlookups == 0)
		return del(o, "peer_lookups");
	for (size_t i = 0; same && i < f->nlookups; i++)
		same = lookup_matches(json_array_get(list, i), &f->lookups[i]);
	if (same)
		return 0;
	if ((arr = json_array()) == NULL)
		return BG_ENOMEM;
	for (size_t i = 0; i < f->nlookups; i++) {
		if (json_array_append_new(arr, peer_lookup_json(&f->lookups[i])) != 0) {
			json_decref(arr);
			return BG_ENOMEM;
		}
	}
	return jset(o, "peer_lookups", arr);
}

static int
put_last_lookup(json_t *o, const struct file_rec *f)
{
	if (!f->has_last_lookup)
		return del(o, "peer_lookup");
	if (lookup_matches(json_object_get(o, "peer_lookup"), &f->last_lookup))
		return 0;
	return jset(o, "peer_lookup", peer_lookup_json(&f->last_lookup));
}

static int
put_file(json_t *o, const void *rec)
{
	const struct file_rec *f = rec;
	int err;

	if ((err = put_str(o, "original_url", f->original_url)) != 0 ||
	    (err = put_str(o, "remote_url", f->remote_url)) != 0 ||
	    (err = put_str(o, "local_path", f->local_path)) != 0 ||
	    (err = put_str(o, "temp_path", f->temp_path)) != 0 ||
	    (err = put_int(o, "bytes_total", f->bytes_total)) != 0 ||
	    (err = put_int(o, "bytes_committed", (int64_t)f->bytes_committed)) != 0 ||
	    (err = put_bool(o, "done", f->done)) != 0 ||
	    (err = put_int(o, "bytes_from_origin", (int64_t)f->bytes_from_origin)) != 0 ||
	    (err = put_int(o, "bytes_from_peers", (int64_t)f->bytes_from_peers)) != 0 ||
	    (err = put_str(o, "cache_key", f->cache_key)) != 0 ||
	    (err = put_str(o, "sha256", f->sha256)) != 0 ||
	    (err = put_str(o, "expect_sha256", f->expect_sha256)) != 0 ||
	    (err = put_int(o, "blob", (int64_t)f->blob)) != 0 ||
	    (err = put_str(o, "etag", f->etag)) != 0 ||
	    (err = put_str(o, "last_modified", f->last_modified)) != 0 ||
	    (err = opt_str(o, "date", f->date)) != 0 ||
	    (err = opt_str(o, "origin_sha256", f->origin_sha256)) != 0 ||
	    (err = opt_bool(o, "crl_checked", f->crl_checked)) != 0 ||
	    (err = opt_bool(o, "not_stored", f->not_stored)) != 0 ||
	    (err = opt_int(o, "bytes_from_cache", (int64_t)f->bytes_from_cache)) != 0 ||
	    (err = opt_int(o, "bytes_rejected", (int64_t)f->bytes_rejected)) != 0 ||
	    (err = opt_int(o, "bytes_checked", (int64_t)f->bytes_checked)) != 0 ||
	    (err = (f->has_cached ? put_bool(o, "cached", f->cached) : del(o, "cached"))) != 0 ||
	    (err = opt_str(o, "cache_note", f->cache_note)) != 0 ||
	    (err = opt_str(o, "fleet_role", f->fleet_role)) != 0 ||
	    (err = opt_str(o, "fleet_source", f->fleet_source)) != 0 ||
	    (err = opt_int(o, "fleet_elections", (int64_t)f->fleet_elections)) != 0 ||
	    (err = opt_int(o, "fleet_follows", (int64_t)f->fleet_follows)) != 0 ||
	    (err = opt_int(o, "fleet_takeovers", (int64_t)f->fleet_takeovers)) != 0 ||
	    (err = put_last_lookup(o, f)) != 0 || (err = put_lookups(o, f)) != 0)
		return err;
	return 0;
}

int
file_rec_encode(const struct file_rec *f, json_t **io)
{
	return encode(io, put_file, f);
}

/* ---- Lifetime ---------------------------------------------------------- */

static void
cred_wipe(struct job_cred *c)
{
	free(c->user);
	if (c->password != NULL) {
		explicit_bzero(c->password, strlen(c->password));
		free(c->password);
	}
	c->user = c->password = NULL;
}

void
job_rec_clear(struct job_rec *r)
{
	free(r->name);
	free(r->error.url);
	free(r->get_key);
	free(r->peer_key);
	free(r->ca_file);
	free(r->proxy);
	for (int t = 0; t < JOB_AUTH_TARGETS; t++)
		for (int sc = 0; sc < JOB_AUTH_SCHEMES; sc++)
			cred_wipe(&r->cred[t][sc]);
	free(r->http_method);
	strv_free(&r->peers);
	strv_free(&r->headers);
	strv_free(&r->cert_check_cmd);
	free(r->client_cert);
	free(r->client_key);
	strv_free(&r->notify_cmd);
	memset(r, 0, sizeof(*r));
}

int
job_cred_set(struct job_cred *c, const char *user, const char *password)
{
	char *u = NULL, *p = NULL;

	if (user != NULL &&
	    ((u = strdup(user)) == NULL || (p = strdup(password != NULL ? password : "")) == NULL)) {
		free(u);
		return BG_ENOMEM;
	}
	cred_wipe(c);
	c->user = u;
	c->password = p;
	return 0;
}

bool
job_has_cred(const struct job_rec *r, enum job_auth_target target)
{
	for (int t = 0; t < JOB_AUTH_TARGETS; t++)
		for (int sc = 0; sc < JOB_AUTH_SCHEMES; sc++)
			if ((target == JOB_AUTH_TARGETS || (int)target == t) && r->cred[t][sc].user != NULL)
				return true;
	return false;
}

void
peer_lookup_clear(struct peer_lookup *l)
{
	free(l->key);
	free(l->peer);
	free(l->source);
	free(l->detail);
	memset(l, 0, sizeof(*l));
}

void
file_rec_clear(struct file_rec *f)
{
	char **strs[] = {&f->original_url, &f->remote_url, &f->local_path, &f->temp_path,
	                 &f->cache_key, &f->sha256, &f->expect_sha256, &f->origin_sha256,
	                 &f->etag, &f->last_modified, &f->date, &f->cache_note,
	                 &f->fleet_role, &f->fleet_source};

	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		free(*strs[i]);
	peer_lookup_clear(&f->last_lookup);
	for (size_t i = 0; i < f->nlookups; i++)
		peer_lookup_clear(&f->lookups[i]);
	free(f->lookups);
	memset(f, 0, sizeof(*f));
}

static int
lookup_copy(struct peer_lookup *dst, const struct peer_lookup *src)
{
	int err;

	dst->result = src->result;
	if ((err = rec_set_str(&dst->key, src->key)) != 0 ||
	    (err = rec_set_str(&dst->peer, src->peer)) != 0 ||
	    (err = rec_set_str(&dst->source, src->source)) != 0 ||
	    (err = rec_set_str(&dst->detail, src->detail)) != 0)
		return err;
	return 0;
}

int
file_rec_copy(struct file_rec *dst, const struct file_rec *src)
{
	/* Through JSON: one list of fields to keep up to date, and a copy is
	 * taken once per finished file. */
	json_t *o = NULL;
	int err;

	if ((err = file_rec_encode(src, &o)) != 0)
		return err;
	err = file_rec_decode(o, dst);
	json_decref(o);
	return err;
}

int
file_rec_note_lookup(struct file_rec *f, struct peer_lookup *l)
{
	struct peer_lookup *last = f->nlookups > 0 ? &f->lookups[f->nlookups - 1] : NULL;
	struct peer_lookup copy = {0};
	int err;

	if ((err = lookup_copy(&copy, l)) != 0) {
		peer_lookup_clear(&copy);
		peer_lookup_clear(l);
		return err;
	}
	/* A hit that went wrong later replaces its own entry. */
	if (last != NULL && l->peer != NULL && last->peer != NULL && strcmp(last->peer, l->peer) == 0 &&
	    last->result == PEER_LOOKUP_HIT) {
		peer_lookup_clear(last);
		*last = *l;
	} else {
		struct peer_lookup *n = realloc(f->lookups, (f->nlookups + 1) * sizeof(*n));

		if (n == NULL) {
			peer_lookup_clear(&copy);
			peer_lookup_clear(l);
			return BG_ENOMEM;
		}
		f->lookups = n;
		f->lookups[f->nlookups++] = *l;
	}
	memset(l, 0, sizeof(*l));
	peer_lookup_clear(&f->last_lookup);
	f->last_lookup = copy;
	f->has_last_lookup = true;
	return 0;
}

int
file_rec_blob(const void *raw, size_t len, uint64_t *blob)
{
	json_error_t jerr;
	json_t *j;

	*blob = 0;
	j = json_loadb(raw, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (j == NULL)
		return json_error_code(&jerr) == json_error_out_of_memory ? BG_ENOMEM : BG_ECORRUPT;
	if (!json_is_object(j)) {
		json_decref(j);
		return BG_ECORRUPT;
	}
	if (jint(j, "blob", 0) > 0)
		*blob = (uint64_t)jint(j, "blob", 0);
	json_decref(j);
	return 0;
}

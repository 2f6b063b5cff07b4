/*
 * json.c - reading and writing fields of the JSON records the agent keeps
 * (jobs, files, CRL notes): the few accessors every module shares.
 */
#include "cache.h"

const char *
jstr(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

int64_t
jint(const json_t *o, const char *key, int64_t def)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

bool
jbool(const json_t *o, const char *key)
{
	return json_is_true(json_object_get(o, key));
}

int
jset(json_t *o, const char *key, json_t *v)
{
	/* json_object_set_new steals v even on failure. */
	if (v == NULL || json_object_set_new(o, key, v) != 0)
		return BG_ENOMEM;
	return 0;
}

int
jset_str(json_t *o, const char *key, const char *s)
{
	return jset(o, key, s != NULL ? json_string(s) : json_null());
}

int
jset_int(json_t *o, const char *key, int64_t v)
{
	return jset(o, key, json_integer((json_int_t)v));
}
